"""Names the client and the in-task client both give: function names and unique tokens."""
from __future__ import annotations

import itertools
import uuid
from typing import Any

_unique = itertools.count()
_PREFIX = uuid.uuid4().hex[:16]          # per process: counters below it never collide


def unique_token() -> str:
    """32 hex digits, unique across processes, without a system call per key."""
    return f"{_PREFIX}{next(_unique):016x}"


def funcname(fn: Any) -> str:
    """The name a key starts with: the function's name ("lambda" for lambdas)."""
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "lambda" if name == "<lambda>" else name
