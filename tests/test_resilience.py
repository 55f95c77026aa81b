"""Results survive dying workers: chaos kills, KilledWorker, retries, lost data, lost scheduler.

Workers run under their nanny (the default for ``tasknest worker``), so a killed
worker process is started again while the computation goes on.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from tasknest import Client, LocalCluster, worker_client
from tasknest.errors import KilledWorker, LostError, SchedulerLostError

from conftest import wait_until


def slow_square(x):
    time.sleep(0.03)
    return x * x


def fib(n):
    if n < 2:
        time.sleep(0.005)
        return n
    with worker_client() as c:
        a, b = c.gather([c.submit(fib, n - 1, pure=False), c.submit(fib, n - 2, pure=False)])
        return a + b


def fib_value(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def worker_children(cluster) -> list[psutil.Process]:
    """The worker processes that the nannies supervise."""
    out = []
    for nanny in cluster.worker_procs:
        try:
            out += psutil.Process(nanny.pid).children()
        except psutil.NoSuchProcess:
            pass
    return out


class Chaos(threading.Thread):
    """SIGKILL a random worker process (a nanny's child) every 1-2 s."""

    def __init__(self, cluster) -> None:
        super().__init__(daemon=True, name="chaos")
        self.cluster = cluster
        self.kills = 0
        self.halt = threading.Event()
        self.rng = random.Random(os.getpid())

    def run(self) -> None:
        while not self.halt.wait(self.rng.uniform(1.0, 2.0)):
            while not self.halt.is_set():
                victims = worker_children(self.cluster)
                if victims:
                    try:
                        self.rng.choice(victims).kill()
                        self.kills += 1
                        break
                    except psutil.NoSuchProcess:
                        pass
                self.halt.wait(0.05)   # every worker is being restarted: try again soon

    def __enter__(self) -> "Chaos":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.halt.set()
        self.join()


@pytest.fixture(scope="module")
def nanny_cluster():
    with LocalCluster(n_workers=3, threads_per_worker=1, nanny=True,
                      heartbeat_timeout=5.0) as c:
        yield c


@pytest.fixture
def nclient(nanny_cluster):
    with Client(nanny_cluster) as c:
        wait_until(lambda: len(c.scheduler_info()) == 3, 20,
                   message="every nanny has its worker connected")
        yield c


@pytest.mark.timeout(90)
def test_map_survives_random_kills(nanny_cluster, nclient):
    with Chaos(nanny_cluster) as chaos:
        futures = nclient.map(slow_square, range(400))
        results = nclient.gather(futures)
    print(f"\nmap of 400 tasks: {chaos.kills} workers killed")
    assert results == [x * x for x in range(400)]
    assert chaos.kills >= 2


@pytest.mark.timeout(90)
def test_nested_fib_tree_survives_random_kills(nanny_cluster, nclient):
    n = 14   # 1,219 tasks, every one with its own key (pure=False)
    with Chaos(nanny_cluster) as chaos:
        result = nclient.submit(fib, n, pure=False).result()
    print(f"\nfib({n}) tree: {chaos.kills} workers killed")
    assert result == fib_value(n)
    assert chaos.kills >= 2


def kill_own_process():
    os._exit(1)


@pytest.mark.timeout(60)
def test_killed_worker_after_allowed_failures(nclient):
    future = nclient.submit(kill_own_process, pure=False)
    with pytest.raises(KilledWorker) as info:
        future.result(timeout=45)
    message = str(info.value)
    assert future.key in message and "workers that died" in message
    assert "tcp://" in message
    # the nannies brought the workers back: the cluster still runs other work
    assert nclient.gather(nclient.map(slow_square, range(10))) == [x * x for x in range(10)]


_attempts = 0


def flaky():
    # counted per worker process: the task reruns on the same worker
    global _attempts
    _attempts += 1
    if _attempts < 3:
        raise OSError(f"transient failure #{_attempts}")
    return _attempts


@pytest.mark.timeout(60)
def test_retries_rerun_a_failing_task(nclient):
    assert nclient.submit(flaky, retries=2, pure=False).result(timeout=30) == 3
    with pytest.raises(OSError, match="transient failure"):
        nclient.submit(flaky_always, retries=1, pure=False).result(timeout=30)


def flaky_always():
    raise OSError("transient failure, always")
