"""The scheduler's components, each against a fake core: the few records and
transitions a component may use, and nothing else (so a component that reaches
further into SchedulerState fails here)."""
from __future__ import annotations

from typing import Any

import pytest

from tasknest.protocol import messages as m
from tasknest.scheduler.loss import Losses
from tasknest.scheduler.queries import Queries
from tasknest.scheduler.records import Task, WorkerInfo
from tasknest.scheduler.scatter import Scatters
from tasknest.scheduler.stealing import Stealing

pytestmark = pytest.mark.timeout(30)


class FakeCore:
    """The narrow interface components see: records, register, _emit and the few
    transitions they call, recorded instead of carried out."""

    def __init__(self, nworkers: int = 2) -> None:
        self.tasks: dict[str, Task] = {}
        self.workers: dict[str, WorkerInfo] = {}
        self.clients: dict[str, set[str]] = {"c-1": set()}
        self.idle: set[str] = set()
        self.paused: set[str] = set()
        self.components: list[Any] = []
        self.handlers: dict[str, Any] = {}
        self.out: list[tuple[str, Any]] = []
        self.calls: list[tuple] = []
        for i in range(nworkers):
            wid = f"w-{i}"
            self.workers[wid] = WorkerInfo(wid, f"tcp://h:{i}", f"n{i}", 1, 100 + i, 0, 0.0)

    def register(self, op: str, handler: Any) -> None:
        self.handlers[op] = handler

    def feed(self, source: str, msg: Any) -> list[tuple[str, Any]]:
        self.handlers[msg.op](source, msg)
        out, self.out = self.out, []
        return out

    def _emit(self, target: str, msg: Any) -> None:
        self.out.append((target, msg))

    def _next_workers(self, k: int) -> list[WorkerInfo]:
        return list(self.workers.values())[:k]

    def _candidates(self, ts: Task) -> list[WorkerInfo]:
        return list(self.workers.values())

    def _set_processing(self, ts: Task, ws: WorkerInfo) -> None:
        ts.state, ts.processing_on = "processing", ws.id
        ws.processing.add(ts.key)
        self.calls.append(("processing", ts.key, ws.id))

    def _send_compute(self, ts: Task, ws: WorkerInfo) -> None:
        self.calls.append(("compute", ts.key, ws.id))

    def _assign(self, ts: Task) -> None:
        self.calls.append(("assign", ts.key))

    def _want(self, ts: Task, cid: str) -> None:
        ts.who_wants.add(cid)
        self.clients.setdefault(cid, set()).add(ts.key)

    def _add_replica(self, ts: Task, ws: WorkerInfo) -> None:
        ts.who_has = ts.who_has | {ws.id}
        ws.has_what.add(ts.key)

    def _memory_reached(self, ts: Task, source: str) -> None:
        self.calls.append(("memory", ts.key))

    def _needed(self, ts: Task) -> bool:
        return bool(ts.who_wants)

    def _drop_client(self, cid: str) -> None:
        self.clients.pop(cid, None)
        self.calls.append(("drop", cid))


def queue(core: FakeCore, wid: str, n: int) -> list[Task]:
    tasks = []
    for i in range(n):
        ts = Task(f"t{i}", b"f", b"a", [], [0, 1, -i])
        core.tasks[ts.key] = ts
        core._set_processing(ts, core.workers[wid])
        tasks.append(ts)
    core.calls.clear()
    return tasks


def test_stealing_asks_the_busy_worker_and_hands_the_task_to_the_thief() -> None:
    core = FakeCore()
    stealing = Stealing(core)               # type: ignore[arg-type]
    queue(core, "w-0", 6)
    out = core.feed("w-1", m.Idle())
    asked = [msg.key for target, msg in out if msg.op == "steal"]
    assert asked and all(target == "w-0" for target, _ in out)
    assert core.workers["w-1"].asked == len(asked)
    stealing.validate()
    core.feed("w-0", m.StealReply(key=asked[0], ok=True, later=False))
    assert ("compute", asked[0], "w-1") in core.calls
    assert core.tasks[asked[0]].processing_on == "w-1"
    assert core.workers["w-1"].asked == len(asked) - 1
    stealing.validate()


