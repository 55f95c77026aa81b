"""Coordination primitives: the scheduler's records (pure, with validate() after every
event), then Queue, Event, Lock, Semaphore, Variable and datasets over real processes."""
from __future__ import annotations

import os
import signal

import pytest

from conftest import wait_for_file, wait_until
from tasknest import (CallerError, Client, Event, LocalCluster, Lock, Queue, Semaphore,
                      Variable)
from tasknest.protocol import messages as m
from tasknest.scheduler.state import SchedulerState

pytestmark = pytest.mark.timeout(60)


# == the scheduler's records ===========================================================
def sched() -> SchedulerState:
    s = SchedulerState()
    s.add_client("c-1")
    s.add_client("c-2")
    s.add_worker("w-1", "tcp://127.0.0.1:9001", "w-1", 1, 1, 0, [], 0.0)
    return s


def coord(s: SchedulerState, source: str, rid: int, kind: str, name: str, action: str,
          holder: str = "", value: list | None = None, keys: list | None = None,
          arg: object = None) -> list:
    out = s.handle(source, m.Coord(rid=rid, kind=kind, name=name, action=action, holder=holder, value=value, keys=keys or [], arg=arg))
    s.validate()
    return [(t, msg.rid, msg.value, msg.error) for t, msg in out if msg.op == "reply"]


def test_queue_get_waits_for_a_put_and_is_served_in_order():
    s = sched()
    assert coord(s, "c-1", 1, "queue", "q", "get") == []
    assert coord(s, "c-2", 1, "queue", "q", "put", value=[b"a"]) == [
        ("c-2", 1, True, None), ("c-1", 1, {"value": [b"a"], "keys": []}, None)]
    coord(s, "c-2", 2, "queue", "q", "put", value=[b"b"])
    coord(s, "c-2", 3, "queue", "q", "put", value=[b"c"])
    assert coord(s, "w-1", 1, "queue", "q", "get", arg=2) == [
        ("w-1", 1, {"batch": [[b"b"], [b"c"]], "keys": []}, None)]
    assert not s.coordination.queues


def test_a_future_in_a_queue_is_held_until_a_getter_holds_it():
    s = sched()
    s.handle("c-1", m.Submit(key="k", func=1, args=b"", deps=[], priority=[0, 0, 0], retries=0, workers=None, resources=None, loose=False))
    s.handle("w-1", m.TaskFinished(key="k", nbytes=8, type="int", value=None, inner=[], notified=[], attempt=1))
    coord(s, "c-1", 1, "queue", "q", "put", value=[b"f"], keys=["k"])
    s.handle("c-1", m.Release(keys=["k"]))          # the putter lets go: the queue holds it
    s.validate()
    assert s.tasks["k"].state == "memory"
    coord(s, "c-2", 1, "queue", "q", "get")
    assert s.tasks["k"].who_wants == {"c-2"}   # the getter holds it before it hears
    out = s.handle("c-2", m.Release(keys=["k"]))
    s.validate()
    assert ("w-1", m.Free(keys=["k"])) in out and "k" not in s.tasks


def test_abandoned_wait_is_answered_timeout_unless_granted_first():
    s = sched()
    coord(s, "c-1", 1, "event", "e", "wait")
    assert coord(s, "c-1", 1, "event", "e", "abandon") == [("c-1", 1, {"timeout": True}, None)]
    assert coord(s, "c-2", 1, "event", "e", "set") == [("c-2", 1, True, None)]
    coord(s, "c-1", 2, "event", "e", "wait")
    # granted already: the abandon is not answered (the grant is on its way)
    assert coord(s, "c-1", 2, "event", "e", "abandon") == []


def test_semaphore_leases_go_with_the_connection_that_took_them():
    s = sched()
    assert coord(s, "w-1", 1, "semaphore", "s", "acquire", "L1", arg=1) == [("w-1", 1, True, None)]
    assert coord(s, "c-1", 1, "semaphore", "s", "acquire", "L2", arg=1) == []
    out = s.remove_worker("w-1", "killed")
    s.validate()
    assert ("c-1", m.Reply(rid=1, value=True, error=None)) in out
    assert coord(s, "c-2", 1, "semaphore", "s", "acquire", "L3", arg=2)[0][3]   # 1 != 2 leases
    assert coord(s, "c-2", 2, "semaphore", "s", "release", "L2")[0][3]   # not c-2's lease
    assert coord(s, "c-1", 2, "semaphore", "s", "release", "L2") == [("c-1", 2, True, None)]
    assert not s.coordination.semaphores


