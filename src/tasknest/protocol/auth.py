"""Shared-secret handshake, run on raw bytes before any frame is decoded.

    server                                client
      |-- MAGIC | version | nonce_s (37) -->|
      |<-- nonce_c | HMAC(k, "C"+ns+nc) ----|   (64)
      |--- HMAC(k, "S"+nc+ns) ------------->|   (32)

Both sides prove they hold the key, a fresh server nonce defeats replays, and
macs are compared in constant time. An empty key means "insecure": the
handshake still runs, so both ends must agree on that too.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets

MAGIC = b"TNST"
VERSION = 1
NONCE = 32
MAC = 32
CHALLENGE_LEN = len(MAGIC) + 1 + NONCE
RESPONSE_LEN = NONCE + MAC
CONFIRM_LEN = MAC


def new_token() -> str:
    # never a leading "-": `--token -x...` would be read as an option by the shell tools
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


def key_of(token: str | bytes | None) -> bytes:
    if not token:
        return b""
    return token.encode() if isinstance(token, str) else token


def challenge() -> tuple[bytes, bytes]:
    nonce = os.urandom(NONCE)
    return nonce, MAGIC + bytes([VERSION]) + nonce


def _mac(key: bytes, tag: bytes, a: bytes, b: bytes) -> bytes:
    return hmac.new(key, tag + a + b, hashlib.sha256).digest()


def respond(key: bytes, challenge_bytes: bytes) -> tuple[bytes, bytes] | None:
    """Client side: returns (nonce_c, response) or None if the challenge is malformed."""
    if challenge_bytes[:4] != MAGIC or challenge_bytes[4] != VERSION:
        return None
    nonce_s = challenge_bytes[5:]
    nonce_c = os.urandom(NONCE)
    return nonce_c, nonce_c + _mac(key, b"C", nonce_s, nonce_c)


def verify_response(key: bytes, nonce_s: bytes, response: bytes) -> bytes | None:
    """Server side: returns the confirmation to send, or None if the client is refused."""
    nonce_c, mac = response[:NONCE], response[NONCE:]
    if not hmac.compare_digest(mac, _mac(key, b"C", nonce_s, nonce_c)):
        return None
    return _mac(key, b"S", nonce_c, nonce_s)


def verify_confirm(key: bytes, nonce_s: bytes, nonce_c: bytes, confirm: bytes) -> bool:
    return hmac.compare_digest(confirm, _mac(key, b"S", nonce_c, nonce_s))


def dashboard_key(token: str | None) -> str:
    """The key that lets a browser into the dashboard and a scraper into /metrics: an
    HMAC of the cluster's secret (never the secret itself, which cannot be derived
    from it); a random one when the cluster has no secret."""
    if not token:
        return secrets.token_hex(16)
    return hmac.new(token.encode(), b"tasknest-dashboard-v1", hashlib.sha256).hexdigest()[:32]