def test_stealing_forgets_requests_of_a_lost_thief_or_victim() -> None:
    core = FakeCore(3)
    stealing = Stealing(core)               # type: ignore[arg-type]
    queue(core, "w-0", 8)
    core.feed("w-1", m.Idle())
    asked = set(stealing.steals)
    assert asked
    del core.workers["w-1"]                 # the thief dies: its tasks stay where they are
    stealing.worker_lost("w-1")
    assert not stealing.steals
    assert not any(core.tasks[k].stealing for k in asked)
    stealing.validate()
    core.feed("w-2", m.Idle())
    assert stealing.steals and core.workers["w-2"].asked
    del core.workers["w-0"]                 # the victim dies: no answer will come
    stealing.worker_lost("w-0")
    assert not stealing.steals and core.workers["w-2"].asked == 0
    stealing.validate()


def test_a_running_task_refused_is_never_asked_for_again() -> None:
    core = FakeCore()
    stealing = Stealing(core)               # type: ignore[arg-type]
    queue(core, "w-0", 4)
    out = core.feed("w-1", m.Idle())
    key = next(msg.key for _, msg in out if msg.op == "steal")
    core.feed("w-0", m.StealReply(key=key, ok=False, later=False))
    assert core.tasks[key].started and core.tasks[key].processing_on == "w-0"
    stealing.validate()


def test_queries_wait_for_every_worker_to_sync_and_a_lost_one_stops_the_wait() -> None:
    core = FakeCore(2)
    queries = Queries(core)                 # type: ignore[arg-type]
    out = core.feed("c-1", m.Query(rid=7, what="has_what", arg=None))
    assert sorted(target for target, msg in out if msg.op == "sync") == ["w-0", "w-1"]
    rid = out[0][1].rid
    assert core.feed("w-0", m.Synced(rid=rid)) == []
    queries.validate()
    del core.workers["w-1"]
    queries.worker_lost("w-1")
    (target, reply), = core.out
    assert target == "c-1" and reply.op == "reply" and reply.rid == 7
    assert reply.value == {"tcp://h:0": []} and reply.error is None
    queries.validate()


def test_scatter_spreads_keys_and_answers_once_every_worker_stored_them() -> None:
    core = FakeCore(2)
    scatters = Scatters(core)               # type: ignore[arg-type]
    out = core.feed("c-1", m.Scatter(rid=3, keys=["a", "b", "c", "d"], values=[[b"1"], [b"2"], [b"3"], [b"4"]], broadcast=False, workers=[]))
    puts = {target: msg for target, msg in out}
    assert set(puts) == {"w-0", "w-1"} and all(len(p.keys) == 2 for p in puts.values())
    answers = []
    for wid, put in puts.items():
        answers += core.feed(wid, m.PutDataDone(rid=put.rid, keys=put.keys, nbytes=[1] * len(put.keys)))
    (target, reply), = answers             # one answer, once every worker stored its part
    assert target == "c-1" and reply.rid == 3 and reply.value == ["a", "b", "c", "d"]
    assert all(core.tasks[k].state == "memory" for k in "abcd")
    assert core.clients["c-1"] == set("abcd")
    assert not scatters.pending
    scatters.validate()


def test_a_scatter_to_a_worker_that_dies_answers_with_an_error() -> None:
    core = FakeCore(2)
    scatters = Scatters(core)               # type: ignore[arg-type]
    out = core.feed("c-1", m.Scatter(rid=4, keys=["a", "b"], values=[[b"1"], [b"2"]], broadcast=False, workers=[]))
    assert len(out) == 2
    ws = core.workers.pop("w-1")
    scatters.worker_lost(ws, "killed")
    put = dict(out)["w-0"]
    (target, reply), = core.feed("w-0", m.PutDataDone(rid=put.rid, keys=put.keys, nbytes=[1]))
    assert target == "c-1" and reply.rid == 4
    assert reply.error and "died during the scatter" in reply.error and "killed" in reply.error
    assert not scatters.pending


