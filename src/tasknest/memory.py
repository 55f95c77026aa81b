"""Giving memory back after a large run.

Two things keep a process's memory after its records are gone:

* Live tables. A dict or set never shrinks when entries leave: the scheduler's
  table of a million tasks keeps its ~40 MiB of slots while it holds ten.
  ``shrunk`` copies a table that is mostly empty slots (cheap: it is a copy of
  what is left, and the test is O(1)).
* The allocator. Freed small objects leave partly used pymalloc arenas and
  glibc heaps behind; ``give_back`` runs a full collection and asks glibc to
  return free pages to the system (``malloc_trim``). That reaches free pages
  inside a heap, not the free top of a thread's heap, which glibc trims only
  past a threshold it raises as large blocks come and go (to 64 MiB): a client
  kept 60-80 MiB that way after each round of a million tasks.
  ``tune_allocator`` fixes the thresholds once per process.

Both are meant for moments when much was just freed, never per task.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
from typing import Any, TypeVar

T = TypeVar("T")

_MIN_TABLE = 64 * 1024     # a table smaller than this is never worth copying
_SLACK = 8                 # copy when it holds under 1/8 of what its slots could


class _Empty(frozenset):
    """The one empty set every record starts with: most tasks never have dependents,
    dependencies to wait on or clients to tell, and an empty set costs 216 bytes and
    a garbage-collector visit. Reads work; ``discard``/``clear`` do nothing; ``add``
    fails loudly (the writer assigns a real set first)."""
    __slots__ = ()

    def discard(self, item: Any) -> None:
        pass

    def clear(self) -> None:
        pass


EMPTY: Any = _Empty()


_same: dict[Any, Any] = {}
_SAME_MAX = 4096             # values remembered (forgetting them all only costs memory)
_SAME_SIZE = 1024            # longer values are not worth hashing per message


def shared(value: T) -> T:
    """The one object kept for values equal to ``value`` (bytes, str or a tuple of
    them): what many records repeat -- a type's name, a result's holders, the clients
    to notify -- held once instead of once per message that decoded a copy."""
    if len(value) > _SAME_SIZE:  # type: ignore[arg-type]
        return value
    if len(_same) > _SAME_MAX:
        _same.clear()
    return _same.setdefault(value, value)


def sparse(table: Any) -> bool:
    """Whether a dict or set holds far fewer entries than it has room for."""
    size = sys.getsizeof(table)
    return size > _MIN_TABLE and len(table) * 32 * _SLACK < size


def shrunk(table: T) -> T:
    """``table`` itself, or a right-sized copy of it if it is mostly empty slots."""
    if sparse(table):
        return type(table)(table)  # type: ignore[call-arg]
    return table


def _glibc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not (hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt")):
        return None                      # not glibc: nothing to ask
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


_libc = _glibc()


_MMAP_THRESHOLD = 4 << 20    # blocks above this are mapped on their own (and unmapped when freed)
_TRIM_THRESHOLD = 4 << 20    # free memory at the top of a heap above this goes back
_tuned = False


def tune_allocator() -> None:
    """Fix glibc's thresholds (once per process): blocks under 4 MiB come from its heaps,
    which hand back a free top over 4 MiB, however large the blocks freed before; larger
    ones are mapped on their own and go back when freed. (A dict doubling its table
    frees the old one: with 32 MiB, the tables a worker's half a million records left
    behind stayed in the heap, where small objects never reuse them, ~50 B a record at
    the peak.) Left as they are if the environment sets them (``MALLOC_TRIM_THRESHOLD_``,
    ...)."""
    global _tuned
    if _tuned or _libc is None:
        return
    _tuned = True
    if any(k.startswith(("MALLOC_TRIM_THRESHOLD", "MALLOC_MMAP_THRESHOLD", "MALLOC_TOP_PAD"))
           for k in os.environ):
        return
    _libc.mallopt(-1, _TRIM_THRESHOLD)    # M_TRIM_THRESHOLD (setting one fixes both)
    _libc.mallopt(-3, _MMAP_THRESHOLD)    # M_MMAP_THRESHOLD


def give_back() -> None:
    """Collect cycles and hand free heap pages back to the operating system."""
    gc.collect()
    if _libc is not None:
        _libc.malloc_trim(0)
