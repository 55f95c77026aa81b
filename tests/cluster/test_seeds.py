"""The specification's examples as written: the three ways to launch tasks from tasks,
the Fibonacci example (with worker_client, local_executor and Executor), and the
runnable scripts in examples/.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import wait_until
from tasknest import Client, Executor, get_worker, local_executor, worker_client
from tasknest.demo import aggregate, download_and_convert_to_list, expected, process_element, \
    seed_options

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FIB_100 = 354224848179261915075


EXPECTED = expected("s3://data")


def process_all_where(data):
    """process_all, also reporting where the scattered pieces live and who ran it."""
    with worker_client() as e:
        elements = e.scatter(data)
        holders = e.who_has(elements)
        futures = e.map(process_element, elements)
        analysis = e.submit(aggregate, futures)
        return analysis.result(), holders, get_worker().address


def fib(n, path=None):
    if path is not None:
        with open(path, "a") as f:
            f.write(f"{n}\n")
    if n < 2:
        return n
    with worker_client() as c:
        a = c.submit(fib, n - 1, path)
        b = c.submit(fib, n - 2, path)
        a, b = c.gather([a, b])
        return a + b


def fib_local_executor(n, path=None):
    if path is not None:
        with open(path, "a") as f:
            f.write(f"{n}\n")
    if n < 2:
        return n
    else:
        with local_executor() as ee:
            a = ee.submit(fib_local_executor, n - 1, path)
            b = ee.submit(fib_local_executor, n - 2, path)
            a, b = ee.gather([a, b])
            return a + b


def record(path, x):
    with open(path, "a") as f:
        f.write(f"{x}\n")
    return x


def ask_for_record(path, x):
    with worker_client() as c:
        return c.submit(record, path, x).result()


def claim_then_ask_elsewhere(path, other):
    """Claim a pure key here, then make another worker want the same key."""
    with worker_client() as c:
        mine = c.submit(record, path, 1)
        theirs = c.submit(ask_for_record, path, 1, workers=[other], pure=False)
        return c.gather([mine, theirs])


def executions(path):
    with open(path) as f:
        return Counter(int(line) for line in f.read().split())


def check_fib_100(e, func, path):
    future = e.submit(func, 100, path)
    assert future.result() == FIB_100
    assert repr(future).startswith("<Future: status: finished, type: int, key: ")
    runs = executions(path)
    # one task per distinct call: fib(0) .. fib(100)
    assert set(runs) == set(range(101))
    # Two workers wanting one pure call at once run it once (a claim runs once the
    # scheduler says it is this worker's: test_fib_100_with_pure_keys_executes_101_...).
    # A call can still run again when its result was released by every holder and a
    # task asks for it later: a sibling stolen by a worker that starts it late (the
    # first task on a fresh worker waits for its module to import).
    assert sum(runs.values()) <= 10 * 101, runs.most_common(5)
    return sum(runs.values())


@pytest.mark.timeout(60)
def test_seed_examples_on_an_embedded_cluster(tmp_path):
    e = Client()
    try:
        assert len(list(e.scheduler_info(-1)["workers"].values())) >= 1
        assert isinstance(e.submit(download_and_convert_to_list, "s3://data").result(), list)
        results = seed_options(e, "s3://data")      # gather locally, from client, from worker
        assert len(results) == 3 and set(results.values()) == {EXPECTED}, results

        # the extended example, with deduplicated keys
        check_fib_100(e, fib, str(tmp_path / "fib.txt"))
    finally:
        e.close()


@pytest.mark.timeout(60)
def test_fib_100_on_two_single_thread_workers_with_deduplicated_keys(client, tmp_path):
    assert sorted(client.nthreads().values()) == [1, 1]
    n = check_fib_100(client, fib, str(tmp_path / "fib.txt"))
    print(f"\nfib(100) on two workers: 101 distinct keys, {n} executions")


@pytest.mark.timeout(30)
def test_pure_key_wanted_by_two_workers_runs_once(client, tmp_path):
    path = str(tmp_path / "runs.txt")
    a, b = sorted(client.nthreads())
    assert client.submit(claim_then_ask_elsewhere, path, b, workers=[a]).result() == [1, 1]
    assert executions(path) == {1: 1}


def warm():
    """Run on a worker, this imports the module there."""
    return os.getpid()


def fib_where(n, path):
    """The seed's fib, each call noting its argument and the process it ran in."""
    with open(path, "a") as f:
        f.write(f"{n} {os.getpid()}\n")
    if n < 2:
        return n
    with worker_client() as c:
        a = c.submit(fib_where, n - 1, path)
        b = c.submit(fib_where, n - 2, path)
        a, b = c.gather([a, b])
        return a + b


@pytest.mark.timeout(240)
def test_fib_100_with_pure_keys_executes_101_calls_in_20_runs_of_20(client, tmp_path):
    """fib(100) on one worker while fib(99) starts on the other: from the first call
    on, the tasks of both workers want the same pure calls at the same moment (and
    the idle one steals parts of the chain); each call still runs exactly once."""
    a, b = sorted(client.nthreads())
    client.run(warm)       # both workers have imported this module: a stolen task starts
    both = 0               # at once, while the calls it shares with its siblings are held
    for run in range(20):
        path = tmp_path / f"fib-{run}.txt"
        top = client.submit(fib_where, 100, str(path), workers=[a])
        second = client.submit(fib_where, 99, str(path), workers=[b])
        assert top.result() == FIB_100 and second.result() == FIB_100 - fib_value(98)
        del top, second
        lines = [line.split() for line in path.read_text().splitlines()]
        runs = Counter(int(n) for n, _ in lines)
        assert runs == {n: 1 for n in range(101)}, (run, runs.most_common(5))
        both += len({pid for _, pid in lines}) == 2
        # the next run starts on empty workers: every call is computed again
        wait_until(lambda: not any(client.has_what().values()), 10,
                   message="the workers hold nothing")
    assert both, "the calls never ran on both workers: nothing raced"


def fib_value(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


@pytest.mark.timeout(60)
def test_fib_100_with_local_executor_and_executor(cluster, tmp_path):
    with Executor(cluster) as e:
        check_fib_100(e, fib_local_executor, str(tmp_path / "fib.txt"))


@pytest.mark.timeout(60)
def test_process_all_keeps_scattered_data_on_its_worker(client):
    data = download_and_convert_to_list("s3://data")
    result, holders, address = client.submit(process_all_where, data).result()
    assert result == EXPECTED
    assert len(holders) == len(data)
    assert all(where == [address] for where in holders.values()), (address, holders)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("script, expected", [
    ("gather_locally.py", "6100"),
    ("submit_from_client.py", "6100"),
    ("submit_from_worker.py", "6100"),
    ("fib.py", str(FIB_100)),
    ("nesting_costs.py 8", "tasks/s;"),     # small trees: this only checks that it runs
])
def test_example_script_runs(script, expected):
    env = {k: v for k, v in os.environ.items() if k != "TASKNEST_TOKEN"}
    name, *args = script.split()
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, timeout=50, env=env, cwd=str(EXAMPLES.parent))
    assert proc.returncode == 0, proc.stderr
    assert expected in proc.stdout.split(), proc.stdout
