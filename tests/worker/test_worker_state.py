"""WorkerState, the worker's pure state machine: each transition, then random histories.

No sockets, threads or pools: the tests call the methods the shell would call and
read the actions they return, with ``validate()`` after every event.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tasknest.protocol import messages as m
from tasknest.worker.actions import READY, Action, Done, Drop, Fetch, Ready, Send, Tell
from tasknest.worker.state import WorkerState

ME = "tcp://127.0.0.1:9001"
PEER = "tcp://127.0.0.1:9002"
pytestmark = pytest.mark.timeout(60)


def sent(actions: list[Action], op: str | None = None) -> list[m.Message]:
    return [a.msg for a in actions if isinstance(a, Send) and (op is None or a.msg.op == op)]


def kinds(actions: list[Action], kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def prio(depth: int, seq: int, user: int = 0) -> list:
    return [user, depth, seq]


def compute(ws: WorkerState, key: str, deps: dict | None = None, depth: int = 0, seq: int = 0,
            retries: int = 0) -> list:
    out = ws.compute(key, 1, b"", deps or {}, prio(depth, seq), retries)
    ws.validate()
    return out


def run(ws: WorkerState, key: str) -> None:
    t = ws.pop_ready()
    assert t is not None and t.key == key, (t, key)
    ws.validate()


def finish(ws: WorkerState, key: str, inner: list[str] | None = None) -> list:
    out = ws.finished(key, 8, "int", None, inner or [])
    ws.validate()
    return out


# == transitions ============================================================================
def test_compute_without_deps_is_ready():
    ws = WorkerState(ME)
    out = compute(ws, "a")
    assert READY in out and ws.tasks["a"].state == "ready"
    run(ws, "a")
    out = finish(ws, "a")
    assert sent(out) == [m.TaskFinished(key="a", nbytes=8, type="int", value=None, inner=[], notified=[], attempt=0)]
    assert Done("a") in out
    assert ws.tasks["a"].state == "memory" and ws.held_keys() == ["a"]


def test_compute_with_local_and_remote_deps_fetches_the_remote_one():
    ws = WorkerState(ME)
    ws.put_data(["local"], [3])
    out = compute(ws, "b", {"local": [ME], "far": [PEER, ME]})
    assert kinds(out, Fetch) == [Fetch("far", [PEER])]   # never from itself
    assert ws.tasks["b"].state == "waiting" and ws.tasks["b"].waiting_on == {"far"}
    out = ws.fetched("far", 5)
    ws.validate()
    assert READY in out and ws.tasks["b"].state == "ready"


def test_two_tasks_share_one_fetch():
    ws = WorkerState(ME)
    out1 = compute(ws, "b", {"far": [PEER]})
    out2 = compute(ws, "c", {"far": [PEER]})
    assert len(kinds(out1, Fetch)) == 1 and not kinds(out2, Fetch)


def test_claim_queues_locally_and_tells_the_scheduler():
    ws = WorkerState(ME)
    out = ws.claim("child", 1, b"", [], prio(1, 5), 0)
    ws.validate()
    assert sent(out) == [m.Claim(key="child", func=1, args=b"", deps=[], priority=prio(1, 5), retries=0, confirm=False)]
    t = ws.tasks["child"]
    assert t.state == "ready" and t.claimed and t.owned


def test_pop_ready_is_depth_first_then_fifo():
    ws = WorkerState(ME)
    compute(ws, "root-1", depth=0, seq=1)
    compute(ws, "child-late", depth=1, seq=9)
    compute(ws, "root-2", depth=0, seq=2)
    compute(ws, "grandchild", depth=2, seq=10)
    compute(ws, "child-early", depth=1, seq=3)
    order = []
    while (t := ws.pop_ready()) is not None:
        order.append(t.key)
    assert order == ["grandchild", "child-early", "child-late", "root-1", "root-2"]


def test_user_priority_beats_depth():
    ws = WorkerState(ME)
    ws.compute("deep", 1, b"", {}, [0, 5, 1], 0)
    ws.compute("urgent", 1, b"", {}, [1, 0, 2], 0)
    assert ws.pop_ready().key == "urgent"


def test_helpable_finds_ready_tasks_among_awaited_keys_and_their_deps():
    ws = WorkerState(ME)
    ws.claim("leaf", 1, b"", [], prio(2, 1), 0)
    ws.claim("mid", 1, b"", ["leaf"], prio(1, 2), 0)
    ws.claim("other", 1, b"", [], prio(1, 3), 0)
    ws.validate()
    assert ws.tasks["mid"].state == "waiting"
    t = ws.helpable(["mid"])          # mid waits on leaf, which is ready
    assert t is not None and t.key == "leaf" and t.state == "executing"
    assert ws.helpable(["mid"]) is None
    ws.validate()
    finish(ws, "leaf")
    assert ws.helpable(["mid", "other"]).key == "mid"
    assert ws.pop_ready().key == "other"


def test_finished_makes_dependents_ready():
    ws = WorkerState(ME)
    ws.claim("a", 1, b"", [], prio(1, 1), 0)
    ws.claim("b", 1, b"", ["a"], prio(1, 2), 0)
    run(ws, "a")
    out = finish(ws, "a")
    assert READY in out and ws.tasks["b"].state == "ready"


def test_erred_with_retries_runs_again_then_reports():
    ws = WorkerState(ME)
    compute(ws, "a", retries=1)
    run(ws, "a")
    out = ws.erred("a", [b"e"], "tb", "exception")
    ws.validate()
    assert not sent(out) and ws.tasks["a"].state == "ready"
    run(ws, "a")
    out = ws.erred("a", [b"e"], "tb", "exception")
    ws.validate()
    assert sent(out) == [m.TaskErred(key="a", exception=[b"e"], traceback="tb", kind="exception", attempt=0)]
    assert Done("a") in out and ws.tasks["a"].state == "erred"


def test_retries_do_not_cover_serialization_failures():
    ws = WorkerState(ME)
    compute(ws, "a", retries=3)
    run(ws, "a")
    out = ws.erred("a", [], "cannot pickle", "serialization")
    assert sent(out, "task-erred")


def test_erred_propagates_to_local_dependents_then_records_are_forgotten():
    ws = WorkerState(ME)
    ws.claim("a", 1, b"", [], prio(1, 1), 0)
    ws.claim("b", 1, b"", ["a"], prio(1, 2), 0)
    run(ws, "a")
    out = ws.erred("a", [b"e"], "tb", "exception")
    ws.validate()
    assert Done("b") in out and ws.tasks["b"].state == "erred"
    assert ws.tasks["b"].error == ([b"e"], "tb", "exception")
    # the shell settled local futures from the records; the next event forgets them
    ws.idle(True)
    ws.validate()
    assert ws.tasks == {}


def test_steal_of_a_ready_task_succeeds_and_forgets_it():
    ws = WorkerState(ME)
    compute(ws, "a")
    out = ws.steal("a")
    ws.validate()
    assert sent(out) == [m.StealReply(key="a", ok=True, later=False)]
    assert "a" not in ws.tasks and ws.pop_ready() is None


def test_steal_of_an_executing_task_fails():
    ws = WorkerState(ME)
    compute(ws, "a")
    run(ws, "a")
    assert sent(ws.steal("a")) == [m.StealReply(key="a", ok=False, later=False)]
    assert ws.tasks["a"].state == "executing"
    assert sent(ws.steal("unknown")) == [m.StealReply(key="unknown", ok=False, later=False)]


def test_stolen_task_with_local_dependent_waits_for_its_result():
    ws = WorkerState(ME)
    ws.claim("a", 1, b"", [], prio(1, 1), 0)
    ws.claim("b", 1, b"", ["a"], prio(1, 2), 0)
    ws.steal("a")
    ws.validate()
    assert ws.tasks["a"].state == "remote" and ws.tasks["b"].waiting_on == {"a"}
    out = ws.key_memory("a", [PEER])
    assert kinds(out, Fetch) == [Fetch("a", [PEER])]


def test_claim_rejected_drops_the_local_copy():
    ws = WorkerState(ME)
    ws.claim("pure", 1, b"", [], prio(1, 1), 0)
    ws.claim_rejected("pure")
    ws.validate()
    assert "pure" not in ws.tasks and ws.pop_ready() is None


def test_claim_rejected_while_executing_keeps_running():
    ws = WorkerState(ME)
    ws.claim("pure", 1, b"", [], prio(1, 1), 0)
    run(ws, "pure")
    ws.claim_rejected("pure")
    ws.validate()
    assert ws.tasks["pure"].state == "executing" and not ws.tasks["pure"].claimed


def test_free_of_a_ready_task_unqueues_it():
    ws = WorkerState(ME)
    compute(ws, "a")
    ws.free(["a"])
    ws.validate()
    assert ws.tasks == {} and ws.pop_ready() is None


def test_free_of_an_executing_task_drops_its_result_silently():
    ws = WorkerState(ME)
    compute(ws, "a")
    run(ws, "a")
    ws.free(["a"])
    ws.validate()
    assert ws.tasks["a"].state == "cancelled"
    out = finish(ws, "a")
    assert out == [Drop("a")] and ws.tasks == {} and not ws.executing


def test_free_of_memory_drops_the_value():
    ws = WorkerState(ME)
    compute(ws, "a")
    run(ws, "a")
    finish(ws, "a")
    out = ws.free(["a"])
    ws.validate()
    assert out == [Drop("a")] and ws.tasks == {}


def test_free_keeps_a_value_a_local_task_still_needs():
    ws = WorkerState(ME)
    compute(ws, "a")
    run(ws, "a")
    finish(ws, "a")
    compute(ws, "b", {"a": [ME]})
    run(ws, "b")
    assert ws.free(["a"]) == []
    ws.validate()
    out = finish(ws, "b")
    assert Drop("a") in out and "a" not in ws.tasks


def test_fetched_copies_are_dropped_once_no_local_task_needs_them():
    ws = WorkerState(ME)
    compute(ws, "b", {"far": [PEER]})
    compute(ws, "c", {"far": [PEER]})
    ws.fetched("far", 5)
    run(ws, "b")
    assert Drop("far") not in finish(ws, "b")
    run(ws, "c")
    assert Drop("far") in finish(ws, "c")
    assert set(ws.tasks) == {"b", "c"}
    assert ws.held_keys() == ["b", "c"]            # fetched copies are never reported held


def test_fetch_failure_tries_the_next_holder_and_tells_the_scheduler():
    ws = WorkerState(ME)
    out = compute(ws, "b", {"far": [PEER, "tcp://127.0.0.1:9003"]})
    addrs = kinds(out, Fetch)[0].addrs
    out = ws.fetch_failed("far", addrs[0])
    ws.validate()
    assert sent(out) == [m.MissingData(key="far", worker=addrs[0])]
    assert kinds(out, Fetch) == [Fetch("far", addrs[1:])]


def test_key_erred_errs_waiting_dependents():
    ws = WorkerState(ME)
    compute(ws, "b", {"far": [PEER]})
    out = ws.key_erred("far", [b"e"], "tb", "exception")
    ws.validate()
    assert Done("b") in out and ws.tasks["b"].state == "erred"


def test_idle_is_reported_once_until_work_arrives():
    ws = WorkerState(ME)
    assert sent(ws.idle(True)) == [m.Idle()]
    assert ws.idle(True) == []
    compute(ws, "a")
    assert ws.idle(True) == []          # work is ready: not idle
    run(ws, "a")
    finish(ws, "a")
    assert ws.idle(False) == []         # no free slot
    assert sent(ws.idle(True)) == [m.Idle()]


def test_put_data_is_owned_memory_and_wakes_dependents():
    ws = WorkerState(ME)
    ws.claim("b", 1, b"", ["x"], prio(1, 1), 0)
    out = ws.put_data(["x"], [4])
    ws.validate()
    assert Done("x") in out and ws.tasks["b"].state == "ready"
    assert ws.held_keys() == ["x"]


# == regressions found by the random histories below =====================================
def test_recompute_of_a_task_freed_while_running_keeps_that_run():
    # free -> cancelled; the scheduler wants it again before it ends: one run, one result
    ws = WorkerState(ME)
    compute(ws, "a")
    run(ws, "a")
    ws.free(["a"])
    assert compute(ws, "a") == []
    assert ws.tasks["a"].state == "executing" and ws.pop_ready() is None
    out = finish(ws, "a")
    assert sent(out, "task-finished") and ws.tasks["a"].state == "memory"


def test_claim_of_a_key_freed_while_running_keeps_that_run():
    # before: the claim made a second record, ran the task twice, and the second end
    # dropped the value of a key that stayed in memory
    ws = WorkerState(ME)
    compute(ws, "pure")
    run(ws, "pure")
    ws.free(["pure"])
    out = ws.claim("pure", 1, b"", [], prio(1, 1), 0)
    ws.validate()
    assert sent(out, "claim") and ws.pop_ready() is None
    out = finish(ws, "pure")
    assert sent(out, "task-finished") and Drop("pure") not in out
    assert ws.held_keys() == ["pure"]


def test_erred_records_do_not_outlive_the_next_event():
    # before: erred tasks stayed in the worker's table forever (the scheduler never
    # frees them: an erred key holds no data)
    ws = WorkerState(ME)
    compute(ws, "a")
    run(ws, "a")
    ws.erred("a", [b"e"], "tb", "exception")
    assert ws.tasks["a"].state == "erred"      # the shell settles local futures now
    compute(ws, "b")
    ws.validate()
    assert set(ws.tasks) == {"b"}


def test_a_freed_task_still_running_is_not_forgotten_when_a_dependent_goes():
    # before: the record of the running task was deleted, so its inputs were never released
    ws = WorkerState(ME)
    compute(ws, "k", {"r": [PEER]})
    ws.fetched("r", 1)
    run(ws, "k")
    ws.claim("c", 1, b"", ["k"], prio(1, 1), 0)
    ws.free(["k"])
    ws.claim_rejected("c")
    ws.validate()
    assert ws.tasks["k"].state == "cancelled"
    out = finish(ws, "k")
    assert Drop("r") in out and ws.tasks == {}


def test_a_task_that_will_not_run_here_stops_waiting():
    # before: a freed waiting task kept waiting_on, and once its input was dropped the
    # record pointed at a key that no longer existed
    ws = WorkerState(ME)
    compute(ws, "k", {"r": [PEER]})
    ws.claim("c", 1, b"", ["k"], prio(1, 1), 0)
    ws.free(["k"])
    ws.validate()
    assert ws.tasks["k"].state == "remote" and not ws.tasks["k"].waiting_on
    ws.fetched("r", 1)                    # nobody needs it any more
    ws.validate()
    assert "r" not in ws.tasks


def test_failed_fetch_of_an_input_nobody_needs_forgets_it():
    # before: the remote record stayed forever once its only dependent was freed
    ws = WorkerState(ME)
    compute(ws, "k", {"r": [PEER]})
    ws.free(["k"])
    ws.fetch_failed("r", PEER)
    ws.validate()
    assert ws.tasks == {}


def test_key_erred_of_a_waiting_claim_releases_its_inputs():
    # before: the claim's placeholder input stayed forever
    ws = WorkerState(ME)
    ws.claim("c", 1, b"", ["gone"], prio(1, 1), 0)
    ws.key_erred("c", [b"e"], "tb", "exception")
    ws.idle(True)
    ws.validate()
    assert ws.tasks == {}


# == random histories ========================================================================
class WorkerMachine(RuleBasedStateMachine):
    """A fake scheduler and shell drive one WorkerState through plausible events.

    The model keeps what the scheduler believes is processing (``assigned``) or
    held (``held``) here, the shell's values (``data``), pending fetches, and each
    key's dependencies (a key's recipe never changes).
    """

    def __init__(self) -> None:
        super().__init__()
        self.ws = WorkerState(ME)
        self.assigned: set[str] = set()
        self.claimed: set[str] = set()          # claims the scheduler has not rejected
        self.unconfirmed: set[str] = set()      # claims (confirm) it has not answered yet
        self.accepted: set[str] = set()         # ... it accepted: never rejected after
        self.held: set[str] = set()
        self.data: set[str] = set()
        self.fetches: list[tuple[str, list[str]]] = []
        self.recipes: dict[str, list[str]] = {}
        self.remote: set[str] = set()            # keys computed on other workers
        self.n = 0

    def _fresh(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n}"

    def _apply(self, out: list) -> None:
        for a in out:
            if isinstance(a, Send):
                msg = a.msg
                if msg.op == "task-finished":
                    self.assigned.discard(msg.key)
                    self.claimed.discard(msg.key)
                    self.held.add(msg.key)
                elif msg.op == "task-erred":
                    self.assigned.discard(msg.key)
                    self.claimed.discard(msg.key)
                elif msg.op == "steal-reply" and msg.ok:
                    self.assigned.discard(msg.key)
                    self.claimed.discard(msg.key)
                    self.remote.add(msg.key)
            elif isinstance(a, Fetch):
                self.fetches.append((a.key, list(a.addrs)))
            elif isinstance(a, Drop):
                self.data.discard(a.key)
        # the scheduler errs whatever erred here with it (dependency errors propagate)
        for k in [k for k in self.assigned if k in self.ws.tasks
                  and self.ws.tasks[k].state == "erred"]:
            self.assigned.discard(k)
            self.claimed.discard(k)

    @initialize()
    def start(self) -> None:
        for i in range(2):
            self.remote.add(f"r-{i}")
            self.recipes[f"r-{i}"] = []

    def _deps(self, data: st.DataObject, pool: list[str]) -> list[str]:
        return data.draw(st.lists(st.sampled_from(sorted(pool)), max_size=2, unique=True)) \
            if pool else []

    # -- from the scheduler ------------------------------------------------------------
    @rule(data=st.data(), fresh=st.booleans(), depth=st.integers(0, 2), retries=st.integers(0, 1))
    def compute(self, data: st.DataObject, fresh: bool, depth: int, retries: int) -> None:
        """Assigned here once every dependency is in memory somewhere."""
        again = sorted(k for k in self.recipes if k not in self.assigned and k not in self.held
                       and k not in self.remote and all(d in self.held or d in self.remote
                                                        for d in self.recipes[k]))
        if fresh or not again:
            key = self._fresh("k")
            self.recipes[key] = self._deps(data, sorted(self.held | self.remote))
        else:
            key = data.draw(st.sampled_from(again))
        deps = {d: [ME] if d in self.held else [PEER] for d in self.recipes[key]}
        self.n += 1
        self.assigned.add(key)
        self._apply(self.ws.compute(key, 1, b"", deps, [0, depth, self.n], retries))

    @rule(data=st.data(), depth=st.integers(1, 3), confirm=st.booleans())
    def claim(self, data: st.DataObject, depth: int, confirm: bool) -> None:
        """A running task submits a child whose arguments are futures it holds (a pure
        one, ``confirm``, runs once the scheduler accepts the claim)."""
        if not self.ws.executing:
            return
        key = self._fresh("c")
        pool = [k for k in self.recipes if k in self.ws.tasks or k in self.remote]
        self.recipes[key] = self._deps(data, pool)
        self.n += 1
        self.assigned.add(key)
        self.claimed.add(key)
        if confirm:
            self.unconfirmed.add(key)
        self._apply(self.ws.claim(key, 1, b"", self.recipes[key], [0, depth, self.n], 0, {},
                                  confirm))

    @rule(data=st.data())
    def steal(self, data: st.DataObject) -> None:
        if self.assigned:
            self._apply(self.ws.steal(data.draw(st.sampled_from(sorted(self.assigned)))))

    @rule(data=st.data())
    def claim_rejected(self, data: st.DataObject) -> None:
        if self.claimed - self.accepted:
            key = data.draw(st.sampled_from(sorted(self.claimed - self.accepted)))
            self._apply(self.ws.claim_rejected(key))
            self.claimed.discard(key)
            self.unconfirmed.discard(key)
            t = self.ws.tasks.get(key)
            if t is None or t.state not in ("executing", "memory"):
                self.assigned.discard(key)
                self.remote.add(key)        # the winner computes it

    @rule(data=st.data())
    def claim_accepted(self, data: st.DataObject) -> None:
        if self.unconfirmed:
            key = data.draw(st.sampled_from(sorted(self.unconfirmed)))
            self.unconfirmed.discard(key)
            self.accepted.add(key)
            self._apply(self.ws.claim_accepted([key]))

    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        here = sorted(self.assigned | self.held)
        if here:
            keys = data.draw(st.lists(st.sampled_from(here), min_size=1, max_size=2, unique=True))
            self._apply(self.ws.free(keys))
            for k in keys:
                self.assigned.discard(k)
                self.claimed.discard(k)
                self.unconfirmed.discard(k)
                self.held.discard(k)

    @rule(data=st.data())
    def key_memory(self, data: st.DataObject) -> None:
        waiting = sorted(k for k, t in self.ws.tasks.items() if t.state in ("remote", "fetching")
                         and k in self.remote)
        if waiting:
            self._apply(self.ws.key_memory(data.draw(st.sampled_from(waiting)), [PEER]))

    @rule(data=st.data())
    def key_erred(self, data: st.DataObject) -> None:
        gone = sorted(k for k, t in self.ws.tasks.items() if t.state in ("remote", "fetching")
                      and k in self.remote)
        if gone:
            key = data.draw(st.sampled_from(gone))
            self._apply(self.ws.key_erred(key, [b"e"], "tb", "exception"))

    @rule()
    def put_data(self) -> None:
        key = self._fresh("x")
        self.recipes[key] = []
        self.data.add(key)
        self._apply(self.ws.put_data([key], [1]))
        self.held.add(key)

    # -- the shell -------------------------------------------------------------------
    @rule(data=st.data(), ok=st.booleans())
    def complete_fetch(self, data: st.DataObject, ok: bool) -> None:
        if not self.fetches:
            return
        key, addrs = self.fetches.pop(data.draw(st.integers(0, len(self.fetches) - 1)))
        t = self.ws.tasks.get(key)
        if ok:
            if t is not None and t.state == "fetching":
                self.data.add(key)
            self._apply(self.ws.fetched(key, 1))
        else:
            self._apply(self.ws.fetch_failed(key, addrs[0]))

    @rule()
    def pop_ready(self) -> None:
        self.ws.pop_ready()

    @rule(data=st.data())
    def help(self, data: st.DataObject) -> None:
        if self.ws.tasks:
            keys = data.draw(st.lists(st.sampled_from(sorted(self.ws.tasks)), max_size=3))
            self.ws.helpable(keys)

    @rule(data=st.data(), inner=st.booleans())
    def finish(self, data: st.DataObject, inner: bool) -> None:
        if self.ws.executing:
            key = data.draw(st.sampled_from(sorted(self.ws.executing)))
            self.data.add(key)
            self._apply(self.ws.finished(key, 1, "int", None, []))

    @rule(data=st.data(), kind=st.sampled_from(["exception", "serialization"]))
    def fail(self, data: st.DataObject, kind: str) -> None:
        if self.ws.executing:
            key = data.draw(st.sampled_from(sorted(self.ws.executing)))
            self._apply(self.ws.erred(key, [b"e"], "tb", kind))

    @rule(slot=st.booleans())
    def idle(self, slot: bool) -> None:
        self._apply(self.ws.idle(slot))

    # -- checks --------------------------------------------------------------------
    @invariant()
    def valid(self) -> None:
        ws = self.ws
        ws.validate()
        memory = {k for k, t in ws.tasks.items() if t.state == "memory"}
        assert memory == self.data, f"values {self.data} but memory records {memory}"
        for k in self.held:
            t = ws.tasks.get(k)
            assert t is not None and t.state == "memory" and t.owned, (k, t)
        for k in self.assigned:
            t = ws.tasks.get(k)
            assert t is not None and t.state in ("waiting", "ready", "executing",
                                                 "confirming"), (k, t)
        # a fetch stays in flight in the shell after the key erred or was dropped
        assert ws.fetching <= {k for k, _ in self.fetches}
        for k in self.unconfirmed:          # a claim waiting for its word never runs
            t = ws.tasks.get(k)
            assert t is None or t.state not in ("executing", "cancelled", "memory"), (k, t)

    def teardown(self) -> None:
        ws = self.ws
        for _ in range(200):
            moved = False
            for key in sorted(ws.executing):
                self.data.add(key)
                self._apply(ws.finished(key, 1, "int", None, []))
                moved = True
            while self.fetches:
                key, _ = self.fetches.pop()
                if ws.tasks.get(key) is not None and ws.tasks[key].state == "fetching":
                    self.data.add(key)
                self._apply(ws.fetched(key, 1))
                moved = True
            for k, t in list(ws.tasks.items()):   # the scheduler says where results are
                if t.state == "remote" and any(ws.tasks[d].state == "waiting"
                                               for d in t.dependents if d in ws.tasks):
                    self._apply(ws.key_memory(k, [PEER]))
                    moved = moved or ws.tasks[k].state == "fetching"
            if ws.pop_ready() is not None:
                moved = True
            self.valid()
            if not moved:
                break
        else:
            raise AssertionError("the worker did not settle")
        self._apply(ws.free(sorted(self.assigned | self.held)))
        self.assigned.clear()
        self.held.clear()
        self._apply(ws.idle(True))
        self.valid()
        assert ws.tasks == {}, f"records remain: {ws.snapshot()}"
        assert not ws.executing and not ws.fetching and not self.data


WorkerMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
# ~7 s alone; the timeout leaves room for a loaded machine
test_random_worker_histories = pytest.mark.timeout(300)(WorkerMachine.TestCase)


def test_finished_tells_connected_waiting_clients_directly():
    ws = WorkerState("tcp://127.0.0.1:9001")
    ws.compute("a", 1, b"", {}, prio(0, 1), 0, ["c-1", "c-2"])
    assert ws.pop_ready().key == "a"
    out = ws.finished("a", 8, "int", [b"v"], [], {"c-1", "c-3"})   # c-2 is not connected
    assert kinds(out, Tell) == [
        Tell("c-1", m.KeyMemory(key="a", type="int", nbytes=8, who_has=["tcp://127.0.0.1:9001"], value=[b"v"]))]
    assert sent(out) == [m.TaskFinished(key="a", nbytes=8, type="int", value=[b"v"], inner=[], notified=["c-1"], attempt=0)]
    ws.validate()


def test_claimed_children_tell_nobody_directly():
    ws = WorkerState("tcp://127.0.0.1:9001")
    ws.claim("child", b"f", b"", [], prio(1, 1), 0)
    assert ws.pop_ready().key == "child"
    out = ws.finished("child", 8, "int", None, [], {"c-1"})
    assert not kinds(out, Tell)
    assert sent(out, "task-finished")[0].notified == []


def test_a_result_holding_futures_goes_through_the_scheduler():
    """The client asks for the inner futures' keys as it unpickles the result; told
    directly, it could ask before the scheduler read this worker's claims of them."""
    ws = WorkerState("tcp://127.0.0.1:9001")
    ws.compute("parent", 1, b"", {}, prio(0, 1), 0, ["c-1"])
    assert ws.pop_ready().key == "parent"
    ws.claim("child", b"f", b"", [], prio(1, 1), 0)
    out = ws.finished("parent", 8, "dict", [b"v"], ["child"], {"c-1"})
    assert not kinds(out, Tell)
    assert sent(out, "task-finished")[0].notified == []
    ws.validate()


