"""The scale workloads at their smallest sizes: correctness and bounded memory, never
timings (those are in ``python -m benchmarks.fleet`` and the scale benchmark)."""
from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from tasknest import Client, LocalCluster, get_client
from tasknest.memory import EMPTY, shrunk, sparse
from tasknest.scheduler.state import SchedulerState
from tasknest.protocol import messages as m

from conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the fleet harness lives at the repository root
    sys.path.insert(0, str(ROOT))


def chain(n: int) -> int:
    if n == 0:
        return 0
    return get_client().submit(chain, n - 1, pure=False).result() + 1


def fib(n: int) -> int:
    if n < 2:
        return n
    c = get_client()
    a, b = c.submit(fib, n - 1, pure=False), c.submit(fib, n - 2, pure=False)
    return a.result() + b.result()


def fan(n: int) -> int:
    c = get_client()
    return sum(c.gather(c.map(abs, range(n), pure=False)))


def test_empty_set_is_shared_and_read_only() -> None:
    assert not EMPTY and len(EMPTY) == 0
    EMPTY.discard("x")
    EMPTY.clear()
    with pytest.raises(AttributeError):
        EMPTY.add("x")  # type: ignore[attr-defined]


def test_sparse_tables_are_right_sized() -> None:
    d = {i: i for i in range(100_000)}
    for i in range(99_990):
        del d[i]
    assert sparse(d)
    small = shrunk(d)
    assert small == d and not sparse(small)
    kept = {1: 1}
    assert shrunk(kept) is kept


@pytest.mark.timeout(10)
def test_the_allocator_thresholds_are_fixed_once_unless_the_environment_sets_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tasknest import memory
    calls: list[tuple] = []

    def mallopt(*args: int) -> int:
        calls.append(args)
        return 1
    monkeypatch.setattr(memory, "_libc", SimpleNamespace(mallopt=mallopt))   # (as on glibc)
    for name in [k for k in os.environ if k.startswith("MALLOC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(memory, "_tuned", False)
    memory.tune_allocator()
    memory.tune_allocator()                                    # once per process
    assert calls == [(-1, 4 << 20), (-3, 4 << 20)]            # M_TRIM_, M_MMAP_THRESHOLD
    calls.clear()
    monkeypatch.setattr(memory, "_tuned", False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")      # the user's choice stands
    memory.tune_allocator()
    assert calls == []


def test_flat_records_return_to_zero_and_tables_shrink() -> None:
    """Three rounds of 100,000 tasks through the state machine: no live record, no
    record of a client's wants and no oversized table is left after each."""
    s = SchedulerState()
    s.add_client("c-1")
    for w in ("a", "b"):
        s.add_worker(f"w-{w}", f"tcp://{w}:1", w, 1, 1, 0, [], 0.0)
    for _ in range(3):
        keys = [f"abs-{i}" for i in range(100_000)]
        computes = []
        for i, k in enumerate(keys):
            computes += s.handle("c-1", m.Submit(key=k, func=b"f", args=b"a", deps=[], priority=[0, 0, i], retries=0, workers=None, resources=None, loose=False))
        for target, c in computes:
            s.handle(target, m.TaskFinished(key=c.key, nbytes=28, type="int", value=[b"x"], inner=[], notified=[], attempt=c.attempt))
        for i in range(0, len(keys), 1000):
            s.handle("c-1", m.Release(keys=keys[i:i + 1000]))
        assert len(s.tasks) == 0
        assert not s.clients["c-1"]
        assert all(not w.processing and not w.has_what for w in s.workers.values())
        assert s.compact()
        assert not sparse(s.tasks) and not sparse(s.clients["c-1"])
        s.validate()


def test_many_workers_dispatch_spreads_work() -> None:
    """Beyond a small cluster a task goes to an idle worker or the least loaded of a
    few in turn: every worker gets work, none gets far more than its share."""
    s = SchedulerState()
    s.add_client("c-1")
    for i in range(200):
        s.add_worker(f"w-{i}", f"tcp://h:{i}", str(i), 1, 1, 0, [], 0.0)
    for i in range(4000):
        s.handle("c-1", m.Submit(key=f"k-{i}", func=b"f", args=b"a", deps=[], priority=[0, 0, i], retries=0, workers=None, resources=None, loose=False))
    loads = [len(w.processing) for w in s.workers.values()]
    assert sum(loads) == 4000 and min(loads) >= 10 and max(loads) <= 30, loads
    s.validate()


@pytest.fixture(scope="module")
def cluster2():
    with LocalCluster(n_workers=2, threads_per_worker=1) as cl:
        yield cl


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


@pytest.mark.timeout(240)
def test_rounds_give_memory_back(cluster2) -> None:
    """Three rounds of 100,000 tasks: after each, every result is freed, the scheduler
    holds no task record, and on its next ticks it gives its memory back to within
    60 MiB of where it stood before the first round (so no growth from round to round);
    so do the workers and this process (the client)."""
    n = 100_000
    with Client(cluster2) as c:
        sched = cluster2.scheduler_proc.pid
        others = [os.getpid(), *(w["pid"] for w in c.scheduler_info()["workers"].values())]
        start = _rss(sched)
        before = {pid: _rss(pid) for pid in others}
        for _ in range(3):
            futures = c.map(abs, range(-n, 0))
            assert sum(c.gather(futures)) == n * (n + 1) // 2
            del futures
            gc.collect()
            wait_until(lambda: not any(c.has_what().values()), 60,
                       message="every result is freed once its future is dropped")
            wait_until(lambda: not c._query("tasks"), 60,
                       message="the scheduler holds no task record after the round")
            wait_until(lambda: _rss(sched) - start < 60 * 2**20, 20,
                       message=f"the scheduler's memory given back (it started at "
                               f"{start >> 20} MiB)")
            for pid in others:
                wait_until(lambda: _rss(pid) - before[pid] < 60 * 2**20, 20,
                           message=f"process {pid}'s memory given back (it started at "
                                   f"{before[pid] >> 20} MiB)")


def test_deep_chain(cluster2) -> None:
    """A chain 10,000 deep, each task submitting the next and waiting on it: no
    recursion error, a bounded number of threads."""
    with Client(cluster2) as c:
        assert c.submit(chain, 10_000, pure=False).result(timeout=240) == 10_000
        for w in c.scheduler_info(-1)["workers"].values():
            assert psutil.Process(int(w["pid"])).num_threads() < 600


def test_small_trees_and_fanout(cluster2) -> None:
    with Client(cluster2) as c:
        assert c.submit(fib, 12, pure=False).result(timeout=120) == 144
        assert c.submit(fan, 2000, pure=False).result(timeout=120) == sum(range(2000))


def test_200_worker_instances_join_run_and_leave() -> None:
    from benchmarks.fleet import start_fleet, stop_fleet
    with LocalCluster(n_workers=0) as cl, Client(cl) as c:
        procs = start_fleet(cl.scheduler_address, cl.token, 200, per_process=100)
        try:
            wait_until(lambda: len(c.scheduler_info(-1)["workers"]) == 200, 60,
                       message="200 worker instances joined")
            assert c.gather(c.map(abs, range(-2000, 0))) == list(range(2000, 0, -1))
        finally:
            stop_fleet(procs)
        wait_until(lambda: len(c.scheduler_info(-1)["workers"]) == 0, 60,
                   message="every worker instance left")
