"""SchedulerState, the scheduler's pure state machine: each transition, one at a time
(whole histories are in test_scheduler_histories.py).
"""
from __future__ import annotations

import pytest

from sim import Cluster
from tasknest.protocol import messages as m
from tasknest.scheduler.state import SchedulerState

pytestmark = pytest.mark.timeout(60)


# == transitions, one at a time ===========================================================


def sched(n_workers: int = 2, **kw) -> SchedulerState:
    s = SchedulerState(**kw)
    s.add_client("c-1")
    for i in range(1, n_workers + 1):
        s.add_worker(f"w-{i}", f"tcp://127.0.0.1:{9000 + i}", f"w-{i}", 1, i, 0, [], 0.0)
    return s


def do(s: SchedulerState, source: str, msg: m.Message) -> list:
    out = s.handle(source, msg)
    s.validate()
    return out


def submit(key: str, deps: list[str] | None = None, retries: int = 0, seq: int = 0) -> m.Message:
    return m.Submit(key=key, func=1, args=b"args", deps=deps or [], priority=[0, 0, seq], retries=retries, workers=None, resources=None, loose=False)


def finished(key: str, value: list | None = None) -> m.Message:
    return m.TaskFinished(key=key, nbytes=8, type="int", value=value, inner=[], notified=[], attempt=0)


def erred(key: str, kind: str = "exception") -> m.Message:
    return m.TaskErred(key=key, exception=[b"exc"], traceback="Traceback", kind=kind, attempt=0)


def ops(out: list) -> list[tuple[str, str, str]]:
    return [(t, msg.op, getattr(msg, "key", "")) for t, msg in out]


def test_submit_sends_compute_to_a_worker():
    s = sched()
    out = do(s, "c-1", submit("a"))
    assert len(out) == 1 and out[0][1] == m.Compute(key="a", func=1, args=b"args", deps={}, priority=[0, 0, 0], retries=0, notify=["c-1"], attempt=1)
    assert s.tasks["a"].state == "processing" and s.tasks["a"].processing_on == out[0][0]


def test_task_finished_reports_memory_to_wanting_clients_only():
    s = sched()
    s.add_client("c-2")
    wid = do(s, "c-1", submit("a"))[0][0]
    do(s, "c-2", m.Want(keys=["a"]))
    out = do(s, wid, finished("a", [b"v"]))
    assert sorted(t for t, _ in out) == ["c-1", "c-2"]
    assert out[0][1] == m.KeyMemory(key="a", type="int", nbytes=8, who_has=["tcp://127.0.0.1:9001"] if wid == "w-1"
                                    else ["tcp://127.0.0.1:9002"], value=[b"v"])
    assert s.tasks["a"].who_has == {wid}


def test_release_frees_the_result_and_forgets_the_record():
    s = sched()
    wid = do(s, "c-1", submit("a"))[0][0]
    do(s, wid, finished("a"))
    out = do(s, "c-1", m.Release(keys=["a"]))
    assert out == [(wid, m.Free(keys=["a"]))]
    assert s.tasks == {} and not s.workers[wid].has_what and not s.clients["c-1"]


def test_release_while_processing_frees_the_worker_copy():
    s = sched()
    wid = do(s, "c-1", submit("a"))[0][0]
    assert do(s, "c-1", m.Release(keys=["a"])) == [(wid, m.Free(keys=["a"]))]
    assert s.tasks == {} and not s.workers[wid].processing
    assert do(s, wid, finished("a")) == [(wid, m.Free(keys=["a"]))]   # a late result is dropped


def test_dependencies_wait_then_run_with_who_has():
    s = sched()
    wa = do(s, "c-1", submit("a"))[0][0]
    assert do(s, "c-1", submit("b", ["a"])) == []
    assert s.tasks["b"].state == "waiting" and s.tasks["b"].waiting_on == {"a"}
    out = do(s, wa, finished("a"))
    compute = [(t, msg) for t, msg in out if msg.op == "compute"]
    addr = s.workers[wa].address
    assert compute == [(wa, m.Compute(key="b", func=1, args=b"args", deps={"a": [addr]}, priority=[0, 0, 0], retries=0, notify=["c-1"], attempt=2))]


