"""A worker's results, spilled to disk least-recently-used first above a memory target.

    data[key] = value ──> fast (dict in memory) ──LRU, above target bytes──> slow (files)
    data[key]         <── fast, or read back from disk (and made most recent again)

Built on ``zict`` (the mapping toolkit made for exactly this): a ``Buffer`` of a
plain dict in front of pickled files in a private directory, weighed by an
estimate of each value's size. Only workers with a memory limit use it; others
keep a plain dict. Values of at most ``SMALL`` bytes stay in a plain dict beside
it, never spilled: a file each would free less than it costs, and the buffer's
records of a key (its LRU order and weight) cost ~80 B, more than such a value.

A value goes to disk as its pickle-5 frames, written from the value's own memory
(no pickle stream holding a copy), and comes back read into one buffer of the
file's size, over which it is unpickled: an array read back is backed by that
buffer, not copied out of it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import MutableMapping
from typing import Any, Iterator

import psutil
import zict

from ..memory import sparse
from ..protocol import bufpool
from ..protocol import messages as m
from ..protocol.serialize import dumps_value, loads_value

log = logging.getLogger("tasknest.worker")

SPILL_FRACTION = 0.6     # of the memory limit: results above this go to disk
PAUSE_FRACTION = 0.8     # of the memory limit (process RSS): stop starting new tasks
WATCH_INTERVAL = 0.1     # seconds between memory samples
SMALL = 512              # bytes (estimated): values this small are never spilled


def sizeof(value: Any, _depth: int = 0) -> int:
    """A cheap estimate of the memory a value holds (buffers counted, not copied)."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes + 64
    if isinstance(value, (bytes, bytearray, str, memoryview)):
        return len(value) + 64
    if _depth < 3 and isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        if len(items) > 100:   # sample big containers
            step = len(items) // 100
            return sys.getsizeof(value) + step * sum(sizeof(v, _depth + 1) for v in items[::step])
        return sys.getsizeof(value) + sum(sizeof(v, _depth + 1) for v in items)
    if _depth < 3 and isinstance(value, dict):
        return sys.getsizeof(value) + sum(sizeof(k, _depth + 1) + sizeof(v, _depth + 1)
                                          for k, v in list(value.items())[:100])
    return sys.getsizeof(value)


def _dumps(value: Any) -> list:
    """[count:4][size:8 × count], then the frames as they are (zict writes the list)."""
    frames = dumps_value(value)
    sizes = [f.nbytes if isinstance(f, memoryview) else len(f) for f in frames]
    return [struct.pack(f"<I{len(sizes)}Q", len(sizes), *sizes), *frames]


def _loads(data: bytearray | memoryview) -> Any:
    view = memoryview(data)
    count = struct.unpack_from("<I", view)[0]
    sizes = struct.unpack_from(f"<{count}Q", view, 4)
    frames: list[Any] = []
    pos = 4 + 8 * count
    for size in sizes:
        frames.append(view[pos:pos + size])
        pos += size
    frames[0] = bytes(frames[0])
    return loads_value(frames)


