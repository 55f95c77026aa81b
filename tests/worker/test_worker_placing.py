"""WorkerState's placed tasks: a client sends a task straight to this worker, and the
scheduler confirms it after (or withdraws it)."""
from __future__ import annotations

import pytest

from tasknest.protocol import messages as m
from tasknest.worker.actions import Drop, Ready, Tell
from tasknest.worker.state import WorkerState
from wstate import ME, compute, kinds, prio, sent

pytestmark = pytest.mark.timeout(60)


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
    assert kinds(out, Tell) == [Tell(C, m.KeyMemory(key="p", type="int", nbytes=8, who_has=[ME],
                                                    value=[b"v"]))]
    assert not sent(out)
    out = ws.handle(m.Confirm(key="p", client=C, seq=1, attempt=7))
    assert sent(out) == [m.TaskFinished(key="p", nbytes=8, type="int", value=[b"v"], inner=[],
                                        notified=[C], attempt=7)]
    ws.validate()
    assert ws.handle(m.Free(keys=["p"])) == [Drop("p")] and ws.tasks == {}


def test_a_confirm_before_its_place_is_kept_until_the_place_comes():
    ws = WorkerState(ME)
    assert ws.handle(m.Confirm(key="p", client=C, seq=1, attempt=7)) == []
    assert ws.placing.early == {(C, 1): ("p", 7)}
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
    ws.handle(m.Confirm(key="queued", client=C, seq=3, attempt=-1))
    assert "queued" not in ws.tasks
    ws.handle(m.Confirm(key="running", client=C, seq=2, attempt=-1))
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
    assert kinds(out, Tell) == [Tell(C, m.KeyMemory(key="k", type="int", nbytes=8, who_has=[ME],
                                                    value=None))]
    assert ws.handle(m.Free(keys=["k"])) == [] and ws.tasks["k"].state == "memory"
    # the scheduler counts this copy anew
    out = ws.handle(m.Confirm(key="k", client=C, seq=1, attempt=9))
    assert sent(out) == [m.TaskFinished(key="k", nbytes=8, type="int", value=None, inner=[],
                                        notified=[], attempt=9)]
    assert ws.tasks["k"].owned and ws.tasks["k"].attempt == 9
    # the same, but the task lives elsewhere now: the uncounted copy goes
    ws2 = WorkerState(ME)
    compute(ws2, "k")
    ws2.pop_ready()
    ws2.finished("k", 8, "int", None, [], ())
    place(ws2, "k", 1)
    ws2.handle(m.Free(keys=["k"]))
    assert ws2.handle(m.Confirm(key="k", client=C, seq=1, attempt=-1)) == [Drop("k")]
    assert ws2.tasks == {}


def test_a_confirm_counting_a_copy_that_never_came_says_not_here():
    ws = WorkerState(ME)
    ws.handle(m.Confirm(key="p", client=C, seq=1, attempt=7))
    out = ws.handle(m.ClientGone(client=C))  # the client left: its place will never come
    assert sent(out) == [m.NotHere(key="p", attempt=7)] and ws.placing.early == {}
    ws.handle(m.Confirm(key="q", client=C, seq=2, attempt=8))
    ws.handle(m.Withdraw(client=C, upto=2))  # its lane broke: the scheduler sent q by compute
    assert ws.placing.early == {}


def test_a_free_or_steal_of_a_run_still_on_its_way_leaves_other_records_alone():
    ws = WorkerState(ME)
    ws.claim("k", 1, b"", [], prio(1, 1), 0)     # a task here claimed the key too
    # a client's place of it, not arrived yet
    ws.handle(m.Confirm(key="k", client=C, seq=1, attempt=7))
    assert sent(ws.handle(m.Steal(key="k"))) == [m.StealReply(key="k", ok=False, later=False)]
    assert ws.handle(m.Free(keys=["k"])) == [] and ws.tasks["k"].state == "ready"
    assert ws.placing.early == {(C, 1): ("k", -1)}        # that run is not wanted any more
    place(ws, "k", 1)
    assert ws.placing.early == {} and ws.tasks["k"].state == "ready"
    ws.validate()


def test_client_gone_drops_its_uncounted_copies():
    ws = WorkerState(ME)
    place(ws, "p", 1)
    place(ws, "q", 2, client="c-2")
    assert ws.handle(m.ClientGone(client=C)) == []
    assert "p" not in ws.tasks and ws.tasks["q"].placers == (("c-2", 2),)
    ws.validate()


def test_a_task_here_submitting_an_uncounted_placed_key_claims_it():
    ws = WorkerState(ME)
    place(ws, "p", 1)
    out = ws.claim("p", 1, b"", [], prio(1, 2), 0)
    assert sent(out) == [m.Claim(key="p", func=1, args=b"", deps=[], priority=prio(1, 2),
                                 retries=0, confirm=False)]
    assert ws.tasks["p"].state == "ready"
    ws.validate()


def test_a_placed_task_that_fails_tells_its_client_and_holds_the_report():
    ws = WorkerState(ME)
    place(ws, "p", 1)
    ws.pop_ready()
    out = ws.erred("p", [b"e"], "tb", "exception", {C})
    assert kinds(out, Tell) == [Tell(C, m.KeyErred(key="p", exception=[b"e"], traceback="tb",
                                                   kind="exception"))]
    assert not sent(out)
    ws.idle(True)                                 # (erred records are reaped: not this one)
    assert sent(ws.handle(m.Confirm(key="p", client=C, seq=1, attempt=4))) == [
        m.TaskErred(key="p", exception=[b"e"], traceback="tb", kind="exception", attempt=4)]
    ws.idle(True)
    assert ws.tasks == {}
