"""resources=: a task runs only where what it asks for is free, and holds it while it runs."""
from __future__ import annotations

import logging
import os

import pytest

from conftest import wait_until
from tasknest import CallerError, Client, Event, LocalCluster, get_client
from tasknest.deploy.cli import parse_resources
from tasknest.protocol import messages as m
from tasknest.scheduler.state import SchedulerState

pytestmark = pytest.mark.timeout(90)


def test_parse_resources():
    assert parse_resources("GPU=2,MEM=16e9") == {"GPU": 2.0, "MEM": 16e9}
    assert parse_resources("") == {}
    for bad in ("GPU", "GPU=-1", "=2", "GPU=lots"):
        with pytest.raises(ValueError):
            parse_resources(bad)


def test_scheduler_holds_resources_while_processing():
    s = SchedulerState()
    s.add_client("c-1")
    s.add_worker("w-1", "tcp://127.0.0.1:9001", "w-1", 4, 1, 0, [], 0.0, {"GPU": 1})
    s.add_worker("w-2", "tcp://127.0.0.1:9002", "w-2", 4, 2, 0, [], 0.0, {})
    for key in "abc":
        s.handle("c-1", m.Submit(key=key, func=1, args=b"", deps=[], priority=[0, 0, 0], retries=0, workers=None, resources={"GPU": 1}, loose=False))
        s.validate()
    assert s.workers["w-1"].processing == {"a"} and set(s.unrunnable) == {"b", "c"}
    s.handle("w-1", m.TaskFinished(key="a", nbytes=8, type="int", value=None, inner=[], notified=[], attempt=s.tasks["a"].attempt))
    s.validate()
    assert len(s.workers["w-1"].processing) == 1 and len(s.unrunnable) == 1
    out = s.handle("c-1", m.Submit(key="d", func=1, args=b"", deps=[], priority=[0, 0, 0], retries=0, workers=None, resources={"TPU": 1}, loose=False))
    s.validate()
    assert [msg.op for _, msg in out] == ["warn"] and "d" in s.unrunnable
    # allow_other_workers: the named worker is absent, so anywhere
    s.handle("c-1", m.Submit(key="e", func=1, args=b"", deps=[], priority=[0, 0, 0], retries=0, workers=["nope"], resources=None, loose=True))
    s.handle("c-1", m.Submit(key="f", func=1, args=b"", deps=[], priority=[0, 0, 0], retries=0, workers=["nope"], resources=None, loose=False))
    s.validate()
    assert s.tasks["e"].state == "processing" and "f" in s.unrunnable


def use_gpu(log: str, i: int) -> int:
    with open(log, "a") as fh:
        fh.write(f"start {i}\n")
    assert Event(f"gpu-{i}").wait(timeout=60)
    with open(log, "a") as fh:
        fh.write(f"end {i}\n")
    return i


def test_four_tasks_on_two_single_gpus_never_run_more_than_two_at_once(tmp_path):
    log = str(tmp_path / "log")
    open(log, "w").close()

    def started() -> list[str]:
        return [line.split()[1] for line in open(log).read().splitlines()
                if line.startswith("start")]
    with LocalCluster(n_workers=2, threads_per_worker=2, resources={"GPU": 1}) as cl, \
            Client(cl) as c:
        fs = c.map(use_gpu, [log] * 4, range(4), resources={"GPU": 1}, pure=False)
        released: set[str] = set()
        while len(released) < 4:
            wait_until(lambda: len(set(started()) - released) >= min(2, 4 - len(released)),
                       30, message="tasks start as GPUs come free")
            for i in set(started()) - released:
                Event(f"gpu-{i}").set()
                released.add(i)
        assert sorted(c.gather(fs, timeout=30)) == [0, 1, 2, 3]
    running = peak = 0
    for line in open(log).read().splitlines():
        running += 1 if line.startswith("start") else -1
        peak = max(peak, running)
    assert peak == 2, open(log).read()


def child_with_gpu() -> str:
    return get_client().submit(os.getpid, resources={"GPU": 1}, pure=False).result(timeout=30) \
        and "ran"


def test_tasks_from_tasks_ask_for_resources_and_unsatisfiable_ones_warn(caplog):
    with LocalCluster(n_workers=1, threads_per_worker=1, resources={"GPU": 1},
                      processes=False) as cl, Client(cl) as c:
        assert c.submit(child_with_gpu).result(timeout=30) == "ran"
        with caplog.at_level(logging.WARNING, logger="tasknest.client"):
            never = c.submit(os.getpid, resources={"TPU": 1})
            wait_until(lambda: "no worker has" in caplog.text, 20,
                       message="the client warns of the unsatisfiable request")
        with pytest.raises(TimeoutError):
            never.result(timeout=0.1)
        with pytest.raises(CallerError):
            c.submit(os.getpid, resources={"GPU": -1})