def test_dependency_result_is_kept_while_a_dependent_needs_it():
    s = sched()
    wa = do(s, "c-1", submit("a"))[0][0]
    do(s, "c-1", submit("b", ["a"]))
    do(s, "c-1", m.Release(keys=["a"]))
    do(s, wa, finished("a"))
    assert s.tasks["a"].state == "memory"          # b still needs it
    wb = s.tasks["b"].processing_on
    do(s, wb, finished("b"))
    out = do(s, "c-1", m.Release(keys=["b"]))
    assert sorted(out, key=repr) == sorted([(wb, m.Free(keys=["b"])), (wa, m.Free(keys=["a"]))], key=repr)
    assert s.tasks == {}


def test_task_erred_propagates_to_dependents():
    s = sched()
    wa = do(s, "c-1", submit("a"))[0][0]
    do(s, "c-1", submit("b", ["a"]))
    do(s, "c-1", submit("c", ["b"]))
    out = do(s, wa, erred("a"))
    assert sorted(k for _, op, k in ops(out) if op == "key-erred") == ["a", "b", "c"]
    assert {s.tasks[k].state for k in "abc"} == {"erred"}
    assert s.tasks["c"].error == ([b"exc"], "Traceback", "exception")
    do(s, "c-1", m.Release(keys=["a", "b", "c"]))
    assert s.tasks == {}


def test_submit_on_an_erred_dependency_errs_at_once():
    s = sched()
    wa = do(s, "c-1", submit("a"))[0][0]
    do(s, wa, erred("a"))
    out = do(s, "c-1", submit("b", ["a"]))
    assert ops(out) == [("c-1", "key-erred", "b")]


def test_claim_creates_processing_and_a_second_claim_is_rejected():
    s = sched()
    claim = m.Claim(key="pure", func=1, args=b"", deps=[], priority=[0, 1, 1], retries=0, confirm=False)
    assert do(s, "w-1", claim) == []
    ts = s.tasks["pure"]
    assert ts.state == "processing" and ts.processing_on == "w-1" and ts.who_wants == {"w-1"}
    out = do(s, "w-2", claim)
    assert out == [("w-2", m.ClaimRejected(key="pure"))]
    assert ts.who_wants == {"w-1", "w-2"} and ts.processing_on == "w-1"
    out = do(s, "w-1", finished("pure"))
    assert ops(out) == [("w-2", "key-memory", "pure")]     # the claimer knows already


def test_claim_of_a_finished_key_reports_it():
    s = sched()
    do(s, "w-1", m.Claim(key="pure", func=1, args=b"", deps=[], priority=[0, 1, 1], retries=0, confirm=False))
    do(s, "w-1", finished("pure"))
    out = do(s, "w-2", m.Claim(key="pure", func=1, args=b"", deps=[], priority=[0, 1, 2], retries=0, confirm=False))
    assert ops(out) == [("w-2", "claim-rejected", "pure"), ("w-2", "key-memory", "pure")]


def test_idle_worker_steals_from_the_busiest():
    s = sched()
    for i in range(4):                  # w-2 is new, so idle: claims on w-1 are stolen
        out = do(s, "w-1", m.Claim(key=f"k{i}", func=1, args=b"", deps=[], priority=[0, 1, i], retries=0, confirm=False))
        if out:
            break
    steals = [msg.key for t, msg in out if t == "w-1" and msg.op == "steal"]
    assert steals and all(s.tasks[k].stealing == "w-2" for k in steals)
    key = steals[0]
    out = do(s, "w-1", m.StealReply(key=key, ok=True, later=False))
    assert [(t, msg.op, msg.key) for t, msg in out if msg.op == "compute"] == \
        [("w-2", "compute", key)]
    assert s.tasks[key].processing_on == "w-2" and s.tasks[key].who_wants == {"w-1"}


def test_refused_steal_leaves_the_task_with_its_worker():
    s = sched()
    out = []
    for i in range(3):
        out += do(s, "w-1", m.Claim(key=f"k{i}", func=1, args=b"", deps=[], priority=[0, 1, i], retries=0, confirm=False))
    key = next(msg.key for t, msg in out if msg.op == "steal")
    do(s, "w-1", m.StealReply(key=key, ok=False, later=False))
    assert s.tasks[key].processing_on == "w-1" and s.tasks[key].stealing is None


