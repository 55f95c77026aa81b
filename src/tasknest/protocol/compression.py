"""Compression of large buffers on links between hosts (optional: lz4, if installed).

    sender:   buffer ──sample compresses?──> lz4 block [raw size:4][...]  (flag in the frame header)
    receiver: lz4 block ──decompress──> a buffer of the raw size (bytes or bytearray, as sent)

Negotiated per connection: once authenticated, each end of a link that is not
local names the codecs it can read (``codecs``); the other end then compresses
the out-of-band buffers it sends that way. Never on loopback or between two
addresses of one host (a memcpy-speed link gains nothing), and never for data
that does not compress: a sample of each buffer is tried first.

``TASKNEST_COMPRESSION``: ``auto`` (the default: between hosts, if lz4 is
installed), ``off``, or ``lz4`` (on every link, loopback included: for tests and
measurements).
"""
from __future__ import annotations

import ipaddress
import os
from typing import Any

try:
    import lz4.block as _lz4
except ImportError:            # an optional extra: without it, nothing is compressed
    _lz4 = None

MODES = ("auto", "off", "lz4")
SAMPLE = 1 << 16               # bytes of a buffer tried first
GAIN = 0.9                     # compress only if it saves at least a tenth
MAX_INPUT = 0x7E000000         # lz4's largest block: larger buffers go as they are


def mode() -> str:
    value = os.environ.get("TASKNEST_COMPRESSION", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"TASKNEST_COMPRESSION must be one of {', '.join(MODES)}, "
                         f"got {value!r}")
    return value


def available() -> list[str]:
    return ["lz4"] if _lz4 is not None else []


def local_link(sockname: Any, peername: Any) -> bool:
    """Both ends on this host: loopback, or the same address."""
    try:
        ours, theirs = sockname[0], peername[0]
        return ipaddress.ip_address(theirs).is_loopback or ours == theirs
    except (TypeError, ValueError, IndexError):
        return True            # (not an IP socket: nothing to gain)


def readable(sockname: Any, peername: Any) -> list[str]:
    """The codecs to announce on a connection: those the other end may send us."""
    which = mode()
    if which == "off" or which == "auto" and local_link(sockname, peername):
        return []
    return available()


def choose(offered: list[str]) -> str | None:
    """The codec to send with, from those the other end can read."""
    if mode() == "off":
        return None
    return next((c for c in offered if c in available()), None)


def compress(codec: str, buf: memoryview) -> bytes | None:
    """The buffer compressed, or None if it does not compress well enough."""
    n = buf.nbytes
    if codec != "lz4" or _lz4 is None or n > MAX_INPUT:
        return None
    if n > 2 * SAMPLE and len(_lz4.compress(buf[:SAMPLE], store_size=False)) > GAIN * SAMPLE:
        return None
    out = _lz4.compress(buf, store_size=True)
    return out if len(out) <= GAIN * n else None


def raw_size(data: Any) -> int:
    return int.from_bytes(bytes(memoryview(data)[:4]), "little")


def decompress(data: Any, readonly: bool) -> Any:
    """The buffer as sent: ``bytes`` if it was read-only, else a ``bytearray``."""
    if _lz4 is None:
        raise ValueError("a compressed buffer arrived, but lz4 is not installed")
    return _lz4.decompress(data, return_bytearray=not readonly)


mode()        # a bad TASKNEST_COMPRESSION fails at start, not on the first connection
