"""The core engine end to end on real worker processes: submit, map, gather, keys, errors.

Functions live at module level so the workers import them by reference (the
cluster's processes get this directory on their PYTHONPATH).
"""
from __future__ import annotations

import gc
import threading
import time

import psutil
import pytest

from tasknest import Client, Executor, LocalCluster
from tasknest.errors import CommClosedError, SerializationError

from conftest import wait_until


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def record(path, x):
    """Count executions: one line per run."""
    with open(path, "a") as f:
        f.write(f"{x}\n")
    return x * 10


def runs(path) -> int:
    try:
        with open(path) as f:
            return len(f.read().splitlines())
    except FileNotFoundError:
        return 0


def raise_keyerror(x):
    raise KeyError(f"no such thing: {x}")


def return_lock(_):
    return threading.Lock()


def return_generator(n):
    return (i for i in range(n))


def identity(x):
    return x


# -- volume and cleanup ---------------------------------------------------------------------
@pytest.fixture
def unvalidated(monkeypatch):
    """A cluster without per-event invariant checks: they cost O(tasks) each, which
    would make 10,000 tasks quadratic (the checks run on the smaller tests)."""
    monkeypatch.setenv("TASKNEST_VALIDATE", "")
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster:
        yield cluster


@pytest.mark.timeout(60)
def test_map_gather_10000_then_workers_hold_nothing(unvalidated):
    with Client(unvalidated) as client:
        futures = client.map(inc, range(10_000))
        assert client.gather(futures) == list(range(1, 10_001))
        assert sum(len(v) for v in client.has_what().values()) == 10_000
        del futures
        gc.collect()
        wait_until(lambda: not any(client.has_what().values()), 10,
                   message="workers drop all 10,000 results once the futures are gone")


# -- deterministic keys ----------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_identical_pure_submits_run_once_and_impure_runs_again(client, tmp_path):
    path = str(tmp_path / "runs.txt")
    a = client.submit(record, path, 1)
    b = client.submit(record, path, 1)
    assert a.key == b.key
    assert a.result() == b.result() == 10
    assert runs(path) == 1
    c = client.submit(record, path, 1, pure=False)
    assert c.key != a.key
    assert c.result() == 10
    assert runs(path) == 2


@pytest.mark.timeout(30)
def test_map_with_identical_arguments_shares_keys(client, tmp_path):
    path = str(tmp_path / "runs.txt")
    futures = client.map(record, [path] * 5, [7] * 5)
    assert len({f.key for f in futures}) == 1
    assert client.gather(futures) == [70] * 5
    assert runs(path) == 1
    # a pure submit of the same call joins the same task
    assert client.submit(record, path, 7).key == futures[0].key
    assert runs(path) == 1


# -- errors -----------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_exception_reraised_with_remote_traceback(client):
    f = client.submit(raise_keyerror, 3)
    with pytest.raises(KeyError, match="no such thing: 3") as info:
        f.result()
    cause = info.value.__cause__
    assert cause is not None and "raise_keyerror" in str(cause)
    assert isinstance(f.exception(), KeyError)
    assert "raise_keyerror" in "".join(__import__("traceback").format_tb(f.traceback()))
    assert f.status == "error"
    # a dependent task fails with the same error; the next task still runs
    with pytest.raises(KeyError):
        client.submit(inc, f).result()
    assert client.submit(inc, 41).result() == 42


@pytest.mark.timeout(30)
@pytest.mark.parametrize("func, what", [(return_lock, "lock"), (return_generator, "generator")])
def test_unpicklable_result_is_a_clear_error(client, func, what):
    f = client.submit(func, 3)
    with pytest.raises(SerializationError, match=f"cannot be pickled.*{what}"):
        f.result()
    assert client.submit(inc, 1).result() == 2


@pytest.mark.timeout(30)
def test_unpicklable_argument_is_a_clear_error(client):
    with pytest.raises(SerializationError, match="lock"):
        client.submit(identity, threading.Lock())
    assert client.submit(inc, 2).result() == 3


@pytest.mark.timeout(30)
def test_connect_where_nothing_listens_fails_fast_naming_the_address():
    t0 = time.monotonic()
    with pytest.raises(CommClosedError, match="127.0.0.1:1"):
        Client("tcp://127.0.0.1:1", timeout=1)
    assert time.monotonic() - t0 < 5


# -- embedded cluster --------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_executor_alias_and_with_client_stops_embedded_cluster():
    assert Executor is Client
    with Executor(n_workers=2, threads_per_worker=1) as e:
        assert e.submit(add, 1, 2).result() == 3
        pids = [w["pid"] for w in list(e.scheduler_info(-1)["workers"].values())]
        pids.append(e._cluster.scheduler_proc.pid)
        assert len(pids) == 3 and all(psutil.pid_exists(p) for p in pids)
    wait_until(lambda: not any(_alive(p) for p in pids), 10,
               message="the embedded scheduler and workers exit with the client")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
