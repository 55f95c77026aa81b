"""The scheduler's components, each against a fake core: the few records and
transitions a component may use, and nothing else (so a component that reaches
further into SchedulerState fails here)."""
from __future__ import annotations

from typing import Any

import pytest

from tasknest.protocol import messages as m
from tasknest.scheduler.coordination import Coordination
from tasknest.scheduler.loss import Losses
from tasknest.scheduler.operations import SCHEDULER, Operations
from tasknest.scheduler.placing import Placing
from tasknest.scheduler.queries import Queries
from tasknest.scheduler.records import UNCOUNTED, Task, WorkerInfo
from tasknest.scheduler.retirement import Retirement
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
        self.alone: dict[str, frozenset] = {}
        self.idle: set[str] = set()
        self.paused: set[str] = set()
        self.components: list[Any] = []
        self.handlers: dict[str, Any] = {}
        self.out: list[tuple[str, Any]] = []
        self.calls: list[tuple] = []
        self._attempts = 0
        self.stealing = FakeStealing(self.calls)
        self._handlers = self.handlers          # (retirement wraps the core's "paused")
        self.handlers["paused"] = lambda wid, msg: self.calls.append(("paused", wid))
        for i in range(nworkers):
            wid = f"w-{i}"
            self.workers[wid] = WorkerInfo(wid, f"tcp://h:{i}", f"n{i}", 1, 100 + i, 0, 0.0)
        self.addresses = {ws.address: wid for wid, ws in self.workers.items()}

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
        ts.who_wants = set(ts.who_wants) | {cid}
        self.clients.setdefault(cid, set()).add(ts.key)

    def _add_replica(self, ts: Task, ws: WorkerInfo) -> None:
        ts.who_has = ts.who_has | {ws.id}
        ws.has_what.add(ts.key)

    def _memory_reached(self, ts: Task, source: str) -> None:
        self.calls.append(("memory", ts.key))

    def _needed(self, ts: Task) -> bool:
        return bool(ts.who_wants)

    def _forget_holder(self, holder: str) -> set[str]:
        self.alone.pop(holder, None)
        return self.clients.pop(holder, set())

    def _drop_client(self, cid: str) -> None:
        self.clients.pop(cid, None)
        self.calls.append(("drop", cid))

    def _unwant(self, ts: Task, cid: str) -> None:
        ts.who_wants = set(ts.who_wants) - {cid}
        self.clients.get(cid, set()).discard(ts.key)
        self.calls.append(("unwant", ts.key, cid))

    def _maybe_release(self, ts: Task) -> None:
        self.calls.append(("maybe-release", ts.key))

    def _submitted(self, cid: str, key: str, func: Any, args: Any, deps: list, priority: list,
                   retries: int, restrict: list | None) -> None:
        self.calls.append(("submitted", key, restrict))

    def _report(self, ts: Task, cid: str) -> None:
        self.calls.append(("report", ts.key, cid))

    def _task_done(self, ts: Task, ws: WorkerInfo, nbytes: int, type_name: str, value: Any,
                   inner: list, notified: list) -> None:
        ts.state = "memory"
        self.calls.append(("done", ts.key, ws.id))

    def _recompute(self, ts: Task) -> None:
        self.calls.append(("recompute", ts.key))

    def _err(self, ts: Task, exception: list, traceback: str, kind: str) -> None:
        ts.state = "erred"
        self.calls.append(("err", ts.key, kind))

    def _flush(self) -> list[tuple[str, Any]]:
        out, self.out = self.out, []
        return out


class FakeStealing:
    """What components ask of stealing, recorded."""

    def __init__(self, calls: list[tuple]) -> None:
        self.calls = calls

    def offer(self, wid: str) -> None:
        self.calls.append(("offer", wid))

    def ask(self, ts: Task, thief: WorkerInfo, victim: WorkerInfo) -> None:
        self.calls.append(("ask", ts.key, thief.id, victim.id))


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


# -- placing -----------------------------------------------------------------------------
def placed(key: str, worker: str = "tcp://h:0", seq: int = 1, nbytes: int = m.NOT_YET,
           pinned: bool = False) -> m.Placed:
    return m.Placed(key=key, func=b"f", args=b"a", priority=[0, 1, 0], retries=0,
                    worker=worker, seq=seq, nbytes=nbytes, type="", pinned=pinned)


def test_a_placed_task_is_counted_where_it_runs_and_confirmed_with_its_attempt() -> None:
    core = FakeCore()
    placing = Placing(core)                 # type: ignore[arg-type]
    (target, confirm), = core.feed("c-1", placed("p", seq=3))
    ts = core.tasks["p"]
    assert target == "w-0" and confirm == m.Confirm(key="p", client="c-1", seq=3,
                                                   attempt=ts.attempt)
    assert ts.attempt == 1 and ts.placed == ("c-1", 1) and "c-1" in ts.who_wants
    assert ("processing", "p", "w-0") in core.calls and placing.placers == {"c-1": 3}
    # the result reached the client before the placed: the task is done at once
    core.feed("c-1", placed("q", seq=4, nbytes=8))
    assert ("done", "q", "w-0") in core.calls and core.tasks["q"].state == "memory"
    placing.source_gone("c-1")
    assert placing.placers == {}


