"""A worker's clockwork: heartbeats, its monitor's reports, and giving memory back.

    every beat (1 s, or as the scheduler asks):  heartbeat (RSS) ──> scheduler; compact
    every FLUSH (0.25 s):  the monitor's records, and stats as seldom as heartbeats ──> scheduler
"""
from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING

import psutil

from ..memory import give_back, sparse
from ..protocol import messages as m, sharedmem
from .monitor import FLUSH, STATS_EVERY, sample
from .spill import SpillBuffer

if TYPE_CHECKING:
    from .server import Worker


async def heartbeat(worker: "Worker") -> None:
    # a random phase spreads the beats of workers that joined together
    await asyncio.sleep(random.uniform(0, worker._beat_every))
    while not worker.closing:
        await asyncio.sleep(worker._beat_every)
        try:
            rss = worker._process.memory_info().rss
        except psutil.Error:
            rss = 0
        worker.send(m.Heartbeat(rss))
        compact(worker)


def compact(worker: "Worker") -> None:
    """After a large run, right-size the tables it left mostly empty and give the
    memory back to the system."""
    with worker.lock:
        shrank = worker.state.compact()
        if type(worker.data) is dict and sparse(worker.data):
            worker.data, shrank = dict(worker.data), True
        elif isinstance(worker.data, SpillBuffer):
            shrank = worker.data.compact() or shrank
        if sparse(worker.frames_cache):
            worker.frames_cache = dict(worker.frames_cache)
        shrank = worker.client.compact() or shrank
    if sharedmem.holding():
        sharedmem.sweep()
    if shrank:
        give_back()


async def report(worker: "Worker") -> None:
    """The monitor's records leave lazily, with the next batch (worker/monitor.py)."""
    mon = worker.monitor
    last = 0.0
    while not worker.closing:
        await asyncio.sleep(FLUSH)
        now = time.monotonic()
        # (stats as seldom as heartbeats: a scheduler with many workers asks for
        # fewer of those, and 500 workers' stats every second were 500 frames a second)
        if now - last >= max(STATS_EVERY, worker._beat_every):
            last = now
            sample(mon, worker._process, worker)
        elif not mon.pending():
            continue
        comm = worker.comm
        if comm is not None:
            comm.send_any(mon.take())
