"""Shared fixtures: real clusters (worker processes over loopback TCP) and leak checks."""
from __future__ import annotations

import os
import threading
import time
from typing import Callable

import pytest

os.environ.setdefault("TASKNEST_VALIDATE", "1")   # state machines check invariants after events

from tasknest import Client, LocalCluster  # noqa: E402

from commands import Proc  # noqa: E402


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01,
               message: str = "condition") -> object:
    """Poll a condition until it holds or the deadline passes (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} did not hold within {timeout} s")
        time.sleep(interval)


def wait_for_file(path: str, timeout: float = 30.0) -> int:
    """A task that runs until ``path`` exists (with a deadline); returns its pid."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.005)   # the task polls: the situation under test, not a test's sync
    return os.getpid()


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes with one thread each, as in the benchmarks."""
    with LocalCluster(n_workers=2, threads_per_worker=1) as c:
        yield c


@pytest.fixture
def client(cluster):
    with Client(cluster) as c:
        yield c
        # every test leaves the cluster clean: nothing held once its futures are gone
    _assert_clean(cluster)


def _assert_clean(cluster) -> None:
    with Client(cluster) as c:
        wait_until(lambda: not any(c.has_what().values()), 10,
                   message="workers free every result once no future refers to it")


@pytest.fixture
def inproc():
    """Scheduler and workers in this process (same loop thread), for fast tests."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False) as c:
        with Client(c) as client:
            yield client


@pytest.fixture
def procs():
    """Every process a test starts is gone when it ends."""
    started: list[Proc] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Proc:
        p = Proc(*args, env=env)
        started.append(p)
        return p
    yield start
    for p in reversed(started):
        p.stop()


@pytest.fixture(autouse=True)
def _no_thread_leak():
    before = {t.ident for t in threading.enumerate()}
    yield
    extra = [t for t in threading.enumerate() if t.ident not in before
             and not t.daemon and t.is_alive()]
    assert not extra, f"test leaked non-daemon threads: {extra}"