def test_scatter_replies_once_every_worker_stored_its_part():
    s = sched()
    out = do(s, "c-1", m.Scatter(rid=7, keys=["x", "y"], values=[[b"1"], [b"2"]], broadcast=True, workers=None))
    puts = {t: msg for t, msg in out}
    assert set(puts) == {"w-1", "w-2"} and all(p.op == "put-data" for p in puts.values())
    out = do(s, "w-1", m.PutDataDone(rid=puts["w-1"].rid, keys=["x", "y"], nbytes=[1, 1]))
    assert "reply" not in [msg.op for _, msg in out]
    out = do(s, "w-2", m.PutDataDone(rid=puts["w-2"].rid, keys=["x", "y"], nbytes=[1, 1]))
    assert ("c-1", m.Reply(rid=7, value=["x", "y"], error=None)) in out
    assert s.tasks["x"].who_has == {"w-1", "w-2"} and s.tasks["x"].scattered


def test_worker_death_reruns_its_processing_tasks_elsewhere():
    s = sched()
    wid = do(s, "c-1", submit("a"))[0][0]
    other = "w-2" if wid == "w-1" else "w-1"
    out = s.remove_worker(wid)
    s.validate()
    assert ops(out) == [(other, "compute", "a")]
    assert s.tasks["a"].suspicious == 1


def test_worker_death_recomputes_lost_results_through_released_dependencies():
    s = sched()
    do(s, "c-1", submit("a"))
    wa = s.tasks["a"].processing_on
    do(s, wa, finished("a"))
    do(s, "c-1", submit("b", ["a"]))
    wb = s.tasks["b"].processing_on
    do(s, wb, finished("b"))
    do(s, "c-1", m.Release(keys=["a"]))
    assert s.tasks["a"].state == "released"        # kept as b's recipe (lineage)
    s.add_worker("w-3", "tcp://127.0.0.1:9003", "w-3", 1, 3, 0, [], 0.0)
    out = s.remove_worker(wb)
    s.validate()
    # b's only copy died: a is recomputed first, then b
    assert [(op, k) for _, op, k in ops(out)] == [("compute", "a")]
    assert s.tasks["b"].state == "waiting" and s.tasks["b"].waiting_on == {"a"}
    out = do(s, s.tasks["a"].processing_on, finished("a"))
    assert ("compute", "b") in [(op, k) for _, op, k in ops(out)]


def test_worker_death_loses_scattered_data_for_good():
    s = sched(n_workers=1)
    out = do(s, "c-1", m.Scatter(rid=1, keys=["x"], values=[[b"1"]], broadcast=False, workers=None))
    do(s, "w-1", m.PutDataDone(rid=out[0][1].rid, keys=["x"], nbytes=[1]))
    s.add_worker("w-2", "tcp://127.0.0.1:9002", "w-2", 1, 2, 0, [], 0.0)
    out = s.remove_worker("w-1")
    s.validate()
    assert len(out) == 1 and out[0][0] == "c-1" and out[0][1].op == "key-erred"
    assert out[0][1].kind == "lost" and s.tasks["x"].state == "erred"


def test_a_task_that_keeps_killing_workers_is_stopped():
    s = sched(n_workers=1, allowed_failures=2)
    do(s, "c-1", submit("poison"))
    for i in range(2, 5):
        s.add_worker(f"w-{i}", f"tcp://127.0.0.1:{9000 + i}", f"w-{i}", 1, i, 0, [], 0.0)
        out = s.remove_worker(s.tasks["poison"].processing_on)
        s.validate()
    assert ops(out) == [("c-1", "key-erred", "poison")]
    assert out[0][1].kind == "killed" and "3 workers" in out[0][1].traceback


def test_cancel_tells_the_clients_and_frees_the_work():
    s = sched()
    s.add_client("c-2")
    wid = do(s, "c-1", submit("a"))[0][0]
    do(s, "c-1", submit("b", ["a"]))
    do(s, "c-2", m.Want(keys=["a"]))
    out = do(s, "c-1", m.Cancel(keys=["a"]))
    assert sorted(ops(out)) == sorted([("c-1", "key-cancelled", "b"), ("c-1", "key-cancelled", "a"),
                                       ("c-2", "key-cancelled", "a"), (wid, "free", "")])
    assert s.tasks == {}


