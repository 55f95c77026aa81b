"""The scheduler's invariants: what its records must agree on after every event.

Tests run ``validate()`` after each event they feed the state machine (the
hypothesis harness after every step); the server runs it once per loop tick
when TASKNEST_VALIDATE is set. A plain function over the state: each component
checks its own records in its ``validate()``, called from here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, get_args

from .records import TaskState

if TYPE_CHECKING:
    from .state import SchedulerState


def validate(st: "SchedulerState") -> None:
    """Raise AssertionError if the records contradict each other."""
    for key, ts in st.tasks.items():
        assert ts.key == key
        assert ts.state in get_args(TaskState), ts
        if ts.state == "memory":
            assert ts.who_has, f"{ts} in memory nowhere"
            for w in ts.who_has:
                assert key in st.workers[w].has_what, (ts, w)
            if type(ts.who_has) is not set:        # (one worker's shared {wid})
                assert ts.who_has is st.workers[next(iter(ts.who_has))].alone, ts
        else:
            assert not ts.who_has, (ts, ts.who_has)
        if ts.state == "processing":
            assert ts.processing_on in st.workers, ts
            assert key in st.workers[ts.processing_on].processing, ts
        else:
            assert ts.processing_on is None, ts
            assert not ts.running, ts
        if ts.state == "waiting":
            assert ts.waiting_on or key in st.unrunnable, ts
        for d in ts.waiting_on:
            assert d in ts.deps and st.tasks[d].state != "memory", (ts, d)
        for d in ts.deps:
            assert key in st.tasks[d].dependents, (ts, d)
        for dk in ts.dependents:
            assert dk in st.tasks and key in st.tasks[dk].deps, (ts, dk)
        for cid in ts.who_wants:
            assert key in st.clients.get(cid, ()), (ts, cid)
        if type(ts.who_wants) is not set:          # (nobody, or one holder's shared set)
            assert len(ts.who_wants) <= 1 and (not ts.who_wants or ts.who_wants is st.alone[
                next(iter(ts.who_wants))]), (ts, ts.who_wants)
        if ts.state == "erred":
            assert ts.error is not None
    assert st.alone.keys() <= st.clients.keys(), st.alone.keys() - st.clients.keys()
    for cid, keys in st.clients.items():
        for key in keys:
            assert key in st.tasks and cid in st.tasks[key].who_wants, (cid, key)
    assert st.paused == {w for w, ws in st.workers.items() if ws.paused}, st.paused
    assert st.addresses == {ws.address: wid for wid, ws in st.workers.items()}, \
        st.addresses
    for wid, ws in st.workers.items():
        running = 0
        for key in ws.processing:
            ts = st.tasks[key]
            assert ts.state == "processing" and ts.processing_on == wid, (ws, ts)
            running += ts.running
        assert running == ws.seceded, (wid, running, ws.seceded)
        for key in ws.has_what:
            assert wid in st.tasks[key].who_has, (wid, key)
    for c in st.components:
        c.validate()
