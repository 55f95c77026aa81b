"""Placed tasks, the client's side: a dependency-free task goes straight to a worker.

    user thread ──place──────────> worker it is connected to (runs it at once)
                ──placed (lazy)──> scheduler (confirms or drops the worker's copy)
    io thread   <──key-memory───── worker (the result, one hop)

The worker is one this client is connected to (a result of its came from there)
with none of its placed tasks pending: one hop there and one back, the scheduler
out of the way. ``placed`` carries the result's size if the result came before it
left, so the scheduler records where it is. The client's later messages about the
key follow ``placed`` on the same connection: the scheduler never hears of the key
out of order. Mixed into Client.
"""
from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

from ..protocol import messages as m
from ..protocol.comm import Comm
from .future import FutureState

SPIN = 0.0005      # seconds a thread waits awake for a placed task's result


class PlacingMixin:
    if TYPE_CHECKING:
        _lock: threading.RLock
        _peers: Any
        _placed: dict[str, m.Placed]

        def _send(self, msg: m.Message) -> None: ...
        def _wake(self) -> None: ...

    def _lane(self) -> tuple[str, Comm] | None:
        """A worker to place a task on: connected, none of our placed tasks pending there."""
        peers = self._peers
        if peers is None or len(self._placed) >= len(peers.comms):
            return None               # (in a map, after the first few: every lane is busy)
        with self._lock:
            busy = {p.worker for p in self._placed.values()}
        for addr, comm in list(peers.comms.items()):
            if addr not in busy and not comm.closed:
                return addr, comm
        return None

    def _lane_to(self, addr: str) -> tuple[str, Comm] | None:
        """The lane to this worker (an actor's), if connected and free: an actor call
        placed there takes one hop each way (run elsewhere, it errs as lost)."""
        peers = self._peers
        comm = None if peers is None else peers.comms.get(addr)
        if comm is None or comm.closed:
            return None
        with self._lock:
            if any(p.worker == addr for p in self._placed.values()):
                return None
        return addr, comm

    def _place(self, key: str, fbytes: bytes, abytes: bytes, priority: list, retries: int,
               addr: str, comm: Comm, pinned: bool = False) -> None:
        seq = priority[2]            # unique in this process
        record = m.Placed(key, fbytes, abytes, priority, retries, addr, seq, m.NOT_YET, "", pinned)
        with self._lock:
            self._placed[key] = record
        self._send(record)
        # the task leaves now: the worker starts on it while this thread goes on
        comm.send_now(m.Place(key, fbytes, abytes, priority, retries, seq))

    def _placed_done(self, msg: m.KeyReport) -> None:
        if msg.key not in self._placed:
            return
        with self._lock:
            record = self._placed.pop(msg.key, None)
        if record is not None and isinstance(msg, m.KeyMemory):
            # if the record has not left yet, the scheduler learns where the result is
            record.type = msg.type
            record.nbytes = msg.nbytes

    def _spin(self, st: FutureState) -> None:
        """Wait awake a moment for a placed task's result, which comes in about a round
        trip: a thread put to sleep costs a wake-up (tens of microseconds) to come back.
        The thread yields its core and the GIL between looks."""
        self._wake()
        end = time.perf_counter() + SPIN
        while st.status == "pending" and time.perf_counter() < end:
            os.sched_yield()