def test_a_placed_copy_of_a_task_running_elsewhere_is_dropped_and_one_on_a_gone_worker_resubmitted() -> None:
    core = FakeCore()
    Placing(core)                           # type: ignore[arg-type]
    ts = core.tasks["k"] = Task("k", b"f", b"a", [], [0, 1, 0])
    core._set_processing(ts, core.workers["w-1"])
    ts.attempt = 5
    (target, confirm), = core.feed("c-1", placed("k", worker="tcp://h:0"))
    assert target == "w-0" and confirm.attempt == UNCOUNTED     # the copy there goes
    assert ("report", "k", "c-1") in core.calls and "c-1" in ts.who_wants
    assert core.feed("c-1", placed("x", worker="tcp://h:9", pinned=True)) == []
    assert ("submitted", "x", ["!tcp://h:9"]) in core.calls and "x" not in core.tasks


def test_a_lost_lane_sends_its_placed_tasks_the_usual_way_and_a_copy_never_come_is_rerun() -> None:
    core = FakeCore()
    Placing(core)                           # type: ignore[arg-type]
    core.feed("c-1", placed("p", seq=1))
    core.feed("c-1", placed("q", seq=2))
    core.calls.clear()
    (target, withdraw), = core.feed("c-1", m.LaneLost(worker="tcp://h:0"))
    assert target == "w-0" and withdraw == m.Withdraw(client="c-1", upto=2)
    assert sorted(c for c in core.calls if c[0] == "compute") == [
        ("compute", "p", "w-0"), ("compute", "q", "w-0")]
    ts = core.tasks["p"]
    assert core.feed("w-0", m.NotHere(key="p", attempt=ts.attempt + 1)) == []   # an older run
    assert ts.state == "processing"
    core.feed("w-0", m.NotHere(key="p", attempt=ts.attempt))
    assert ts.state == "released" and ts.processing_on is None
    assert "p" not in core.workers["w-0"].processing and ("recompute", "p") in core.calls


# -- operations ----------------------------------------------------------------------------
def test_a_run_answers_once_every_worker_did_and_a_dying_one_answers_with_an_error() -> None:
    core = FakeCore(2)
    ops = Operations(core)                  # type: ignore[arg-type]
    out = core.feed("c-1", m.Run(rid=9, call=b"fn", workers=None, where="workers", plugin=""))
    assert sorted(t for t, msg in out if msg.op == "run-on") == ["w-0", "w-1"]
    rid = out[0][1].rid
    assert core.feed("w-0", m.RunDone(rid=rid, ok=True, value=[b"r"])) == []
    ops.validate()
    ops.source_gone("w-1")                  # called before the state forgets it
    (target, reply), = core.out
    assert target == "c-1" and reply.rid == 9 and reply.error is None
    assert reply.value == {"tcp://h:0": [True, [b"r"]], "tcp://h:1": [False, []]}
    assert not ops.runs
    core.out.clear()
    (target, reply), = core.feed("c-1", m.Run(rid=10, call=b"fn", workers=None, where="moon",
                                              plugin=""))
    assert reply.error == "cannot run on 'moon'"


def test_a_plugin_goes_to_workers_that_join_later_and_a_restart_answers_when_all_are_back() -> None:
    core = FakeCore(2)
    ops = Operations(core)                  # type: ignore[arg-type]
    core.feed("c-1", m.Run(rid=1, call=b"setup", workers=None, where="workers", plugin="p"))
    ops.worker_added("w-7")
    assert core.out[-1] == ("w-7", m.RunOn(rid=0, call=b"setup"))
    core.out.clear()
    ts = core.tasks["k"] = Task("k", b"f", b"a", [], [0, 1, 0])
    ts.state, ts.who_has = "memory", {"w-0"}
    core.workers["w-0"].has_what.add("k")
    out = core.feed("c-1", m.Restart(rid=2))
    assert sorted(t for t, msg in out if msg.op == "close") == ["w-0", "w-1"]
    assert ("err", "k", "restarted") in core.calls and not ts.who_has
    ops.worker_added("w-2")
    assert not [msg for _, msg in core.out if msg.op == "reply"]     # one of two is back
    ops.worker_added("w-3")
    assert ("c-1", m.Reply(rid=2, value=2, error=None)) in core.out and not ops.restarts
    core.out.clear()
    (target, reply), = core.feed("c-1", m.Run(rid=3, call=b"f", workers=None, where="scheduler",
                                              plugin=""))
    assert target == SCHEDULER and reply.op == "run-on"