def test_fire_and_forget_keeps_the_task_until_it_is_done():
    s = sched()
    wid = do(s, "c-1", submit("a"))[0][0]
    do(s, "c-1", m.FireAndForget(keys=["a"]))
    assert do(s, "c-1", m.Release(keys=["a"])) == []
    assert s.tasks["a"].state == "processing"
    out = do(s, wid, finished("a"))
    assert out == [(wid, m.Free(keys=["a"]))] and s.tasks == {}


def test_secede_frees_a_slot_and_rejoin_takes_it_back():
    s = sched(n_workers=1)
    do(s, "c-1", submit("a"))
    do(s, "w-1", m.Secede(key="a"))
    assert s.workers["w-1"].seceded == 1 and s.tasks["a"].running
    do(s, "w-1", m.Rejoin(key="a"))
    assert s.workers["w-1"].seceded == 0
    do(s, "w-1", m.Secede(key="a"))
    do(s, "w-1", finished("a"))                     # ends seceded: the slot comes back
    assert s.workers["w-1"].seceded == 0


# -- regressions found by the random histories below ----------------------------------------
def test_scatter_to_a_worker_that_dies_still_replies():
    # before: the client waited forever for a put-data-done that never came
    s = sched(n_workers=1)
    do(s, "c-1", m.Scatter(rid=3, keys=["x"], values=[[b"1"]], broadcast=False, workers=None))
    out = s.remove_worker("w-1")
    s.validate()
    assert len(out) == 1 and out[0][0] == "c-1" and out[0][1].op == "reply"
    assert out[0][1].rid == 3 and "died during the scatter" in out[0][1].error


def test_submit_with_an_unknown_dependency_leaves_no_dangling_dependent():
    # before: the known dependency kept the failed task as a dependent, breaking validate()
    s = sched()
    wid = do(s, "c-1", submit("a"))[0][0]
    out = do(s, "c-1", submit("b", ["a", "gone"]))
    assert ops(out) == [("c-1", "key-erred", "b")] and out[0][1].kind == "lost"
    assert s.tasks["a"].dependents == set()
    do(s, wid, finished("a"))
    do(s, "c-1", m.Release(keys=["a"]))
    assert s.tasks == {}


def test_scatter_whose_client_left_is_freed_when_it_lands():
    # before: the put-data-done re-created the client's want list and the data stayed forever
    s = sched(n_workers=1)
    do(s, "c-1", m.Scatter(rid=1, keys=["x"], values=[[b"1"]], broadcast=False, workers=None))
    s.remove_client("c-1")
    out = do(s, "w-1", m.PutDataDone(rid=1, keys=["x"], nbytes=[1]))
    assert out == [("w-1", m.Free(keys=["x"]))]
    assert s.tasks == {} and "c-1" not in s.clients


def test_claim_whose_dependency_erred_errs_instead_of_processing_forever():
    # before: the claim stayed processing@w-1 although the worker had erred it locally
    s = sched()
    do(s, "w-1", m.Claim(key="a", func=1, args=b"", deps=[], priority=[0, 1, 1], retries=0, confirm=False))
    do(s, "w-1", erred("a"))
    out = do(s, "w-1", m.Claim(key="b", func=1, args=b"", deps=["a"], priority=[0, 1, 2], retries=0, confirm=False))
    assert ops(out) == [("w-1", "key-erred", "b")]
    assert s.tasks["b"].state == "erred" and not s.workers["w-1"].processing
    do(s, "w-1", m.Release(keys=["a", "b"]))
    assert s.tasks == {}



def test_claim_of_a_key_already_assigned_to_the_same_worker_is_kept():
    # before: a client's submit and a task's claim of one pure key raced; the scheduler
    # sent compute (a no-op: the claimed copy was queued) then claim-rejected, and the
    # worker dropped its only copy: processing there forever
    s = sched(n_workers=1)
    do(s, "c-1", submit("pure"))
    assert do(s, "w-1", m.Claim(key="pure", func=1, args=b"", deps=[], priority=[0, 1, 1], retries=0, confirm=False)) == []
    assert s.tasks["pure"].who_wants == {"c-1", "w-1"}
    assert ops(do(s, "w-1", finished("pure"))) == [("c-1", "key-memory", "pure")]


def parent_running() -> tuple[Cluster, str, str]:
    """A cluster of one client and one worker, running the client's task ``parent``."""
    c = Cluster()
    cid = c.add_client()
    wid = c.add_worker()
    c.submit(cid, "parent", [])
    c.step_all()
    c.start_task(wid)
    return c, cid, wid


