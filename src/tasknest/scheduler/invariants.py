"""The scheduler's invariants: what its records must agree on after every event.

Tests run ``validate()`` after each event they feed the state machine (the
hypothesis harness after every step); the server runs it once per loop tick
when TASKNEST_VALIDATE is set. Mixed into SchedulerState, whose records it reads.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .records import Task, WorkerInfo


class InvariantsMixin:
    if TYPE_CHECKING:
        tasks: dict[str, Task]
        workers: dict[str, WorkerInfo]
        clients: dict[str, set[str]]
        unrunnable: dict[str, Task]
        paused: set[str]
        addresses: dict[str, str]
        steals: dict[str, tuple[str, str]]
        components: list

    def validate(self) -> None:
        """Raise AssertionError if the records contradict each other."""
        for key, ts in self.tasks.items():
            assert ts.key == key
            assert ts.state in ("released", "waiting", "processing", "memory", "erred"), ts
            if ts.state == "memory":
                assert ts.who_has, f"{ts} in memory nowhere"
                for w in ts.who_has:
                    assert key in self.workers[w].has_what, (ts, w)
            else:
                assert not ts.who_has, (ts, ts.who_has)
            if ts.state == "processing":
                assert ts.processing_on in self.workers, ts
                assert key in self.workers[ts.processing_on].processing, ts
            else:
                assert ts.processing_on is None, ts
                assert not ts.running, ts
            if ts.state == "waiting":
                assert ts.waiting_on or key in self.unrunnable, ts
            for d in ts.waiting_on:
                assert d in ts.deps and self.tasks[d].state != "memory", (ts, d)
            for d in ts.deps:
                assert key in self.tasks[d].dependents, (ts, d)
            for dk in ts.dependents:
                assert dk in self.tasks and key in self.tasks[dk].deps, (ts, dk)
            for cid in ts.who_wants:
                assert key in self.clients.get(cid, ()), (ts, cid)
            if ts.state == "erred":
                assert ts.error is not None
        for cid, keys in self.clients.items():
            for key in keys:
                assert key in self.tasks and cid in self.tasks[key].who_wants, (cid, key)
        assert self.paused == {w for w, ws in self.workers.items() if ws.paused}, self.paused
        assert self.addresses == {ws.address: wid for wid, ws in self.workers.items()}, \
            self.addresses
        for wid, ws in self.workers.items():
            running = 0
            for key in ws.processing:
                ts = self.tasks[key]
                assert ts.state == "processing" and ts.processing_on == wid, (ws, ts)
                running += ts.running
            assert running == ws.seceded, (wid, running, ws.seceded)
            for key in ws.has_what:
                assert wid in self.tasks[key].who_has, (wid, key)
            assert ws.asked == sum(1 for t, _ in self.steals.values() if t == wid), (wid, ws.asked)
        for c in self.components:
            c.validate()