def test_waiters_of_a_client_that_leaves_are_dropped():
    s = sched()
    coord(s, "c-1", 1, "queue", "q", "get")
    coord(s, "c-1", 2, "variable", "v", "get")
    coord(s, "c-1", 3, "event", "e", "wait")
    s.remove_client("c-1")
    s.validate()
    assert not s.coordination.queues and not s.coordination.var_waiters \
        and not s.coordination.event_waiters


def test_variable_and_dataset_hold_their_futures_until_replaced_or_dropped():
    s = sched()
    for key in ("a", "b"):
        s.handle("c-1", m.Submit(key=key, func=1, args=b"", deps=[], priority=[0, 0, 0], retries=0, workers=None, resources=None, loose=False))
        s.handle("c-1", m.Release(keys=[key]))
    s.validate()
    s.handle("c-1", m.Submit(key="a", func=1, args=b"", deps=[], priority=[0, 0, 0], retries=0, workers=None, resources=None, loose=False))
    s.handle("c-1", m.Submit(key="b", func=1, args=b"", deps=[], priority=[0, 0, 0], retries=0, workers=None, resources=None, loose=False))
    coord(s, "c-1", 1, "variable", "v", "set", value=[b"a"], keys=["a"])
    coord(s, "c-1", 2, "dataset", "d", "publish", value=[b"b"], keys=["b"])
    assert coord(s, "c-1", 3, "dataset", "d", "publish", value=[b"x"]) == [
        ("c-1", 3, {"exists": True}, None)]
    s.handle("c-1", m.Release(keys=["a", "b"]))
    s.validate()
    assert set(s.tasks) == {"a", "b"}
    coord(s, "c-1", 4, "variable", "v", "set", value=[b"1"])       # replaced: a goes
    coord(s, "c-1", 5, "dataset", "d", "unpublish")
    assert not s.tasks and not s.coordination.held
    assert coord(s, "c-1", 6, "dataset", "d", "get") == [("c-1", 6, {"missing": True}, None)]


def test_nonsense_requests_are_answered_with_an_error():
    s = sched()
    assert coord(s, "c-1", 1, "nope", "x", "get")[0][3]
    assert coord(s, "c-1", 2, "queue", "x", "get", arg="many")[0][3]
    assert coord(s, "c-1", 3, "semaphore", "x", "acquire", "L", arg=0)[0][3]


# == over real processes ================================================================
def producer(n: int) -> str:
    q = Queue("pc")
    for i in range(n):
        q.put(i)
    return "produced"


def consumer(n: int) -> int:
    q = Queue("pc")
    return sum(q.get(timeout=30) for _ in range(n))


@pytest.fixture(scope="module")
def one_thread():
    """One worker with one thread: a task that waits must lend its slot."""
    with LocalCluster(n_workers=1, threads_per_worker=1) as c:
        yield c


def test_producer_and_consumer_tasks_talk_through_a_queue_on_one_thread(one_thread):
    with Client(one_thread) as c:
        got = c.submit(consumer, 20, pure=False)
        made = c.submit(producer, 20, pure=False)
        assert got.result(timeout=30) == sum(range(20))
        assert made.result(timeout=30) == "produced"


def test_futures_through_a_queue_keep_their_results(client):
    q = Queue("futures")
    q.put(client.submit(pow, 2, 10))
    q.put([client.submit(pow, 3, 2)])
    del_me = q.get(timeout=10)
    assert del_me.result(timeout=10) == 1024 and del_me.client is client
    assert client.gather(q.get(timeout=10)) == [9]
    with pytest.raises(TimeoutError):
        q.get(timeout=0.05)


