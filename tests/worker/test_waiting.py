"""Waiting anywhere in a task is safe: wait, as_completed, done-callbacks, nested.

Every test runs on 1-thread workers, where a task that keeps its slot while it
waits on children queued behind it would wait for ever.
"""
from __future__ import annotations

import os
import threading
import time

import psutil
import pytest

from tasknest import (FIRST_COMPLETED, Client, LocalCluster, as_completed, get_client,
                      get_worker, rejoin, secede, wait, worker_client)

from conftest import wait_until


def double(x):
    return 2 * x


def parent_wait(n, return_when="ALL_COMPLETED"):
    with worker_client() as c:
        fs = c.map(double, range(n))
        done, not_done = wait(fs, return_when=return_when)
        if return_when == "FIRST_COMPLETED":
            assert done
            wait(fs)
        return sum(f.result() for f in fs)


def parent_as_completed(n):
    with worker_client() as c:
        return sum(f.result() for f in as_completed(c.map(double, range(n))))


def parent_with_results(n):
    with worker_client() as c:
        return sum(r for _, r in as_completed(c.map(double, range(n)), with_results=True))


def parent_batches(n):
    with worker_client() as c:
        total = 0
        for batch in as_completed(c.map(double, range(n)), with_results=True).batches():
            assert batch
            total += sum(r for _, r in batch)
        return total


def parent_event(n):
    """Waits where tasknest cannot see: a threading.Event set by done-callbacks."""
    with worker_client() as c:
        fs = c.map(double, range(n))
        event = threading.Event()
        lock = threading.Lock()
        left = [len(fs)]

        def one_done(_):
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    event.set()
        for f in fs:
            f.add_done_callback(one_done)
        assert event.wait(60), "the children never ran"
        return sum(f.result() for f in fs)


WAYS = {"wait": parent_wait, "as_completed": parent_as_completed,
        "with_results": parent_with_results, "batches": parent_batches, "event": parent_event}


def _threads(cluster) -> list[int]:
    """Thread counts of the worker processes (under their nannies, if any)."""
    counts = []
    for proc in cluster.worker_procs:
        top = psutil.Process(proc.pid)
        counts += [p.num_threads() for p in [top, *top.children(recursive=True)]]
    return counts


class ThreadSampler:
    """Samples the thread counts of the worker processes while a test runs."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.005):
            try:
                self.peak = max([self.peak, *_threads(self.cluster)])
            except psutil.Error:
                pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("way", sorted(WAYS))
@pytest.mark.parametrize("n", [1, 10, 1000])
def test_waiting_inside_a_task_never_deadlocks(client, cluster, way, n):
    idle = max(_threads(cluster))
    with ThreadSampler(cluster) as sampler:
        assert client.submit(WAYS[way], n, pure=False).result(timeout=60) == n * (n - 1)
    # threads: the pool's one, plus one for each task that waits (here one), plus the
    # few that come and go (a replacement parked, the sampler's moment)
    assert sampler.peak <= idle + 3, (sampler.peak, idle)


def level(depth, way):
    """Three levels of tasks, each waiting on its children the given way."""
    if depth == 0:
        return 1
    with worker_client() as c:
        fs = [c.submit(level, depth - 1, way, pure=False) for _ in range(10)]
        if way == "wait":
            wait(fs)
            return sum(f.result() for f in fs)
        if way == "as_completed":
            return sum(f.result() for f in as_completed(fs))
        event = threading.Event()
        left = [len(fs)]
        lock = threading.Lock()

        def one_done(_):
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    event.set()
        for f in fs:
            f.add_done_callback(one_done)
        assert event.wait(60)
        return sum(f.result() for f in fs)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("way", ["wait", "as_completed", "event"])
def test_nested_three_levels(client, cluster, way):
    idle = max(_threads(cluster))
    with ThreadSampler(cluster) as sampler:
        assert client.submit(level, 3, way, pure=False).result(timeout=90) == 1000
    # 111 tasks wait at some point; the threads stay a small bound, not one per waiter
    assert sampler.peak <= idle + 12, (sampler.peak, idle)


def where(i):
    time.sleep(0.002)
    return get_worker().name


def seceded_parent(n):
    secede()
    c = get_client()
    names = c.gather(c.map(where, range(n), pure=False))
    rejoin()
    return names


def waiting_parent(n):
    with worker_client() as c:
        fs = c.map(where, range(n), pure=False)
        wait(fs)
        return [f.result() for f in fs]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("parent", [seceded_parent, waiting_parent])
def test_children_of_a_waiting_task_are_stolen_by_the_idle_worker(client, parent):
    names = client.submit(parent, 100, pure=False).result(timeout=30)
    assert len(names) == 100
    assert len(set(names)) == 2, "the idle worker ran none of the children"


def first_completed(n):
    with worker_client() as c:
        fs = c.map(double, range(n))
        done, _ = wait(fs, return_when=FIRST_COMPLETED)
        assert done
        return len(wait(fs).done)


@pytest.mark.timeout(60)
def test_first_completed_inside_a_task(client):
    assert client.submit(first_completed, 20, pure=False).result(timeout=30) == 20


@pytest.mark.timeout(60)
def test_wait_leaves_no_callback_behind(client):
    fs = client.map(double, range(20))
    wait(fs)
    assert all(not f._state.callbacks for f in fs)
    pending = client.submit(wait_until, lambda: False, 0.2, pure=False)   # ends in error
    with pytest.raises(TimeoutError):
        wait([pending], timeout=0.01)
    assert not pending._state.callbacks
    wait([pending])
    ac = as_completed(client.map(double, range(10, 20)))
    next(ac)
    del ac
    assert all(not f._state.callbacks for f in fs)


def lent_here():
    return get_worker().watchdog.lent


@pytest.mark.timeout(60)
def test_the_watchdog_lends_the_slot_of_a_task_blocked_out_of_sight():
    # one worker with one thread: no other worker can steal the children, so they run
    # only if the watchdog lends the blocked parent's slot
    with LocalCluster(n_workers=1, threads_per_worker=1) as cluster, Client(cluster) as c:
        assert c.submit(lent_here, pure=False).result(timeout=30) == 0
        assert c.submit(parent_event, 10, pure=False).result(timeout=30) == 90
        assert c.submit(lent_here, pure=False).result(timeout=30) > 0


def busy_in_worker_client(seconds):
    """Computes inside worker_client (never blocks) while its children wait."""
    with worker_client() as c:
        fs = c.map(double, range(5))
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            n += 1
        return c.gather(fs), n > 0


@pytest.mark.timeout(60)
def test_a_task_that_computes_keeps_its_slot(client):
    w = sorted(client.nthreads())[0]
    before = client.submit(lent_here, workers=[w], pure=False).result()
    values, _ = client.submit(busy_in_worker_client, 0.3, workers=[w], pure=False).result()
    assert values == [0, 2, 4, 6, 8]
    assert client.submit(lent_here, workers=[w], pure=False).result() == before
