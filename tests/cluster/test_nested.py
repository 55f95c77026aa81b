"""Tasks that launch tasks, on real worker processes: deep and wide trees, bounded threads,
explicit secede/rejoin, nested and async worker clients, and the cost of entering one.
"""
from __future__ import annotations

import statistics
import threading
import time

import psutil
import pytest

from tasknest import (Client, Future, LocalCluster, get_client, get_worker, rejoin, secede,
                      worker_client)

from nested_tasks import fib_tasks


def inc(x):
    return x + 1


def fib_value(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def n_calls(n):
    """Calls made by the naive recursive Fibonacci: fib(15) = 1,973."""
    return 1 if n < 2 else 1 + n_calls(n - 1) + n_calls(n - 2)


def spawn_children(n):
    with worker_client() as c:
        return sum(c.gather(c.map(inc, range(n))))


def chain(depth):
    if depth == 0:
        return 0
    with worker_client() as c:
        return c.submit(chain, depth - 1).result() + 1


def parent(i):
    """Waits on children that may only run once other parents have seceded."""
    with worker_client() as c:
        kids = c.map(inc, range(i * 10, i * 10 + 10))
        grandkids = [c.submit(spawn_children, 5, pure=False) for _ in range(2)]
        return sum(c.gather(kids)) + sum(c.gather(grandkids))


def explicit_secede(x):
    c = get_client()
    f = c.submit(inc, x)
    secede()
    value = f.result()
    rejoin()
    return value + 1


def nested_worker_clients(x):
    with worker_client() as outer:
        a = outer.submit(inc, x)
        with worker_client() as inner:
            b = inner.submit(inc, a)
            value = inner.gather(b)
        return value + outer.gather(a)


def enter_cost(n):
    """Median seconds to enter and leave worker_client() inside one task."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        with worker_client():
            pass
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def make_grandchildren(x):
    """Returns futures of grandchildren: they must stay valid after this task ends."""
    with worker_client() as c:
        mid = c.submit(spawn_and_return, x, pure=False)
        return mid.result()


def spawn_and_return(x):
    with worker_client() as c:
        return [c.submit(inc, x + i, pure=False) for i in range(3)]


class ThreadSampler(threading.Thread):
    """Largest thread count of a process, sampled every ~10 ms."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.stop = threading.Event()
        self.peak = 0
        self.samples = 0

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.num_threads())
            self.samples += 1
            self.stop.wait(0.01)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join()


@pytest.fixture(scope="module")
def one_worker():
    """One worker process with one thread: every task of a tree shares one slot."""
    with LocalCluster(n_workers=1, threads_per_worker=1) as cluster:
        with Client(cluster) as c:
            yield c


@pytest.fixture(scope="module")
def big():
    """Two workers without per-event invariant checks, for the trees of thousands of
    tasks: each check walks every task, so they would make these runs quadratic."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TASKNEST_VALIDATE", "")
        cluster = LocalCluster(n_workers=2, threads_per_worker=1)
    with cluster, Client(cluster) as c:
        yield c


@pytest.mark.timeout(60)
def test_fib15_every_call_a_task_on_one_thread_with_bounded_threads(one_worker, tmp_path):
    path = str(tmp_path / "calls.txt")
    (info,) = list(one_worker.scheduler_info(-1)["workers"].values())
    assert info["nthreads"] == 1
    with ThreadSampler(info["pid"]) as sampler:
        t0 = time.perf_counter()
        assert one_worker.submit(fib_tasks, 15, path, pure=False).result() == 610
        elapsed = time.perf_counter() - t0
    with open(path) as f:
        assert len(f.read().splitlines()) == n_calls(15) == 1973
    print(f"\nfib(15), 1,973 tasks on 1 thread: {elapsed:.2f} s, "
          f"peak {sampler.peak} threads in the worker ({sampler.samples} samples)")
    assert sampler.samples >= 1
    assert sampler.peak < 50


@pytest.mark.timeout(60)
def test_fib18_every_call_a_task_on_two_workers(big):
    assert len(list(big.scheduler_info(-1)["workers"].values())) == 2
    t0 = time.perf_counter()
    assert big.submit(fib_tasks, 18, pure=False).result() == fib_value(18) == 2584
    print(f"\nfib(18), {n_calls(18):,} tasks on 2 workers: {time.perf_counter() - t0:.2f} s")


@pytest.mark.timeout(60)
def test_task_spawning_2000_children(big):
    assert big.submit(spawn_children, 2000).result() == sum(range(1, 2001))


@pytest.mark.timeout(60)
def test_chain_200_levels_deep(client):
    assert client.submit(chain, 200).result() == 200


@pytest.mark.timeout(60)
def test_16_parents_on_2_threads_all_waiting_on_children(client):
    expected = [sum(range(i * 10 + 1, i * 10 + 11)) + 2 * sum(range(1, 6)) for i in range(16)]
    assert client.gather(client.map(parent, range(16))) == expected


@pytest.mark.timeout(30)
def test_explicit_get_client_secede_rejoin(client):
    assert client.gather(client.map(explicit_secede, range(4))) == [2, 3, 4, 5]


@pytest.mark.timeout(30)
def test_nested_worker_client(client):
    assert client.submit(nested_worker_clients, 1).result() == 3 + 2


@pytest.mark.timeout(30)
def test_entering_worker_client_costs_under_a_millisecond(client):
    median = client.submit(enter_cost, 2000, pure=False).result()
    print(f"\nmedian cost of entering worker_client(): {median * 1e6:.1f} us")
    assert median < 1e-3


@pytest.mark.timeout(30)
def test_futures_made_in_tasks_outlive_them(client):
    futures = client.submit(make_grandchildren, 10).result()
    assert all(isinstance(f, Future) for f in futures)
    assert client.gather(futures) == [11, 12, 13]
    assert all(f.done() for f in futures)


@pytest.mark.timeout(30)
def test_get_worker_outside_a_task_is_a_clear_error():
    with pytest.raises(ValueError, match="inside a task"):
        get_worker()


def map_inc(n):
    with worker_client() as c:
        return sum(c.gather(c.map(inc, range(n))))


@pytest.mark.timeout(120)
def test_the_same_pure_fan_out_back_to_back(client):
    """Each run's children are released as it returns; the next run asks for the same pure
    keys while those releases are still on their way (the scheduler may forget a key
    between a worker's release and its want: the waiting future then claims it anew)."""
    for _ in range(30):
        assert client.submit(map_inc, 300, pure=False).result(timeout=30) == 300 * 301 // 2
