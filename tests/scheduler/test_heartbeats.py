"""Heartbeats: about the same number a second in all, however many workers joined."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tasknest.scheduler import server as scheduler_server
from tasknest.scheduler.server import Scheduler
from tasknest.worker.server import Worker


@pytest.mark.timeout(60)
def test_workers_that_joined_first_slow_down_as_the_cluster_grows(monkeypatch: Any) -> None:
    # two beats a second in all: the interval grows by half at the 3rd, 5th ... worker
    monkeypatch.setattr(scheduler_server, "HEARTBEATS_PER_S", 2)

    async def until(predicate: Any, what: str) -> None:
        deadline = time.monotonic() + 20
        while not predicate():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.005)

    async def main() -> None:
        sched = await Scheduler(token="t", heartbeat_timeout=100, dashboard_address=None).start()
        workers: list[Worker] = []
        try:
            for i in range(6):
                workers.append(await Worker(sched.address, nthreads=1, name=f"w{i}",
                                            token="t").start())
                want = sched._told_every
                await until(lambda: all(w._beat_every >= want for w in workers),
                            f"every worker beats every {want} s once {i + 1} joined")
            # told at the 3rd (1.5 s) and the 5th (2.5 s); the 6th was welcomed with 3 s
            assert [w._beat_every for w in workers] == [2.5] * 5 + [3.0]
            assert sum(1 / w._beat_every for w in workers) <= 1.5 * 2
        finally:
            for w in workers:
                await w.close("done")
            await sched.close()

    asyncio.run(main())