def test_claim_and_submit_of_one_pure_key_end_in_memory_on_one_worker():
    c, cid, wid = parent_running()
    c.submit(cid, "pure", [])                     # both reach the scheduler together
    c.claim(wid, "parent", "pure")
    c.drain(release=False)
    c.assert_consistent()
    assert c.s.tasks["pure"].state == "memory"
    c.drain()
    c.assert_clean()


def test_compute_names_the_waiting_clients_and_told_ones_are_not_told_twice():
    s = sched()
    s.add_client("c-2")
    wid = do(s, "c-1", submit("a"))[0][0]
    do(s, "c-2", m.Want(keys=["a"]))
    out = do(s, wid, m.TaskFinished(key="a", nbytes=8, type="int", value=[b"v"], inner=[], notified=["c-1"], attempt=0))
    assert ops(out) == [("c-2", "key-memory", "a")]     # c-1 heard from the worker


def test_a_reminding_client_is_told_by_the_scheduler_whatever_the_worker_says():
    s = sched()
    wid = do(s, "c-1", submit("a"))[0][0]
    assert do(s, "c-1", m.Remind(keys=["a", "never-submitted"])) == []   # unknown keys: on their way
    out = do(s, wid, m.TaskFinished(key="a", nbytes=8, type="int", value=[b"v"], inner=[], notified=["c-1"], attempt=0))
    assert ops(out) == [("c-1", "key-memory", "a")]
    assert ops(do(s, "c-1", m.Remind(keys=["a"]))) == [("c-1", "key-memory", "a")]


def test_a_paused_worker_gets_no_new_task_while_another_can_take_it():
    s = sched()
    do(s, "w-1", m.Paused(paused=True))
    assert [t for t, _ in do(s, "c-1", submit("a"))] == ["w-2"]
    assert [t for t, _ in do(s, "c-1", submit("b"))] == ["w-2"]
    do(s, "w-2", m.Paused(paused=True))              # all paused: it queues somewhere anyway
    assert len(do(s, "c-1", submit("c"))) == 1
    do(s, "w-1", m.Idle())                    # a paused worker's idle is not believed
    assert "w-1" not in s.idle


def test_idle_workers_take_unstarted_tasks_of_a_paused_one():
    s = sched()
    do(s, "w-2", m.Paused(paused=True))
    do(s, "c-1", submit("a"))                  # on w-1, which has a slot for it
    do(s, "w-2", m.Paused(paused=False))
    do(s, "w-2", m.Idle())                     # nothing to take: w-1 will start it
    assert s.stealing.steals == {}
    out = do(s, "w-1", m.Paused(paused=True))         # now w-1 will not (unless it already did:
    assert ops(out) == [("w-1", "steal", "a")]  # its steal-reply says which)
    assert s.workers["w-1"].paused and "w-1" not in s.idle


def test_a_late_report_of_a_released_run_is_not_taken_for_the_resubmitted_one():
    # The worker tells the client straight away; the client releases the key and submits
    # it again before the scheduler reads the worker's report. That report (and its
    # "c-1 was told") belongs to the released run, whose result the worker is freeing.
    s = sched()
    first = do(s, "c-1", submit("a"))
    w1, attempt1 = first[0][0], first[0][1].attempt
    assert do(s, "c-1", m.Release(keys=["a"])) == [(w1, m.Free(keys=["a"]))]
    second = do(s, "c-1", submit("a"))
    w2, attempt2 = second[0][0], second[0][1].attempt
    assert second[0][1].op == "compute" and attempt2 != attempt1
    late = m.TaskFinished(key="a", nbytes=8, type="int", value=[b"v"], inner=[], notified=["c-1"], attempt=attempt1)
    assert do(s, w1, late) == []
    ts = s.tasks["a"]
    assert ts.state == "processing" and ts.processing_on == w2 and not ts.who_has
    # the new run's report counts, and the client hears of it
    out = do(s, w2, m.TaskFinished(key="a", nbytes=8, type="int", value=[b"v"], inner=[], notified=[], attempt=attempt2))
    assert ops(out) == [("c-1", "key-memory", "a")]
    assert s.tasks["a"].who_has == {w2}