# == placed tasks: a client sends a task straight here; the scheduler confirms it after ====
C = "c-1"


def place(ws: WorkerState, key: str, seq: int, client: str = C) -> list:
    out = ws.placing.place(key, 1, b"", prio(0, seq), 0, client, seq)
    ws.validate()
    return out


def test_a_placed_task_runs_at_once_and_its_report_waits_for_the_confirm():
    ws = WorkerState(ME)
    assert kinds(place(ws, "p", 1), Ready)
    assert ws.pop_ready().key == "p"
    out = ws.finished("p", 8, "int", [b"v"], [], {C})
    # the client hears now; the scheduler, which may not know the task yet, later
    assert kinds(out, Tell) == [Tell(C, m.KeyMemory(key="p", type="int", nbytes=8, who_has=[ME], value=[b"v"]))]
    assert not sent(out)
    out = ws.placing.confirm("p", C, 1, 7)
    assert sent(out) == [m.TaskFinished(key="p", nbytes=8, type="int", value=[b"v"], inner=[], notified=[C], attempt=7)]
    ws.validate()
    assert ws.free(["p"]) == [Drop("p")] and ws.tasks == {}


def test_a_confirm_before_its_place_is_kept_until_the_place_comes():
    ws = WorkerState(ME)
    assert ws.placing.confirm("p", C, 1, 7) == [] and ws.placing.early == {(C, 1): ("p", 7)}
    place(ws, "p", 1)
    assert ws.placing.early == {} and ws.placing.places == {} and ws.tasks["p"].attempt == 7
    ws.pop_ready()
    assert sent(ws.finished("p", 8, "int", None, [], {C}), "task-finished")[0].attempt == 7


