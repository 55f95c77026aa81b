"""Warm memory for large received buffers.

A received array is read into memory the process has never touched, and the
first touch of fresh pages costs more than the copy from the socket: the kernel
zeroes and maps every page on the fault (0.6-1 s per GiB on a virtual machine,
against ~0.07 s to copy into pages already mapped). So a large buffer that
may be any bytes-like (the sender flags it: an array's, not a ``bytes`` or
``bytearray`` value's, which must arrive as themselves) is read into an
anonymous mapping taken from here, and a mapping nothing refers to any more
(its value was dropped) serves the next buffer of about its size.

"Nothing refers to it" is read from its reference count: the pool's list holds
one reference, and every view, array or pickle buffer over the mapping keeps
the mapping alive through its exporter. A mapping found unused is marked
``MADV_FREE`` (the kernel takes its pages if it runs short, and they read as
zeros then; the next buffer overwrites them anyway); one unused for ``IDLE``
seconds is unmapped, as is every unused one beyond the ``receive-pool`` setting (1 GiB
by default, 0 turns the pool off) or when the worker's memory runs high
(``release_unused``): the pool trades a few seconds of memory
for speed, never memory a process needs.
"""
from __future__ import annotations

import asyncio
import logging
import mmap
import sys
import threading
import time

log = logging.getLogger("tasknest.protocol")

MIN = 8 << 20              # smaller buffers come from malloc (whose heap stays warm)
IDLE = 10.0                # seconds an unused mapping is kept
SWEEP_EVERY = 1.0          # seconds between looks for mappings no longer used
_SLACK = 4                 # a mapping serves buffers down to 1/(1 + 1/_SLACK) of its size
_PAGE = mmap.PAGESIZE


def configured_cap() -> int:
    """Unused bytes a process keeps at most: the ``receive-pool`` setting."""
    from ..config import get
    from ..sizes import parse_size
    try:
        return max(0, parse_size(get("receive-pool")))
    except Exception as exc:            # a bad setting must not break receiving
        log.warning("receive-pool setting ignored (%s): keeping at most 1 GiB", exc)
        return 1 << 30


class BufferPool:
    def __init__(self, cap: int | None = None, idle: float = IDLE) -> None:
        self.cap = cap                  # None: the setting, read on first use
        self.idle = idle
        self._maps: list[mmap.mmap] = []
        self._unused_since: dict[int, float] = {}   # id(mapping) -> when first seen unused
        self._lock = threading.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def take(self, size: int) -> memoryview:
        """A writable view of ``size`` bytes over a warm mapping if one is free, else
        over a new one (which joins the pool)."""
        if self.cap is None:
            self.cap = configured_cap()
        if self.cap <= 0:
            return memoryview(_new(size))
        with self._lock:
            self._sweep(time.monotonic())
            best = None
            for mem in self._maps:
                n = len(mem)
                if size <= n <= size + size // _SLACK + _PAGE and _unused(mem) and \
                        (best is None or n < len(best)):
                    best = mem
            if best is None:
                best = _new(-(-size // _PAGE) * _PAGE)
                self._maps.append(best)
            self._unused_since.pop(id(best), None)
            view = memoryview(best)[:size]
        self._arm()
        return view

    def unused_bytes(self) -> int:
        with self._lock:
            return sum(len(mem) for mem in self._maps if _unused(mem))

    def held_bytes(self) -> int:
        return sum(len(mem) for mem in self._maps)

    def release_unused(self) -> int:
        """Unmap every mapping nothing uses (memory runs high); bytes given back."""
        with self._lock:
            return self._drop([mem for mem in self._maps if _unused(mem)])

    def sweep(self) -> None:
        with self._lock:
            self._sweep(time.monotonic())

    # -- inside the lock
    def _sweep(self, now: float) -> None:
        """Unmap mappings unused for ``idle`` seconds, and the unused beyond ``cap``."""
        unused = []
        for mem in self._maps:
            if _unused(mem):
                since = self._unused_since.get(id(mem))
                if since is None:       # newly unused: the kernel may take its pages if
                    since = self._unused_since[id(mem)] = now    # it needs them (else
                    _lazy_free(mem)     # they stay mapped, and warm, until reused)
                unused.append((since, mem))
            else:
                self._unused_since.pop(id(mem), None)
        unused.sort(key=lambda e: e[0], reverse=True)          # the most recent first
        kept, drop, cap = 0, [], self.cap or 0
        for since, mem in unused:
            if now - since >= self.idle or kept + len(mem) > cap:
                drop.append(mem)
            else:
                kept += len(mem)
        self._drop(drop)

    def _drop(self, mems: list[mmap.mmap]) -> int:
        gone = {id(mem) for mem in mems}
        self._maps = [mem for mem in self._maps if id(mem) not in gone]
        n = 0
        for mem in mems:
            self._unused_since.pop(id(mem), None)
            n += len(mem)
            mem.close()
        return n

    def _arm(self) -> None:
        """Sweep again soon, on the loop that receives (if any), while mappings are held:
        memory goes back even when no other buffer comes."""
        if self._timer is not None and self._timer_loop is not None and \
                not self._timer_loop.is_closed():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer_loop = loop

        def run() -> None:
            self._timer = None
            self.sweep()
            if self._maps:
                self._arm()
        self._timer = loop.call_later(min(self.idle, SWEEP_EVERY), run)


def _new(size: int) -> mmap.mmap:
    # private: a child forked from this process must not write into the parent's pages
    return mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def _lazy_free(mem: mmap.mmap) -> None:
    try:
        mem.madvise(mmap.MADV_FREE)
    except (AttributeError, OSError, ValueError):     # (not on this kernel: kept as is)
        pass


def _refs(mem: mmap.mmap) -> int:
    return sys.getrefcount(mem)


def _unused(mem: mmap.mmap) -> bool:
    return _refs(mem) <= _BASE


def _calibrate() -> int:
    """The count ``_unused`` reads for a mapping only a list holds (it reads through the
    same calls, so the interpreter's own references are counted alike)."""
    def count(mem: mmap.mmap) -> int:       # in place of _unused, at the same depth
        return _refs(mem)
    for mem in [_new(_PAGE)]:
        return count(mem)
    raise AssertionError


_BASE = _calibrate()


pool = BufferPool()