def test_a_late_error_of_a_released_run_does_not_err_the_resubmitted_one():
    s = sched()
    first = do(s, "c-1", submit("a"))
    w1, attempt1 = first[0][0], first[0][1].attempt
    do(s, "c-1", m.Release(keys=["a"]))
    do(s, "c-1", submit("a"))
    assert do(s, w1, m.TaskErred(key="a", exception=[b"exc"], traceback="Traceback", kind="exception", attempt=attempt1)) == []
    assert s.tasks["a"].state == "processing"


# == placed tasks ============================================================================
def placed(key: str, worker: int = 1, seq: int = 1, nbytes: int = -1,
           pinned: bool = False) -> m.Message:
    return m.Placed(key=key, func=1, args=b"args", priority=[0, 0, seq], retries=0, worker=f"tcp://127.0.0.1:{9000 + worker}", seq=seq, nbytes=nbytes, type="int" if nbytes >= 0 else "", pinned=pinned)


def test_a_pinned_placed_task_is_never_stolen_by_an_idle_worker():
    s = sched()
    for seq in range(1, 7):           # w-2 is idle: unpinned ones would be stolen
        out = do(s, "c-1", placed(f"p{seq}", worker=1, seq=seq, pinned=True))
        assert not [msg for _, msg in out if msg.op == "steal"]
    assert all(s.tasks[f"p{i}"].processing_on == "w-1" for i in range(1, 7))


def test_a_pinned_placed_task_on_a_worker_that_left_errs_as_lost():
    s = sched()
    out = do(s, "c-1", placed("a", worker=7, pinned=True))
    assert ops(out) == [("c-1", "key-erred", "a")] and s.tasks["a"].error[2] == "lost"


def test_a_key_wanted_again_after_its_release_is_reported_though_the_worker_told_the_placer():
    # the worker's direct word reached the client's released future; the new one waits
    s = sched()
    do(s, "c-1", placed("a", worker=1))
    attempt = s.tasks["a"].attempt
    do(s, "c-1", m.Want(keys=["a"]))
    out = do(s, "w-1", m.TaskFinished(key="a", nbytes=8, type="int", value=[b"v"], inner=[], notified=["c-1"], attempt=attempt))
    assert ops(out) == [("c-1", "key-memory", "a")]


def test_a_placed_task_is_processing_where_the_client_put_it_and_is_confirmed_there():
    s = sched()
    out = do(s, "c-1", placed("a", worker=2))
    attempt = s.tasks["a"].attempt
    assert out == [("w-2", m.Confirm(key="a", client="c-1", seq=1, attempt=attempt))] and attempt > 0
    assert s.tasks["a"].processing_on == "w-2" and s.tasks["a"].who_wants == {"c-1"}
    out = do(s, "w-2", m.TaskFinished(key="a", nbytes=8, type="int", value=[b"v"], inner=[], notified=["c-1"], attempt=attempt))
    assert out == [] and s.tasks["a"].who_has == {"w-2"}     # the client heard already


def test_a_placed_task_whose_result_came_first_is_in_memory_there_at_once():
    s = sched()
    s.add_client("c-2")
    do(s, "c-2", m.Want(keys=["x"]))      # (unknown: c-2 hears it is lost; it asks again below)
    out = do(s, "c-1", placed("a", worker=1, nbytes=8))
    assert s.tasks["a"].state == "memory" and s.tasks["a"].who_has == {"w-1"}
    assert ops(out) == [("w-1", "confirm", "a")]
    assert ops(do(s, "c-2", m.Want(keys=["a"]))) == [("c-2", "key-memory", "a")]


def test_a_placed_key_known_elsewhere_drops_the_copy_and_one_counted_there_keeps_it():
    s = sched()
    wid = do(s, "c-1", submit("a"))[0][0]
    other = 3 - int(wid[2:])
    s.add_client("c-2")
    out = do(s, "c-2", placed("a", worker=other))
    assert out == [(f"w-{other}", m.Confirm(key="a", client="c-2", seq=1, attempt=-1))]
    out = do(s, "c-2", placed("a", worker=int(wid[2:]), seq=2))
    assert out == [(wid, m.Confirm(key="a", client="c-2", seq=2, attempt=s.tasks["a"].attempt))]
    assert s.tasks["a"].who_wants == {"c-1", "c-2"}


