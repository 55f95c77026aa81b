"""WorkerState, the worker's pure state machine: each transition, then random histories.

No sockets, threads or pools: the tests call the methods the shell would call and
read the actions they return, with ``validate()`` after every event.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tasknest.protocol import messages as m
from tasknest.worker.actions import READY, Done, Drop, Fetch, Send, Tell
from tasknest.worker.state import WorkerState
from wstate import ME, PEER, compute, finish, kinds, prio, run, sent

pytestmark = pytest.mark.timeout(60)


# == transitions ============================================================================
def test_compute_without_deps_is_ready():
    ws = WorkerState(ME)
    out = compute(ws, "a")
    assert READY in out and ws.tasks["a"].state == "ready"
    run(ws, "a")
    out = finish(ws, "a")
    assert sent(out) == [m.TaskFinished(key="a", nbytes=8, type="int", value=None, inner=[],
                                        notified=[], attempt=0)]
    assert Done("a") in out
    assert ws.tasks["a"].state == "memory" and ws.held_keys() == ["a"]


def test_a_result_keeps_no_recipe_and_shares_what_records_repeat():
    """A held result is its key and size: the recipe is the scheduler's to keep, and
    the empty or repeated parts of a record are shared, not one object each."""
    ws = WorkerState(ME)
    for key in ("a", "b"):
        ws.handle(m.Compute(key=key, func=1, args=b"args", deps={}, priority=prio(0, 7),
                            retries=0, notify=["c-1"], attempt=1))
    a, b = ws.tasks["a"], ws.tasks["b"]
    assert a.notify is b.notify and a.who_has is b.who_has is ()
    run(ws, "a")
    finish(ws, "a")
    assert (a.recipe, a.deps, a.priority, a.notify) == (None, (), (), ())
    assert ws.tasks["b"].recipe[1] == b"args"         # (a pending one keeps its recipe)
    run(ws, "b")
    ws.finished("b", 8, "".join(["i", "nt"]), None, [])   # (a name made afresh, as int's is)
    assert a.type == b.type == "int" and a.type is b.type


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
    assert sent(out) == [m.Claim(key="child", func=1, args=b"", deps=[], priority=prio(1, 5),
                                 retries=0, confirm=False)]
    t = ws.tasks["child"]
    assert t.state == "ready" and t.owned


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
    ws.handle(m.Compute(key="deep", func=1, args=b"", deps={}, priority=[0, 5, 1], retries=0,
                        notify=[], attempt=0))
    ws.handle(m.Compute(key="urgent", func=1, args=b"", deps={}, priority=[1, 0, 2], retries=0,
                        notify=[], attempt=0))
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
    assert sent(out) == [m.TaskErred(key="a", exception=[b"e"], traceback="tb", kind="exception",
                                     attempt=0)]
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
    out = ws.handle(m.Steal(key="a"))
    ws.validate()
    assert sent(out) == [m.StealReply(key="a", ok=True, later=False)]
    assert "a" not in ws.tasks and ws.pop_ready() is None


def test_steal_of_an_executing_task_fails():
    ws = WorkerState(ME)
    compute(ws, "a")
    run(ws, "a")
    assert sent(ws.handle(m.Steal(key="a"))) == [m.StealReply(key="a", ok=False, later=False)]
    assert ws.tasks["a"].state == "executing"
    assert sent(ws.handle(m.Steal(key="unknown"))) == [m.StealReply(key="unknown", ok=False,
                                                                    later=False)]


def test_stolen_task_with_local_dependent_waits_for_its_result():
    ws = WorkerState(ME)
    ws.claim("a", 1, b"", [], prio(1, 1), 0)
    ws.claim("b", 1, b"", ["a"], prio(1, 2), 0)
    ws.handle(m.Steal(key="a"))
    ws.validate()
    assert ws.tasks["a"].state == "remote" and ws.tasks["b"].waiting_on == {"a"}
    out = ws.handle(m.KeyMemory(key="a", type="int", nbytes=8, who_has=[PEER], value=None))
    assert kinds(out, Fetch) == [Fetch("a", [PEER])]


def test_claim_rejected_drops_the_local_copy():
    ws = WorkerState(ME)
    ws.claim("pure", 1, b"", [], prio(1, 1), 0)
    ws.handle(m.ClaimRejected(key="pure"))
    ws.validate()
    assert "pure" not in ws.tasks and ws.pop_ready() is None


def test_claim_rejected_while_executing_keeps_running():
    ws = WorkerState(ME)
    ws.claim("pure", 1, b"", [], prio(1, 1), 0)
    run(ws, "pure")
    ws.handle(m.ClaimRejected(key="pure"))
    ws.validate()
    assert ws.tasks["pure"].state == "executing"
    [report] = [msg for msg in sent(finish(ws, "pure")) if msg.op == "task-finished"]
    assert report.key == "pure" and ws.tasks["pure"].state == "memory"


def test_free_of_a_ready_task_unqueues_it():
    ws = WorkerState(ME)
    compute(ws, "a")
    ws.handle(m.Free(keys=["a"]))
    ws.validate()
    assert ws.tasks == {} and ws.pop_ready() is None


def test_free_of_an_executing_task_drops_its_result_silently():
    ws = WorkerState(ME)
    compute(ws, "a")
    run(ws, "a")
    ws.handle(m.Free(keys=["a"]))
    ws.validate()
    assert ws.tasks["a"].state == "cancelled"
    out = finish(ws, "a")
    assert out == [Drop("a")] and ws.tasks == {} and not ws.executing


def test_free_of_memory_drops_the_value():
    ws = WorkerState(ME)
    compute(ws, "a")
    run(ws, "a")
    finish(ws, "a")
    out = ws.handle(m.Free(keys=["a"]))
    ws.validate()
    assert out == [Drop("a")] and ws.tasks == {}


def test_free_keeps_a_value_a_local_task_still_needs():
    ws = WorkerState(ME)
    compute(ws, "a")
    run(ws, "a")
    finish(ws, "a")
    compute(ws, "b", {"a": [ME]})
    run(ws, "b")
    assert ws.handle(m.Free(keys=["a"])) == []
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
    out = ws.handle(m.KeyErred(key="far", exception=[b"e"], traceback="tb", kind="exception"))
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
    ws.handle(m.Free(keys=["a"]))
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
    ws.handle(m.Free(keys=["pure"]))
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
    ws.handle(m.Free(keys=["k"]))
    ws.handle(m.ClaimRejected(key="c"))
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
    ws.handle(m.Free(keys=["k"]))
    ws.validate()
    assert ws.tasks["k"].state == "remote" and not ws.tasks["k"].waiting_on
    ws.fetched("r", 1)                    # nobody needs it any more
    ws.validate()
    assert "r" not in ws.tasks


def test_failed_fetch_of_an_input_nobody_needs_forgets_it():
    # before: the remote record stayed forever once its only dependent was freed
    ws = WorkerState(ME)
    compute(ws, "k", {"r": [PEER]})
    ws.handle(m.Free(keys=["k"]))
    ws.fetch_failed("r", PEER)
    ws.validate()
    assert ws.tasks == {}


def test_key_erred_of_a_waiting_claim_releases_its_inputs():
    # before: the claim's placeholder input stayed forever
    ws = WorkerState(ME)
    ws.claim("c", 1, b"", ["gone"], prio(1, 1), 0)
    ws.handle(m.KeyErred(key="c", exception=[b"e"], traceback="tb", kind="exception"))
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
        self.unconfirmed.discard(key)       # (a compute is the scheduler's word on a claim)
        self._apply(self.ws.handle(m.Compute(key=key, func=1, args=b"", deps=deps,
                                             priority=[0, depth, self.n], retries=retries,
                                             notify=[], attempt=0)))

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
            key = data.draw(st.sampled_from(sorted(self.assigned)))
            self._apply(self.ws.handle(m.Steal(key=key)))

    @rule(data=st.data())
    def claim_rejected(self, data: st.DataObject) -> None:
        if self.claimed - self.accepted:
            key = data.draw(st.sampled_from(sorted(self.claimed - self.accepted)))
            self._apply(self.ws.handle(m.ClaimRejected(key=key)))
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
            self._apply(self.ws.handle(m.ClaimAccepted(keys=[key])))

    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        here = sorted(self.assigned | self.held)
        if here:
            keys = data.draw(st.lists(st.sampled_from(here), min_size=1, max_size=2, unique=True))
            self._apply(self.ws.handle(m.Free(keys=keys)))
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
            key = data.draw(st.sampled_from(waiting))
            self._apply(self.ws.handle(m.KeyMemory(key=key, type="int", nbytes=8, who_has=[PEER],
                                                   value=None)))

    @rule(data=st.data())
    def key_erred(self, data: st.DataObject) -> None:
        gone = sorted(k for k, t in self.ws.tasks.items() if t.state in ("remote", "fetching")
                      and k in self.remote)
        if gone:
            key = data.draw(st.sampled_from(gone))
            self._apply(self.ws.handle(m.KeyErred(key=key, exception=[b"e"], traceback="tb",
                                                  kind="exception")))

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
                    self._apply(ws.handle(m.KeyMemory(key=k, type="int", nbytes=8,
                                                      who_has=[PEER], value=None)))
                    moved = moved or ws.tasks[k].state == "fetching"
            if ws.pop_ready() is not None:
                moved = True
            self.valid()
            if not moved:
                break
        else:
            raise AssertionError("the worker did not settle")
        self._apply(ws.handle(m.Free(keys=sorted(self.assigned | self.held))))
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
    ws.handle(m.Compute(key="a", func=1, args=b"", deps={}, priority=prio(0, 1), retries=0,
                        notify=["c-1", "c-2"], attempt=0))
    assert ws.pop_ready().key == "a"
    out = ws.finished("a", 8, "int", [b"v"], [], {"c-1", "c-3"})   # c-2 is not connected
    assert kinds(out, Tell) == [
        Tell("c-1", m.KeyMemory(key="a", type="int", nbytes=8, who_has=["tcp://127.0.0.1:9001"],
                                value=[b"v"]))]
    assert sent(out) == [m.TaskFinished(key="a", nbytes=8, type="int", value=[b"v"], inner=[],
                                        notified=["c-1"], attempt=0)]
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
    ws.handle(m.Compute(key="parent", func=1, args=b"", deps={}, priority=prio(0, 1), retries=0,
                        notify=["c-1"], attempt=0))
    assert ws.pop_ready().key == "parent"
    ws.claim("child", b"f", b"", [], prio(1, 1), 0)
    out = ws.finished("parent", 8, "dict", [b"v"], ["child"], {"c-1"})
    assert not kinds(out, Tell)
    assert sent(out, "task-finished")[0].notified == []
    ws.validate()
