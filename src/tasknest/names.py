"""Names the client and the in-task client both give: function names, unique tokens
and keys named by content.

A key is ``name-`` and 24 hex digits (96 bits): a key is kept by the client, the
scheduler and a worker for every task, and 32 digits cost each of them 16 B more a
task (a string's next allocation size) for a collision chance that 96 bits already
put below 10^-16 among a billion keys."""
from __future__ import annotations

import hashlib
import itertools
import uuid
from typing import Any

DIGITS = 24
_unique = itertools.count()
_PREFIX = uuid.uuid4().hex[:DIGITS // 2]  # per process: counters below it never collide


def unique_token() -> str:
    """24 hex digits, unique across processes, without a system call per key."""
    return f"{_PREFIX}{next(_unique):012x}"


def hasher(*parts: bytes) -> Any:
    """A hash of ``parts`` that ``content_key`` names (copy it to extend it)."""
    digest = hashlib.blake2b(digest_size=DIGITS // 2)
    for part in parts:
        digest.update(part)
    return digest


def content_key(name: str, digest: Any) -> str:
    """The key of what ``digest`` (a ``hasher``) hashed."""
    return f"{name}-{digest.hexdigest()}"


def funcname(fn: Any) -> str:
    """The name a key starts with: the function's name ("lambda" for lambdas)."""
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "lambda" if name == "<lambda>" else name