def test_a_task_placed_on_a_worker_that_left_runs_the_usual_way():
    s = sched()
    out = do(s, "c-1", placed("a", worker=7))
    assert [op for _, op, _ in ops(out)] == ["compute"]


def test_a_lost_lane_sends_what_was_placed_there_the_usual_way():
    s = sched()
    do(s, "c-1", placed("a", worker=1, seq=3))
    first = s.tasks["a"].attempt
    out = do(s, "c-1", m.LaneLost(worker="tcp://127.0.0.1:9001"))
    assert ops(out) == [("w-1", "compute", "a"), ("w-1", "withdraw", "")]
    assert out[1][1] == m.Withdraw(client="c-1", upto=3) and s.tasks["a"].attempt > first


def test_not_here_reruns_the_placed_task_if_that_run_is_still_the_one():
    s = sched()
    do(s, "c-1", placed("a", worker=1))
    attempt = s.tasks["a"].attempt
    assert do(s, "w-1", m.NotHere(key="a", attempt=attempt - 1)) == []        # an older run: ignored
    out = do(s, "w-1", m.NotHere(key="a", attempt=attempt))
    assert [op for _, op, _ in ops(out)] == ["compute"] and s.tasks["a"].attempt > attempt


def test_the_client_leaving_tells_workers_its_places_are_over():
    s = sched()
    do(s, "c-1", placed("a", worker=1))
    out = s.remove_client("c-1")
    assert ("w-1", m.ClientGone(client="c-1")) in out and ("w-2", m.ClientGone(client="c-1")) in out


def test_a_stale_report_from_a_worker_no_longer_running_the_task_frees_its_copy():
    s = sched()
    do(s, "c-1", placed("a", worker=1))
    first = s.tasks["a"].attempt
    do(s, "w-1", m.Paused(paused=True))
    do(s, "w-1", m.NotHere(key="a", attempt=first))                 # it runs on w-2 now
    assert s.tasks["a"].processing_on == "w-2"
    out = do(s, "w-1", m.TaskFinished(key="a", nbytes=8, type="int", value=None, inner=[], notified=[], attempt=first))
    assert out == [("w-1", m.Free(keys=["a"]))]


def test_where_queries_wait_for_every_worker_to_sync():
    s = sched()
    out = do(s, "c-1", m.Query(rid=5, what="who_has", arg=None))
    assert sorted(ops(out)) == [("w-1", "sync", ""), ("w-2", "sync", "")]
    rid = out[0][1].rid
    assert do(s, "w-1", m.Synced(rid=rid)) == []
    out = s.remove_worker("w-2")           # a worker that dies answers no more
    assert out == [("c-1", m.Reply(rid=5, value={}, error=None))]
    assert ops(do(s, "c-1", m.Query(rid=6, what="workers", arg=None))) == [("c-1", "reply", "")]


def test_a_workers_want_of_a_forgotten_key_is_answered_unknown_a_clients_lost():
    # the worker's own release went first: the scheduler forgot the key; its in-task
    # client claims it anew if it still waits (a stale answer is dropped there)
    s = sched()
    assert do(s, "w-1", m.Want(keys=["gone"])) == [("w-1", m.Unknown(key="gone"))]
    out = do(s, "c-1", m.Want(keys=["gone"]))
    assert ops(out) == [("c-1", "key-erred", "gone")] and out[0][1].kind == "lost"


def test_a_want_answered_unknown_claims_the_task_anew_if_its_future_still_waits():
    c, cid, wid = parent_running()
    c.claim(wid, "parent", "child")
    c.start_task(wid)                     # the child runs (on another thread)
    while c.to_sched[wid]:
        c.deliver_to_scheduler(wid)       # the claim reaches the scheduler
    w = c.workers[wid]
    assert w.state.tasks["child"].state == "executing"
    w.running["parent"].children.remove("child")
    c._worker_release(w, "child")         # released: the release is on its way
    c.claim(wid, "parent", "child")       # still running here: wanted, not claimed
    assert c.to_sched[wid][-1] == m.Want(keys=["child"]) and "child" not in w.settled
    while c.to_sched[wid]:
        c.deliver_to_scheduler(wid)       # release (the scheduler frees it), then want
    c.deliver_to_worker(wid)              # free: the run here is cancelled
    c.deliver_to_worker(wid)              # unknown: the waiting future claims it anew
    assert w.state.tasks["child"].state == "executing" and w.state.tasks["child"].owned
    assert isinstance(c.to_sched[wid][-1], m.Claim)
    c.finish(wid, "child")
    assert "child" in w.settled           # the parent's future has its value
    while c.to_sched[wid]:
        c.deliver_to_scheduler(wid)
    assert c.s.tasks["child"].state == "memory"
    c.drain()
    c.assert_clean()


