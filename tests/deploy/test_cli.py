"""The command line: a scheduler and workers started as separate processes, as a user would.

    python -m tasknest scheduler --port 0      first stdout line: address; stderr: token
    python -m tasknest worker ADDRESS ...      first stdout line: its address, once registered
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasknest import Client
from tasknest.demo import aggregate, expected, seed_options

from commands import Proc
from conftest import wait_until

BIN = Path(sys.executable).parent


def worker_pid(_):
    return os.getpid()


@pytest.fixture(scope="module")
def cli_cluster():
    """A scheduler with a generated token and two workers, each its own command."""
    sched = Proc("scheduler", "--port", "0")
    workers: list[Proc] = []
    try:
        address = sched.first_line()
        token = sched.generated_token()
        workers = [Proc("worker", address, "--nthreads", "1", "--name", f"w{i}",
                        "--token", token) for i in (1, 2)]
        worker_addresses = [w.first_line() for w in workers]
        yield address, token, worker_addresses
    finally:
        for p in [*workers, sched]:
            p.stop()


@pytest.mark.timeout(60)
def test_scheduler_prints_address_then_token(cli_cluster):
    address, token, worker_addresses = cli_cluster
    assert address.startswith("tcp://127.0.0.1:") and not address.endswith(":0")
    assert len(token) >= 32 and " " not in token
    assert all(w.startswith("tcp://127.0.0.1:") for w in worker_addresses)


@pytest.mark.timeout(60)
def test_seed_examples_on_command_line_cluster(cli_cluster):
    address, token, worker_addresses = cli_cluster
    with Client(address, token=token) as e:
        e.wait_for_workers(2, timeout=20)
        assert sorted(e.nthreads()) == sorted(worker_addresses)
        assert {w["name"] for w in list(e.scheduler_info(-1)["workers"].values())} == {"w1", "w2"}
        results = seed_options(e, "s3://data")
        assert len(results) == 3 and set(results.values()) == {expected("s3://data")}, results

        pids = set(e.gather(e.map(worker_pid, range(20), pure=False)))
        assert os.getpid() not in pids and len(pids) >= 1


@pytest.mark.timeout(60)
def test_token_from_the_environment(cli_cluster, monkeypatch):
    address, token, _ = cli_cluster
    monkeypatch.setenv("TASKNEST_TOKEN", token)
    with Client(address) as c:
        assert c.submit(aggregate, [1, 2]).result() == 3


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_scheduler_and_worker_stop_cleanly_on_signal(procs, sig):
    sched = procs("scheduler", "--port", "0", "--token", "secret-for-this-test")
    address = sched.first_line()
    worker = procs("worker", address, "--nthreads", "1", "--name", "w1",
                   env={"TASKNEST_TOKEN": "secret-for-this-test"})
    worker.first_line()
    with Client(address, token="secret-for-this-test") as c:
        assert c.submit(aggregate, [1, 2, 3]).result() == 6
        worker.signal(sig)
        assert worker.wait() == 0, worker.stderr.decode()
        wait_until(lambda: not list(c.scheduler_info(-1)["workers"].values()), 10,
                   message="the scheduler forgets the stopped worker")
    sched.signal(sig)
    assert sched.wait() == 0, sched.stderr.decode()


@pytest.mark.timeout(60)
def test_worker_gives_up_on_a_vanished_scheduler_with_a_clear_message(procs):
    sched = procs("scheduler", "--port", "0", "--token", "t0k3n")
    address = sched.first_line()
    worker = procs("worker", address, "--name", "w1", "--token", "t0k3n",
                   "--reconnect-timeout", "2")
    worker.first_line()
    sched.proc.kill()                       # gone without a goodbye
    t0 = time.monotonic()
    code = worker.wait(timeout=30)
    elapsed = time.monotonic() - t0
    message = worker.stderr.decode()
    assert code != 0
    assert "unreachable" in message and address in message, message
    assert 1.5 < elapsed < 20, elapsed      # it retried for about --reconnect-timeout


@pytest.mark.timeout(60)
def test_help_and_console_script():
    out = subprocess.run([sys.executable, "-m", "tasknest", "scheduler", "--help"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--port" in out.stdout
    script = BIN / "tasknest"
    assert script.exists(), f"the console script should be installed next to {sys.executable}"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert "scheduler" in out.stdout and "worker" in out.stdout
    out = subprocess.run([str(script), "worker", "--help"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0 and "--reconnect-timeout" in out.stdout