def test_a_dropped_placed_copy_goes_and_a_running_one_ends_unreported():
    ws = WorkerState(ME)
    place(ws, "ready", 1)
    place(ws, "running", 2)
    ws.pop_ready()
    ws.pop_ready()
    place(ws, "queued", 3)
    ws.placing.confirm("queued", C, 3, -1)
    assert "queued" not in ws.tasks
    ws.placing.confirm("running", C, 2, -1)
    assert ws.tasks["running"].state == "cancelled"
    out = ws.finished("running", 8, "int", None, [], {C})
    assert not sent(out) and Drop("running") in out
    ws.validate()


def test_a_free_on_its_way_does_not_take_a_copy_a_client_counts_on():
    # the scheduler frees an older life of the key while a client places it here
    ws = WorkerState(ME)
    compute(ws, "k")
    ws.pop_ready()
    ws.finished("k", 8, "int", None, [], ())
    out = place(ws, "k", 1)                       # in memory: the client hears at once
    assert kinds(out, Tell) == [Tell(C, m.KeyMemory(key="k", type="int", nbytes=8, who_has=[ME], value=None))]
    assert ws.free(["k"]) == [] and ws.tasks["k"].state == "memory"
    out = ws.placing.confirm("k", C, 1, 9)                # the scheduler counts this copy anew
    assert sent(out) == [m.TaskFinished(key="k", nbytes=8, type="int", value=None, inner=[], notified=[], attempt=9)]
    assert ws.tasks["k"].owned and ws.tasks["k"].attempt == 9
    # the same, but the task lives elsewhere now: the uncounted copy goes
    ws2 = WorkerState(ME)
    compute(ws2, "k")
    ws2.pop_ready()
    ws2.finished("k", 8, "int", None, [], ())
    place(ws2, "k", 1)
    ws2.free(["k"])
    assert ws2.placing.confirm("k", C, 1, -1) == [Drop("k")] and ws2.tasks == {}


