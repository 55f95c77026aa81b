"""Actors: an instance on one worker; method calls and attribute reads are futures."""
from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from conftest import wait_until
from tasknest import Actor, CallerError, Client, LocalCluster, LostError

pytestmark = pytest.mark.timeout(90)


class Counter:
    def __init__(self, start: int = 0) -> None:
        self.n = start
        self.busy = False

    def increment(self, by: int = 1) -> int:
        assert not self.busy, "two calls ran at once"
        self.busy = True
        self.n += by
        self.busy = False
        return self.n

    def pid(self) -> int:
        return os.getpid()

    def hang(self, started: str) -> None:
        """Say it started, then run until the worker is killed (at most a minute)."""
        open(started, "w").close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.05)

    async def later(self) -> int:
        await asyncio.sleep(0)
        return self.n


def bump(counter: Actor, k: int) -> int:
    futures = [counter.increment() for _ in range(k)]
    return max(f.result(timeout=30) for f in futures)


def test_a_counter_incremented_from_the_client_and_from_tasks(client):
    counter = client.submit(Counter, 0, actor=True).result(timeout=30)
    assert isinstance(counter, Actor)
    client.gather([counter.increment() for _ in range(1000)], timeout=60)
    assert counter.n.result(timeout=30) == 1000
    client.gather(client.map(bump, [counter] * 10, [100] * 10, pure=False), timeout=60)
    assert counter.n.result(timeout=30) == 2000
    assert counter.later().result(timeout=30) == 2000
    assert counter.increment(3).result(timeout=30) == 2003        # positional arguments
    assert counter.increment(by=-3).result(timeout=30) == 2000    # keyword arguments
    with pytest.raises(CallerError):
        client.submit(len, [], actor=True)


def test_callers_of_an_actor_whose_worker_dies_get_a_clear_error(tmp_path):
    with LocalCluster(n_workers=2, threads_per_worker=1) as cl, Client(cl) as c:
        counter = c.submit(Counter, actor=True).result(timeout=30)
        pid = counter.pid().result(timeout=30)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: pid not in [w["pid"] for w in c.scheduler_info()["workers"].values()], 30,
                   message="the scheduler saw the worker go")
        with pytest.raises(LostError, match="gone"):
            counter.increment().result(timeout=30)


def test_a_call_running_when_its_actors_worker_is_killed_errs_clearly(tmp_path):
    started = str(tmp_path / "started")
    with LocalCluster(n_workers=2, threads_per_worker=1) as cl, Client(cl) as c:
        counter = c.submit(Counter, actor=True).result(timeout=30)
        pid = counter.pid().result(timeout=30)
        running = counter.hang(started)
        queued = counter.increment()        # waits behind it on the actor's thread
        wait_until(lambda: os.path.exists(started), 30, message="the call runs")
        os.kill(pid, signal.SIGKILL)
        for call in (running, queued):
            with pytest.raises(LostError, match="gone"):
                call.result(timeout=30)
        assert c.submit(sum, [1, 2]).result(timeout=30) == 3     # the cluster serves on
