"""Graceful retirement: a retiring worker's results move, its running tasks finish,
nothing is computed twice (executions are counted through a file)."""
from __future__ import annotations

import os
import signal
import threading

import pytest

from tasknest import Client, LocalCluster
from tasknest.errors import CallerError

from conftest import wait_for_file, wait_until


def counted(x, log):
    with open(log, "a") as f:
        f.write(f"{x}\n")
    return x * 10


def slow_counted(x, log, flag):
    wait_for_file(flag)
    return counted(x, log)


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().split()


def retiring_now(c):
    from tasknest.protocol import messages as m
    rows = c._request(m.Query(rid=0, what="demand", arg=None), 10)["workers"]
    return [w["name"] for w in rows if w["retiring"]]


def addresses_by_name(c):
    return {w["name"]: a for a, w in c.scheduler_info(-1)["workers"].items()}


@pytest.mark.timeout(90)
def test_retire_moves_results_and_drains_running_tasks(tmp_path):
    log, flag = str(tmp_path / "log"), str(tmp_path / "go")
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as c:
        by_name = addresses_by_name(c)
        held = c.submit(counted, 1, log, workers=["local-0"])       # only local-0 holds it
        assert held.result(timeout=30) == 10
        running = c.submit(slow_counted, 2, log, flag, workers=["local-0"], pure=False)
        wait_until(lambda: c.processing()[by_name["local-0"]], 20, message="task assigned")
        answer: list = []
        retiring = threading.Thread(target=lambda: answer.append(
            c.retire_workers(["local-0"], timeout=60)))
        retiring.start()
        wait_until(lambda: retiring_now(c) == ["local-0"], 20, message="retirement begun")
        # while it drains it gets nothing new: this goes to local-1
        other = c.submit(counted, 3, log)
        assert other.result(timeout=30) == 30
        assert c.who_has(other)[other.key] == [by_name["local-1"]]
        open(flag, "w").close()           # let the running task finish
        retiring.join(60)
        assert answer == [[by_name["local-0"]]]
        assert running.result(timeout=30) == 20
        assert list(c.scheduler_info(-1)["workers"]) == [by_name["local-1"]]
        # the result only local-0 held moved to local-1 and was not recomputed
        assert c.who_has(held)[held.key] == [by_name["local-1"]]
        assert c.submit(lambda v: v + 1, held).result(timeout=30) == 11
        assert sorted(lines(log)) == ["1", "2", "3"]


@pytest.mark.timeout(60)
def test_retire_timeout_ends_the_drain_and_the_task_runs_elsewhere(tmp_path):
    log, flag = str(tmp_path / "log"), str(tmp_path / "go")
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as c:
        by_name = addresses_by_name(c)
        stuck = c.submit(slow_counted, 4, log, flag, workers=["local-0"],
                         allow_other_workers=True, pure=False)
        wait_until(lambda: c.processing()[by_name["local-0"]], 20, message="task assigned")
        assert c.retire_workers("local-0", timeout=0.5) == [by_name["local-0"]]
        open(flag, "w").close()
        assert stuck.result(timeout=30) == 40          # run again on local-1
        with pytest.raises(CallerError):
            c.retire_workers([])
        assert c.retire_workers(["no-such-worker"]) == []


@pytest.mark.timeout(60)
def test_sigterm_retires_the_worker_and_keeps_its_results(tmp_path):
    log = str(tmp_path / "log")
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as c:
        by_name = addresses_by_name(c)
        held = c.submit(counted, 5, log, workers=["local-0"])
        assert held.result(timeout=30) == 50
        proc = cluster.worker_procs[0]
        proc.send_signal(signal.SIGTERM)            # (its nanny passes it on)
        assert proc.wait(30) == 0
        assert list(c.scheduler_info(-1)["workers"]) == [by_name["local-1"]]
        assert c.submit(lambda v: v + 1, held).result(timeout=30) == 51
        assert lines(log) == ["5"]


def test_retirement_state_machine_copies_then_closes():
    """The scheduler's part alone, message by message, with validate() after each."""
    from tasknest.protocol import messages as m
    from tasknest.scheduler.state import SchedulerState

    st = SchedulerState()
    st.add_client("c-1")
    st.add_worker("w-a", "tcp://a:1", "a", 1, 1, 0, [], 0.0)
    st.add_worker("w-b", "tcp://b:1", "b", 1, 2, 0, [], 0.0)
    out = st.handle("c-1", m.Submit(key="k", func=1, args=b"", deps=[], priority=[0, 0, 0], retries=0, workers=["a"], resources=None, loose=False))
    attempt = next(msg.attempt for t, msg in out if msg.op == "compute")
    st.handle("w-a", m.TaskFinished(key="k", nbytes=8, type="int", value=None, inner=[], notified=[], attempt=attempt))
    st.validate()
    out = st.handle("c-1", m.Retire(rid=7, workers=["a"], timeout_ms=30000))
    st.validate()
    assert [(t, msg.op) for t, msg in out] == [("w-b", "replicate")]
    rep = out[0][1]
    assert rep.keys == ["k"] and rep.source == "tcp://a:1"
    # while it retires, new work goes elsewhere, even when asked for there loosely
    out = st.handle("c-1", m.Submit(key="j", func=1, args=b"", deps=[], priority=[0, 0, 1], retries=0, workers=["a"], resources=None, loose=True))
    assert [t for t, msg in out if msg.op == "compute"] == ["w-b"]
    out = st.handle("w-b", m.Replicated(rid=rep.rid, keys=["k"], nbytes=[8]))
    st.validate()
    assert ("w-a", "close") in [(t, msg.op) for t, msg in out]
    assert st.tasks["k"].who_has == {"w-a", "w-b"}
    out = st.remove_worker("w-a", "retired")
    st.validate()
    assert [(t, msg.op, msg.value) for t, msg in out if msg.op == "reply"] == \
        [("c-1", "reply", ["tcp://a:1"])]
    assert st.tasks["k"].state == "memory" and st.tasks["k"].who_has == {"w-b"}


@pytest.mark.timeout(60)
def test_lifetime_retires_a_worker_and_hands_its_results_over(tmp_path):
    log = str(tmp_path / "log")
    with LocalCluster(n_workers=1, threads_per_worker=1) as cluster, Client(cluster) as c:
        short = cluster.add_worker(name="short")     # (the nanny passes the options on)
        cluster.worker_procs.remove(short)
        c.wait_for_workers(2, timeout=30)
        cluster.worker_args = []
        held = c.submit(counted, 9, log, workers=["short"], allow_other_workers=True)
        assert held.result(timeout=30) == 90
        assert short.poll() is None
        short.send_signal(signal.SIGINT)              # SIGINT: at once, no drain
        assert short.wait(30) == 0
        assert c.submit(lambda v: v + 1, held).result(timeout=30) == 91
        assert lines(log) == ["9", "9"]               # lost with it: computed again
        cluster.worker_args = ["--lifetime", "3"]
        lived = cluster.add_worker(name="brief")
        c.wait_for_workers(2, timeout=30)
        kept = c.submit(counted, 8, log, workers=["brief"], allow_other_workers=True)
        assert kept.result(timeout=30) == 80
        assert lived.wait(30) == 0                    # it retired by itself, not restarted
        assert c.submit(lambda v: v + 1, kept).result(timeout=30) == 81
        assert lines(log) == ["9", "9", "8"]          # handed over, not computed again
