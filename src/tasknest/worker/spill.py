"""A worker's results, spilled to disk least-recently-used first above a memory target.

    data[key] = value ──> fast (dict in memory) ──LRU, above target bytes──> slow (files)
    data[key]         <── fast, or read back from disk (and made most recent again)

Built on ``zict`` (the mapping toolkit made for exactly this): a ``Buffer`` of a
plain dict in front of pickled files in a private directory, weighed by an
estimate of each value's size. Only workers with a memory limit use it; others
keep a plain dict.
"""
from __future__ import annotations

import logging
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import MutableMapping
from typing import Any, Iterator

import cloudpickle
import zict

log = logging.getLogger("tasknest.worker")

SPILL_FRACTION = 0.6     # of the memory limit: results above this go to disk
PAUSE_FRACTION = 0.8     # of the memory limit (process RSS): stop starting new tasks


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


def _dumps(value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:
        return cloudpickle.dumps(value, protocol=5)


class SpillBuffer(MutableMapping):
    """A mapping that keeps at most ``target`` bytes of values in memory."""

    def __init__(self, target: int, directory: str | None = None) -> None:
        self.directory = tempfile.mkdtemp(prefix="tasknest-spill-", dir=directory)
        self.spilled_count = 0
        self._buffer = zict.Buffer(
            {}, zict.Func(_dumps, pickle.loads, zict.File(self.directory)), n=target,
            weight=lambda _k, v: sizeof(v),
            fast_to_slow_callbacks=[self._on_spill])

    def _on_spill(self, key: str, _value: Any) -> None:
        self.spilled_count += 1
        log.debug("spilled %s to disk", key)

    @property
    def target(self) -> int:
        return int(self._buffer.n)

    @property
    def memory_bytes(self) -> int:
        """Estimated bytes of the values held in memory."""
        return int(self._buffer.fast.total_weight)

    @property
    def spilled(self) -> set[str]:
        return set(self._buffer.slow.keys())

    def evict(self) -> int:
        """Spill the least recently used value now; its estimated size, or -1 if none."""
        return int(self._buffer.fast.evict()[2]) if self._buffer.fast else -1

    def __getitem__(self, key: str) -> Any:
        return self._buffer[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._buffer[key] = value

    def __delitem__(self, key: str) -> None:
        del self._buffer[key]

    def __contains__(self, key: object) -> bool:
        return key in self._buffer

    def __iter__(self) -> Iterator[str]:
        return iter(self._buffer)

    def __len__(self) -> int:
        return len(self._buffer)

    def close(self) -> None:
        self._buffer.clear()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __del__(self) -> None:
        if os.path.isdir(getattr(self, "directory", "")):
            shutil.rmtree(self.directory, ignore_errors=True)
