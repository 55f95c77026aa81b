"""Placed tasks, the client's side: a dependency-free task goes straight to a worker.

    user thread ──place──────────> worker it is connected to (runs it at once)
                ──placed (lazy)──> scheduler (confirms or drops the worker's copy)
    io thread   <──key-memory───── worker (the result, one hop)

The worker is one this client is connected to (a result of its came from there)
with none of its placed tasks pending: one hop there and one back, the scheduler
out of the way. ``placed`` carries the result's size if the result came before it
left, so the scheduler records where it is. The client's later messages about the
key follow ``placed`` on the same connection: the scheduler never hears of the key
out of order. A component of Client: it owns the placed records.
"""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from ..memory import sparse
from ..protocol import messages as m
from ..protocol.comm import Comm
from .future import FutureState

if TYPE_CHECKING:
    from .client import Client

SPIN = 0.0005      # seconds a thread waits awake for a placed task's result
LANES = 8          # placed tasks pending at once, at most (whatever the cluster's size)


class Placing:
    """The tasks a client placed on workers, until their results come."""

    def __init__(self, client: "Client") -> None:
        self.client = client
        self.lock = client._lock                # (the client's: one for its whole life)
        self.placed: dict[str, m.Placed] = {}   # key -> its ``placed``, until the result

    def lane(self) -> tuple[str, Comm] | None:
        """A worker to place a task on: connected, none of our placed tasks pending there."""
        peers = self.client._peers
        # (in a map, after the first few: every lane is busy.) However many workers
        # we are connected to, only a few lanes: each placed task is a message of its
        # own each way, where the scheduler sends a worker what is queued for it in
        # one, and a map placing on 500 lanes made each worker's wake-ups the cost of
        # a task (500 workers ran a flat map at a quarter of the rate of 2)
        if peers is None or len(self.placed) >= min(len(peers.comms), LANES):
            return None
        with self.lock:
            busy = {p.worker for p in self.placed.values()}
        for addr, comm in list(peers.comms.items()):
            if addr not in busy and not comm.closed:
                return addr, comm
        return None

    def lane_to(self, addr: str) -> tuple[str, Comm] | None:
        """The lane to this worker (an actor's), if connected and free: an actor call
        placed there takes one hop each way (run elsewhere, it errs as lost)."""
        peers = self.client._peers
        comm = None if peers is None else peers.comms.get(addr)
        if comm is None or comm.closed:
            return None
        with self.lock:
            if any(p.worker == addr for p in self.placed.values()):
                return None
        return addr, comm

    def place(self, key: str, fbytes: bytes, abytes: bytes, priority: list, retries: int,
              addr: str, comm: Comm, pinned: bool = False) -> None:
        seq = priority[2]            # unique in this process
        record = m.Placed(key, fbytes, abytes, priority, retries, addr, seq, m.NOT_YET, "", pinned)
        with self.lock:
            self.placed[key] = record
        self.client._send(record)
        # the task leaves now: the worker starts on it while this thread goes on
        comm.send_now(m.Place(key, fbytes, abytes, priority, retries, seq))

    def done(self, msg: m.KeyReport) -> None:
        """A key's end came (from the worker or the scheduler)."""
        if msg.key not in self.placed:
            return
        with self.lock:
            record = self.placed.pop(msg.key, None)
        if record is not None and isinstance(msg, m.KeyMemory):
            # if the record has not left yet, the scheduler learns where the result is
            record.type = msg.type
            record.nbytes = msg.nbytes

    def lane_lost(self, address: str) -> None:
        """The connection to this worker closed: its placed tasks go the usual way
        (the scheduler hears of it); called under the lock."""
        for key, record in list(self.placed.items()):
            if record.worker == address:
                del self.placed[key]

    def compact(self) -> None:
        """Right-size the table a large run left mostly empty; under the lock."""
        if sparse(self.placed):
            self.placed = dict(self.placed)

    def spin(self, st: FutureState) -> None:
        """Wait awake a moment for a placed task's result, which comes in about a round
        trip: a thread put to sleep costs a wake-up (tens of microseconds) to come back.
        The thread yields its core and the GIL between looks."""
        self.client._wake()
        end = time.perf_counter() + SPIN
        while st.status == "pending" and time.perf_counter() < end:
            os.sched_yield()