# -- coordination ---------------------------------------------------------------------------
def coord(rid: int, kind: str, action: str, name: str = "n", holder: str = "", arg: Any = None,
          value: list | None = None, keys: list | None = None) -> m.Coord:
    return m.Coord(rid=rid, kind=kind, name=name, action=action, holder=holder, value=value,
                   keys=keys or [], arg=arg)


def test_a_lock_is_granted_in_turn_and_a_leaving_holder_passes_it_on() -> None:
    core = FakeCore()
    co = Coordination(core)                 # type: ignore[arg-type]
    assert core.feed("c-1", coord(1, "semaphore", "acquire", holder="L1", arg=1)) == [
        ("c-1", m.Reply(rid=1, value=True, error=None))]
    assert core.feed("c-2", coord(2, "semaphore", "acquire", holder="L2", arg=1)) == []
    (target, reply), = core.feed("c-2", coord(3, "semaphore", "acquire", holder="L3", arg=2))
    assert "has 1 leases, not 2" in reply.error
    co.source_gone("c-1")                   # its lease goes: the waiter gets the lock
    assert core.out == [("c-2", m.Reply(rid=2, value=True, error=None))]
    core.out.clear()
    (target, reply), = core.feed("c-1", coord(4, "semaphore", "release", holder="L2"))
    assert "released without being acquired" in reply.error    # not c-1's lease
    assert core.feed("c-2", coord(5, "semaphore", "release", holder="L2")) == [
        ("c-2", m.Reply(rid=5, value=True, error=None))]
    assert co.semaphores == {}


def test_a_queue_holds_the_futures_in_its_items_and_a_waiting_get_can_be_abandoned() -> None:
    core = FakeCore()
    co = Coordination(core)                 # type: ignore[arg-type]
    core.tasks["f"] = Task("f", b"f", b"a", [], [0, 1, 0])
    assert core.feed("c-2", coord(1, "queue", "get")) == []               # waits
    (target, reply), = core.feed("c-2", coord(1, "queue", "abandon"))
    assert reply.value == {"timeout": True}
    assert core.feed("c-1", coord(2, "queue", "put", value=[b"v"], keys=["f"])) == [
        ("c-1", m.Reply(rid=2, value=True, error=None))]
    assert "%queue:n" in core.tasks["f"].who_wants                      # held by the queue
    (target, reply), = core.feed("c-2", coord(3, "queue", "get"))
    assert target == "c-2" and reply.value == {"value": [b"v"], "keys": ["f"]}
    assert "c-2" in core.tasks["f"].who_wants and ("unwant", "f", "%queue:n") in core.calls
    assert co.queues == {} and co.held == {}
    (target, reply), = core.feed("c-1", coord(4, "queue", "get", arg="many"))
    assert "batch must be an int or True" in reply.error


# -- retirement ------------------------------------------------------------------------------
def test_a_retiring_worker_hands_on_its_queue_and_only_copies_then_closes() -> None:
    core = FakeCore(2)
    ret = Retirement(core)                  # type: ignore[arg-type]
    queued, = queue(core, "w-0", 1)
    held = core.tasks["h"] = Task("h", b"f", b"a", [], [0, 1, 0])
    held.state, held.who_has = "memory", {"w-0"}
    core.workers["w-0"].has_what.add("h")
    out = core.feed("c-1", m.Retire(rid=6, workers=["tcp://h:0"], timeout_ms=0))
    (target, rep), = [(t, msg) for t, msg in out if msg.op == "replicate"]
    assert target == "w-1" and rep.keys == ["h"] and rep.source == "tcp://h:0"
    assert ("ask", queued.key, "w-1", "w-0") in core.calls       # its queue is stolen away
    assert core.workers["w-0"].paused and "w-0" in core.paused
    core.feed("w-0", m.Paused(paused=False))
    assert core.workers["w-0"].paused and ("paused", "w-0") not in core.calls   # stays paused
    ret.validate()
    core.workers["w-0"].processing.clear()                      # the steal went through
    out = core.feed("w-1", m.Replicated(rid=rep.rid, keys=["h"], nbytes=[1]))
    assert held.who_has == {"w-0", "w-1"}
    assert ("w-0", m.Close(reason="retired")) in out
    ret.source_gone("w-0")                  # it said goodbye
    assert core.out == [("c-1", m.Reply(rid=6, value=["tcp://h:0"], error=None))]
    assert not ret.retiring and "w-0" not in core.paused


def test_a_drain_that_outlives_its_timeout_is_closed_by_the_tick() -> None:
    core = FakeCore(2)
    ret = Retirement(core)                  # type: ignore[arg-type]
    ts, = queue(core, "w-0", 1)
    ts.running = True                        # running: it cannot be moved
    core.feed("c-1", m.Retire(rid=0, workers=["n0"], timeout_ms=5000))
    assert ret.tick(100.0) == []            # the clock starts: 5 s to drain
    assert ret.tick(104.0) == []
    assert ret.tick(105.5) == [("w-0", m.Close(reason="retired"))]
