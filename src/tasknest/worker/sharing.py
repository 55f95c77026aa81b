"""A worker's results in shared memory, for readers on the same host.

A large result (at least ``SHM_MIN`` bytes of pickle-5 buffers) is copied once into
a segment under /dev/shm as its task finishes, and the worker keeps the value over
its own mapping of that segment from then on (so it is not held twice). A peer
or client on the same host then gets a reference and maps the pages; others get
the bytes over TCP. When the key is dropped the file is kept a few seconds for the
next value of its size (protocol/sharedmem.py has why), then unlinked; all are
unlinked when the worker closes, and after a SIGKILL its supervisor removes them
(files carry the pid).
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from ..protocol import sharedmem
from ..protocol.serialize import loads_value

log = logging.getLogger("tasknest.worker")


class SharedSegments:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sharedmem.available() and bool(sharedmem.host_id())
        self.host = sharedmem.host_id() if self.enabled else ""
        self._refs: dict[str, tuple[str, list]] = {}     # key -> (segment name, reference)
        self._lock = threading.Lock()

    def share(self, key: str, frames: list) -> Any:
        """Copy a large value into a segment; returns the value over the worker's own
        mapping of it (to keep instead of the original), or None if it stays as it is."""
        if not self.enabled or sharedmem.buffers_size(frames) < sharedmem.SHM_MIN:
            return None
        try:
            ref, name, local = sharedmem.export(frames)
            value = loads_value(local)
        except Exception as exc:       # /dev/shm full, say: the value goes over TCP
            log.warning("cannot share %s through shared memory: %s", key, exc)
            return None
        with self._lock:
            old = self._refs.pop(key, None)
            self._refs[key] = (name, ref)
        if old is not None:
            sharedmem.release(old[0])
        return value

    def reference(self, key: str) -> list | None:
        entry = self._refs.get(key)
        return entry[1] if entry is not None else None

    def release(self, key: str) -> None:
        if self._refs:
            with self._lock:
                entry = self._refs.pop(key, None)
            if entry is not None:
                sharedmem.release(entry[0])

    def close(self) -> None:
        with self._lock:
            entries, self._refs = list(self._refs.values()), {}
        for name, _ in entries:
            sharedmem.unlink(name)
        sharedmem.drop_released()