def wait_on_event(started: str) -> bool:
    open(started, "w").close()
    return Event("go").wait(timeout=30)


def test_a_task_waits_on_an_event_set_from_the_client(client, tmp_path):
    started = str(tmp_path / "started")
    f = client.submit(wait_on_event, started)
    wait_until(lambda: os.path.exists(started), 20, message="the task runs")
    assert not f.done()                     # it waits: nobody has set the event
    Event("go").set()
    assert f.result(timeout=30) is True
    assert Event("go").is_set()
    Event("go").clear()
    assert Event("go").wait(timeout=0) is False


def hold_lock(path: str, tag: str, rounds: int) -> str:
    lock = Lock("file")
    for _ in range(rounds):
        with lock:
            with open(path, "a") as fh:
                fh.write(f"in {tag}\n")
                fh.flush()
                os.fsync(fh.fileno())
            with open(path, "a") as fh:
                fh.write(f"out {tag}\n")
    return tag


def test_a_lock_held_by_two_tasks_in_turn_never_overlaps(client, tmp_path):
    path = str(tmp_path / "log")
    fs = [client.submit(hold_lock, path, tag, 30, workers=[w["address"]])
          for tag, w in zip("ab", client.scheduler_info()["workers"].values())]
    assert client.gather(fs, timeout=40) == ["a", "b"]
    lines = open(path).read().split("\n")[:-1]
    assert len(lines) == 120
    for i in range(0, len(lines), 2):
        tag = lines[i].split()[1]
        assert lines[i] == f"in {tag}" and lines[i + 1] == f"out {tag}", lines[i:i + 2]


def test_lock_and_semaphore_from_the_client():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False) as cl, \
            Client(cl) as c:
        lock = Lock("x")
        assert lock.acquire() and lock.locked()
        assert Lock("x").acquire(blocking=False) is False
        lock.release()
        assert not lock.locked()
        with pytest.raises(CallerError):
            lock.release()
        sem = Semaphore(2, "s")
        assert sem.acquire() and sem.acquire() and not sem.acquire(timeout=0.05)
        assert sem.get_value() == 2
        sem.release()
        assert Semaphore(2, "s").acquire(timeout=5)
        v = Variable("v")
        with pytest.raises(TimeoutError):
            v.get(timeout=0.05)
        v.set(c.submit(sum, [1, 2]))
        assert v.get(timeout=5).result(timeout=10) == 3
        v.delete()
        c.publish_dataset(total=c.submit(sum, [4, 5]), plain=7)
        assert sorted(c.list_datasets()) == ["plain", "total"]
        assert c.get_dataset("total").result(timeout=10) == 9 and c.get_dataset("plain") == 7
        with pytest.raises(CallerError):
            c.publish_dataset(plain=8)
        c.unpublish_dataset("plain")
        c.unpublish_dataset("total")
        with pytest.raises(KeyError):
            c.get_dataset("plain")
        assert c.get_dataset("plain", default=None) is None


def hold_semaphore(pid_file: str, marker: str, never: str) -> str:
    if os.path.exists(marker):       # the rerun after the kill: leave the lease alone
        return "rerun"
    assert Semaphore(1, "killed").acquire(timeout=20)
    with open(pid_file, "w") as fh:
        fh.write(str(os.getpid()))
    wait_for_file(never, timeout=50)
    return "never"


def test_a_semaphore_whose_holders_worker_is_killed_is_released(tmp_path):
    pid_file, marker = str(tmp_path / "pid"), str(tmp_path / "marker")
    with LocalCluster(n_workers=2, threads_per_worker=1) as cl, Client(cl) as c:
        f = c.submit(hold_semaphore, pid_file, marker, str(tmp_path / "never"))
        wait_until(lambda: os.path.exists(pid_file) and open(pid_file).read(), 20,
                   message="the task holds the lease")
        sem = Semaphore(1, "killed")
        assert sem.acquire(timeout=0.05) is False
        open(marker, "w").close()
        os.kill(int(open(pid_file).read()), signal.SIGKILL)
        assert sem.acquire(timeout=30) is True
        assert f.result(timeout=30) == "rerun"
        sem.release()