def test_a_confirm_counting_a_copy_that_never_came_says_not_here():
    ws = WorkerState(ME)
    ws.placing.confirm("p", C, 1, 7)
    out = ws.placing.client_gone(C)                 # the client left: its place will never come
    assert sent(out) == [m.NotHere(key="p", attempt=7)] and ws.placing.early == {}
    ws.placing.confirm("q", C, 2, 8)
    ws.placing.withdraw(C, 2)                       # its lane broke: the scheduler sent q by compute
    assert ws.placing.early == {}


def test_a_free_or_steal_of_a_run_still_on_its_way_leaves_other_records_alone():
    ws = WorkerState(ME)
    ws.claim("k", 1, b"", [], prio(1, 1), 0)     # a task here claimed the key too
    ws.placing.confirm("k", C, 1, 7)                      # a client's place of it, not arrived yet
    assert sent(ws.steal("k")) == [m.StealReply(key="k", ok=False, later=False)]
    assert ws.free(["k"]) == [] and ws.tasks["k"].state == "ready"
    assert ws.placing.early == {(C, 1): ("k", -1)}        # that run is not wanted any more
    place(ws, "k", 1)
    assert ws.placing.early == {} and ws.tasks["k"].state == "ready"
    ws.validate()


def test_client_gone_drops_its_uncounted_copies():
    ws = WorkerState(ME)
    place(ws, "p", 1)
    place(ws, "q", 2, client="c-2")
    assert ws.placing.client_gone(C) == []
    assert "p" not in ws.tasks and ws.tasks["q"].placers == (("c-2", 2),)
    ws.validate()


def test_a_task_here_submitting_an_uncounted_placed_key_claims_it():
    ws = WorkerState(ME)
    place(ws, "p", 1)
    out = ws.claim("p", 1, b"", [], prio(1, 2), 0)
    assert sent(out) == [m.Claim(key="p", func=1, args=b"", deps=[], priority=prio(1, 2), retries=0, confirm=False)]
    assert ws.tasks["p"].claimed and ws.tasks["p"].state == "ready"
    ws.validate()


def test_a_placed_task_that_fails_tells_its_client_and_holds_the_report():
    ws = WorkerState(ME)
    place(ws, "p", 1)
    ws.pop_ready()
    out = ws.erred("p", [b"e"], "tb", "exception", {C})
    assert kinds(out, Tell) == [Tell(C, m.KeyErred(key="p", exception=[b"e"], traceback="tb", kind="exception"))]
    assert not sent(out)
    ws.idle(True)                                 # (erred records are reaped: not this one)
    assert sent(ws.placing.confirm("p", C, 1, 4)) == [m.TaskErred(key="p", exception=[b"e"], traceback="tb", kind="exception", attempt=4)]
    ws.idle(True)
    assert ws.tasks == {}
