"""A worker's results in shared memory, for readers on the same host.

A large result (at least ``SHM_MIN`` bytes of pickle-5 buffers) is copied once into
a segment under /dev/shm, and the worker keeps the value over its own mapping of
that segment from then on (so it is not held twice). A peer or client on the same
host then gets a reference and maps the pages; others get the bytes over TCP.

When is the copy made? A result of ``EAGER`` bytes or more is copied as its task
finishes, as Ray's store does: the copy of 1 GiB takes longer than a same-host
read of it, which would otherwise wait for it. A smaller one is copied the first
time a reader of the host asks for it (in a thread, not holding up the loop), so
the many results read only where they were made -- most of a shuffle's pieces --
are never copied at all; the first reader waits for the copy. When the key is
dropped the file is kept a few seconds for the next value of its size
(protocol/sharedmem.py has why), then unlinked; all are unlinked when the worker
closes, and after a SIGKILL its supervisor removes them (files carry the pid).
"""
from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import MutableMapping
from typing import Any

from ..protocol import sharedmem
from ..protocol.serialize import dumps_value, loads_value

log = logging.getLogger("tasknest.worker")
EAGER = 64 << 20     # bytes of buffers from which a result is shared as its task ends


class SharedSegments:
    def __init__(self, enabled: bool, data: Any = None) -> None:
        self.enabled = enabled and sharedmem.available() and bool(sharedmem.host_id())
        if hasattr(data, "on_spill"):
            data.on_spill = self.release      # a spilled value's segment goes
        self.host = sharedmem.host_id() if self.enabled else ""
        # key -> (segment name, reference); ("", None): asked for, and not worth sharing;
        # ("", reference): a client's segment (scattered)
        self._refs: dict[str, tuple[str, list | None]] = {}
        self._lock = threading.Lock()
        self._copying: dict[str, asyncio.Future] = {}    # key -> its copy, in a thread

    def share(self, key: str, frames: list, least: int = EAGER) -> Any:
        """Copy a value of at least ``least`` bytes of buffers into a segment; returns
        the value over the worker's own mapping of it (to keep instead of the
        original), or None if it stays as it is."""
        if not self.enabled or sharedmem.buffers_size(frames) < max(least, sharedmem.SHM_MIN):
            return None
        try:
            ref, name, local = sharedmem.export(frames)
            value = loads_value(local)
        except Exception as exc:       # /dev/shm full, say: the value goes over TCP
            log.warning("cannot share %s through shared memory: %s", key, exc)
            return None
        self._keep(key, name, ref)
        return value

    def _keep(self, key: str, name: str, ref: list) -> None:
        """``key``'s reference from now on (a segment it had before is released)."""
        with self._lock:
            old = self._refs.pop(key, None)
            self._refs[key] = (name, ref)
        if old is not None and old[0]:
            sharedmem.release(old[0])

    def reference(self, key: str) -> list | None:
        entry = self._refs.get(key)
        return entry[1] if entry is not None else None

    def receive(self, key: str, frames: list) -> list:
        """A scattered value's frames, mapped if a client of this host wrote them into
        a segment (OSError if it cannot be mapped). The segment stays the client's; its
        reference serves other readers of the host while it lasts."""
        if not sharedmem.is_shared(frames):
            return frames
        try:
            local = sharedmem.attach(frames)
        except ValueError as exc:        # (not a segment's name)
            raise OSError(str(exc)) from None
        self._keep(key, "", frames)
        return local

    def unshared(self, keys: list[str], tasks: dict) -> list[str]:
        """Those of ``keys`` a same-host reader asks for that may be worth sharing and
        are not shared yet (by their size as reported, held here)."""
        if not self.enabled:
            return []
        return [k for k in keys if k not in self._refs and (t := tasks.get(k)) is not None
                and t.state == "memory" and t.nbytes >= sharedmem.SHM_MIN]

    async def share_held(self, keys: list[str], data: MutableMapping, lock: Any) -> None:
        """Share values held in ``data`` now (a reader of the host asked for them), each
        copied once in a thread however many readers ask meanwhile."""
        loop = asyncio.get_running_loop()
        for key in keys:
            copy = self._copying.get(key)
            if copy is None:
                copy = self._copying[key] = loop.run_in_executor(
                    None, self._share_held, key, data, lock)
                copy.add_done_callback(functools.partial(self._copied, key))
            try:
                await asyncio.shield(copy)
            except Exception as exc:        # (the value goes over TCP)
                log.warning("cannot share %s through shared memory: %s", key, exc)

    def _copied(self, key: str, _copy: asyncio.Future) -> None:
        self._copying.pop(key, None)

    def _share_held(self, key: str, data: MutableMapping, lock: Any) -> None:
        with lock:
            value = data.get(key)
        if value is None:
            return
        shared = self.share(key, dumps_value(value), sharedmem.SHM_MIN)
        with lock:
            if shared is None:
                if key in data:
                    self._refs.setdefault(key, ("", None))  # not asked again
            elif key in data and data.get(key) is value:
                data[key] = shared          # kept over the mapping, not twice
            else:
                self.release(key)           # dropped (or spilled) meanwhile

    def release(self, key: str) -> None:
        if self._refs:
            with self._lock:
                entry = self._refs.pop(key, None)
            if entry is not None and entry[0]:
                sharedmem.release(entry[0])

    def close(self) -> None:
        with self._lock:
            entries, self._refs = list(self._refs.values()), {}
        for name, _ in entries:
            if name:
                sharedmem.unlink(name)
        sharedmem.drop_released()