def test_a_planned_scatter_says_where_and_forwards_only_what_a_worker_still_waits_for() -> None:
    core = FakeCore(2)
    scatters = Scatters(core)               # type: ignore[arg-type]
    (target, to), = core.feed("c-1", m.ScatterPlan(rid=5, keys=["a", "b"], broadcast=True, workers=None))
    assert target == "c-1" and to.op == "scatter-to" and to.rid == 5
    assert to.plan == {"tcp://h:0": [0, 1], "tcp://h:1": [0, 1]}    # every worker, every value
    assert core.feed("w-0", m.PutDataDone(rid=to.id, keys=["a", "b"], nbytes=[1, 1])) == []
    # the client could not reach w-1: the scheduler forwards its part, the old way
    (target, put), = core.feed("c-1", m.ScatterVia(id=to.id, worker="tcp://h:1", keys=["a", "b"], values=[[b"1"], [b"2"]]))
    assert target == "w-1" and put.op == "put-data" and put.rid == to.id
    assert core.feed("c-1", m.ScatterVia(id=to.id, worker="tcp://h:0", keys=["a"], values=[[b"1"]])) == []
    (target, reply), = core.feed("w-1", m.PutDataDone(rid=to.id, keys=["a", "b"], nbytes=[1, 1]))
    assert target == "c-1" and reply.rid == 5 and reply.value == ["a", "b"] and reply.error is None
    assert core.tasks["a"].who_has == {"w-0", "w-1"} and not scatters.pending
    assert core.feed("c-1", m.ScatterVia(id=to.id, worker="tcp://h:1", keys=["a"], values=[[b"1"]])) == []
    scatters.validate()


def test_a_lost_worker_s_wants_are_held_until_its_rerun_tasks_are_done() -> None:
    core = FakeCore()
    losses = Losses(core)                   # type: ignore[arg-type]
    parent, child = Task("parent", b"f", b"a", [], [0, 1, 0]), Task("child", b"f", b"a", [], [0, 2, 0])
    core.tasks.update(parent=parent, child=child)
    parent.state, parent.who_wants = "waiting", {"c-1"}      # rerun elsewhere, still wanted
    child.who_wants = {"w-0"}                                 # submitted by parent on w-0
    core.clients["w-0"] = {"child"}
    losses.hold_orphans("w-0", [parent])
    assert core.clients["!w-0"] == {"child"} and "w-0" not in core.clients
    assert child.who_wants == {"!w-0"} and losses.orphans == {"!w-0": {"parent"}}
    losses.release_orphans()                 # the parent has not finished: still held
    assert "!w-0" in core.clients and ("drop", "!w-0") not in core.calls
    parent.state = "memory"
    losses.release_orphans()
    assert not losses.orphans and ("drop", "!w-0") in core.calls


def test_a_lost_worker_with_no_wants_or_no_rerun_parent_holds_nothing() -> None:
    core = FakeCore()
    losses = Losses(core)                   # type: ignore[arg-type]
    done = Task("done", b"f", b"a", [], [0, 1, 0])
    done.state = "memory"
    core.clients["w-0"] = {"x"}
    losses.hold_orphans("w-0", [done])
    assert not losses.orphans and ("drop", "w-0") in core.calls


def test_only_the_tasks_a_lost_worker_may_have_started_are_suspected() -> None:
    core = FakeCore()
    losses = Losses(core)                   # type: ignore[arg-type]
    tasks = queue(core, "w-0", 4)            # priorities [0, 1, -i]: t3 first, then t2 ...
    ws = core.workers["w-0"]
    tasks[0].running = True                  # reported running
    assert losses._maybe_started(ws) == {"t0", "t3"}    # one thread: the best queued one too
    ws.seceded = 1                           # a seceded thread lets one more run inline
    assert losses._maybe_started(ws) == {"t0", "t3", "t2"}