def test_a_result_computed_again_holds_its_own_inner_futures_not_the_lost_ones():
    # before: the second result's holder replaced the first's set, and the futures the
    # lost result held stayed wanted by it forever
    s = sched()
    first = do(s, "c-1", submit("t"))[0]
    wid, other = first[0], "w-2" if first[0] == "w-1" else "w-1"
    do(s, wid, m.Claim(key="k-old", func=1, args=b"", deps=[], priority=[0, 1, 1], retries=0, confirm=False))
    do(s, wid, m.TaskFinished(key="t", nbytes=8, type="dict", value=None, inner=["k-old"], notified=[], attempt=first[1].attempt))
    do(s, wid, m.Release(keys=["k-old"]))          # only the result holds it now
    assert s.tasks["k-old"].who_wants == {"^t"}
    out = s.remove_worker(wid)                # t's result (and k-old) lost: t runs again
    s.validate()
    again = next(msg for _, msg in out if msg.op == "compute" and msg.key == "t")
    do(s, other, m.Claim(key="k-new", func=1, args=b"", deps=[], priority=[0, 1, 2], retries=0, confirm=False))
    do(s, other, m.TaskFinished(key="t", nbytes=8, type="dict", value=None, inner=["k-new"], notified=[], attempt=again.attempt))
    assert s.tasks["k-new"].who_wants == {"^t", other}
    assert "k-old" not in s.tasks or "^t" not in s.tasks["k-old"].who_wants
    do(s, other, m.Release(keys=["k-new"]))
    do(s, "c-1", m.Release(keys=["t"]))
    assert s.tasks == {}


def test_a_claim_crossing_the_free_of_an_earlier_life_of_its_key_is_made_again():
    # before: the worker dropped the record its own claim needed, and the scheduler
    # waited for it there forever (found by the random histories)
    c, cid, wid = parent_running()
    c.submit(cid, "pure", [])
    c.release(cid, "pure")                  # the client lets go at once...
    c.claim(wid, "parent", "pure")          # ...while a task here submits the same call
    while c.to_sched[cid]:
        c.deliver_to_scheduler(cid)         # compute, then free, of the client's life
    while c.to_sched[wid]:
        c.deliver_to_scheduler(wid)         # the worker's claim: a new life, here
    w = c.workers[wid]
    while w.inbox:
        c.deliver_to_worker(wid)            # compute, free: the waiting future claims again
    assert w.state.tasks["pure"].owned and isinstance(c.to_sched[wid][-1], m.Claim)
    while c.to_sched[wid]:
        c.deliver_to_scheduler(wid)
    assert c.s.tasks["pure"].processing_on == wid
    assert c.start_task(wid) == "pure"
    c.finish(wid, "pure")
    assert "pure" in w.settled               # the task's future has its value
    while c.to_sched[wid]:
        c.deliver_to_scheduler(wid)
    assert c.s.tasks["pure"].state == "memory"
    c.drain()
    c.assert_clean()


# -- many workers: where a task that may run anywhere goes ---------------------------------
def test_with_many_idle_workers_a_few_tasks_go_one_to_each():
    s = sched(40)
    targets = [do(s, "c-1", submit(f"t{i}"))[0][0] for i in range(10)]
    assert len(set(targets)) == 10, targets       # long tasks spread, none waits behind another


def test_in_a_large_cluster_no_new_task_goes_to_a_retiring_worker():
    """(Beyond 16 workers a task goes to the least loaded of a few next in turn: a
    window of retiring workers only must not give it one of them.)"""
    s = sched(40)
    leaving = [f"w-{i}" for i in range(1, 11)]
    do(s, "c-1", m.Retire(rid=0, workers=leaving, timeout_ms=60_000))
    targets = [do(s, "c-1", submit(f"t{i}"))[0][0] for i in range(200)]
    assert not set(targets) & set(leaving)