class SpillBuffer(MutableMapping):
    """A mapping that keeps at most ``target`` bytes of values in memory."""

    def __init__(self, target: int, directory: str | None = None) -> None:
        # the pid in the name lets a nanny clean up after a worker that was killed
        self.directory = tempfile.mkdtemp(prefix=f"tasknest-spill-{os.getpid()}-", dir=directory)
        self.spilled_count = 0
        self.on_spill: Any = None       # called with a key written to disk
        self._small: dict[str, Any] = {}    # values of at most SMALL bytes, kept here
        self._small_bytes = 0
        self._buffer = zict.Buffer(
            {}, zict.Func(_dumps, _loads, zict.File(self.directory)),  # type: ignore[arg-type]
            n=target,
            weight=lambda _k, v: sizeof(v),
            fast_to_slow_callbacks=[self._on_spill])

    def _on_spill(self, key: str, _value: Any) -> None:
        self.spilled_count += 1
        if self.on_spill is not None:     # its shared-memory copy goes too
            self.on_spill(key)
        log.debug("spilled %s to disk", key)

    @property
    def target(self) -> int:
        return int(self._buffer.n)

    @property
    def memory_bytes(self) -> int:
        """Estimated bytes of the values held in memory."""
        return int(self._buffer.fast.total_weight) + self._small_bytes

    @property
    def spilled(self) -> set[str]:
        return set(self._buffer.slow.keys())

    def evict(self) -> int:
        """Spill the least recently used value now; its estimated size, or -1 if none."""
        return int(self._buffer.fast.evict()[2]) if self._buffer.fast else -1

    def __getitem__(self, key: str) -> Any:
        try:
            return self._small[key]
        except KeyError:
            return self._buffer[key]

    def __setitem__(self, key: str, value: Any) -> None:
        size = sizeof(value)
        if key in self:
            del self[key]
        if size <= SMALL:
            self._small[key] = value
            self._small_bytes += size
        else:
            self._buffer[key] = value

    def __delitem__(self, key: str) -> None:
        try:
            value = self._small.pop(key)
        except KeyError:
            del self._buffer[key]
        else:     # (its estimate again: close enough, as a mutable value may change)
            self._small_bytes = max(0, self._small_bytes - sizeof(value))

    def compact(self) -> bool:
        """Right-size the small values' table a large run left mostly empty."""
        if sparse(self._small):
            self._small = dict(self._small)
            return True
        return False

    def __contains__(self, key: object) -> bool:
        return key in self._small or key in self._buffer

    def __iter__(self) -> Iterator[str]:
        yield from list(self._small)
        yield from self._buffer

    def __len__(self) -> int:
        return len(self._small) + len(self._buffer)

    def close(self) -> None:
        self._small.clear()
        self._small_bytes = 0
        self._buffer.clear()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __del__(self) -> None:
        if os.path.isdir(getattr(self, "directory", "")):
            shutil.rmtree(self.directory, ignore_errors=True)


def new_store(memory_limit: int) -> MutableMapping:
    """Where a worker keeps its results: a plain dict, or a spilling one under a limit."""
    if memory_limit and memory_limit > 0:
        return SpillBuffer(int(SPILL_FRACTION * memory_limit))
    return {}


def spill_directories(pid: int) -> list[str]:
    """The spill directories a worker process with this pid made (for cleanup)."""
    import glob
    return glob.glob(os.path.join(tempfile.gettempdir(), f"tasknest-spill-{pid}-*"))


async def watch_memory(worker: Any) -> None:
    """Pause ``worker`` above PAUSE_FRACTION of its limit (spilling what it can), resume below.

    The worker's pool asks ``worker.paused`` before it starts a task; tasks already
    running go on, and a parent waiting in gather() still runs its own children.
    """
    limit = worker.memory_limit
    store = worker.data
    proc = psutil.Process()
    loop = asyncio.get_running_loop()
    try:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            high = rss > PAUSE_FRACTION * limit
            if high and bufpool.pool.release_unused():
                continue        # warm receive buffers went first: measure again
            if high and isinstance(store, SpillBuffer) and len(store._buffer.fast):
                # move results to disk (off the event loop: writing takes time)
                await loop.run_in_executor(None, store.evict)
                continue
            if high and not worker.paused:
                worker.paused = True
                worker.send(m.Paused(True))
                log.warning("worker %s paused: memory %d bytes is above %d%% of its limit "
                            "(%d bytes); no new task starts until it falls", worker.address,
                            rss, PAUSE_FRACTION * 100, limit)
            elif not high and worker.paused:
                with worker.lock:
                    worker.paused = False
                    worker.send(m.Paused(False))
                    worker.pool.notify()
                    if worker.pool.active < worker.pool.nthreads:
                        worker.apply(worker.state.idle(True))   # nothing queued: say so
                log.warning("worker %s resumed: memory %d bytes", worker.address, rss)
    finally:
        if isinstance(store, SpillBuffer):
            store.close()
