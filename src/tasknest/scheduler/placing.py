"""Placed tasks, the scheduler's side: a client put a dependency-free task straight on
a worker, and tells us afterwards (``placed``).

    client ──placed──> scheduler ──confirm (attempt n: yours; -1: drop it)──> worker
    client ──lane-lost──> scheduler ──compute (the usual way), withdraw──> worker
    worker ──not-here (a counted copy never came)──> scheduler: run it elsewhere

Each ``placed`` gets exactly one ``confirm``; the client's later messages about the
key come after it on the same connection. A component of SchedulerState: it owns
the clients' place counts and uses the state's transitions.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol import messages as m
from .component import Component
from .records import UNCOUNTED, Task, WorkerInfo

if TYPE_CHECKING:
    from .state import SchedulerState


class Placing(Component):
    def __init__(self, state: "SchedulerState") -> None:
        super().__init__(state)
        self.placers: dict[str, int] = {}    # client -> highest seq of its placed tasks
        state.register("placed", self._on_placed)
        state.register("lane-lost", self._on_lane_lost)
        state.register("not-here", self._on_not_here)

    def _on_placed(self, cid: str, msg: m.Placed) -> None:
        """The client placed a dependency-free task straight on a worker, which runs it
        and holds its report until we confirm (or drop) that copy. Every ``placed`` gets
        exactly one ``confirm``; the client's later messages about the key come after
        this one, so the scheduler is never surprised by them."""
        key = msg.key
        wid = self.state.addresses.get(msg.worker)
        restrict = ["!" + msg.worker] if msg.pinned else None
        if wid is None:          # that worker is gone: its copy went with it
            self.state._submitted(cid, key, msg.func, msg.args, [], msg.priority,
                            msg.retries, restrict)
            return
        ws = self.state.workers[wid]
        self.placers[cid] = max(self.placers.get(cid, 0), msg.seq)
        ts = self.state.tasks.get(key)
        if ts is not None and ts.state != "released":
            self.state._want(ts, cid)
            # the copy there is the one we count, or it goes (the task lives elsewhere)
            here = ts.processing_on == wid or wid in ts.who_has
            self.state._emit(wid, m.Confirm(key, cid, msg.seq,
                                      ts.attempt if here else UNCOUNTED))
            self.state._report(ts, cid)
            return
        if ts is None:
            ts = self.state.tasks[key] = Task(key, msg.func, msg.args, [], msg.priority,
                                        msg.retries)
        elif ts.func is None:
            ts.func, ts.args = msg.func, msg.args
        if restrict is not None:
            ts.restrict = restrict       # never stolen: it runs there or errs as lost
        self.state._want(ts, cid)
        self.state._set_processing(ts, ws)
        self.state._attempts += 1
        ts.attempt = self.state._attempts
        ts.placed = (cid, ts.attempt)
        self.state._emit(wid, m.Confirm(key, cid, msg.seq, ts.attempt))
        if msg.nbytes != m.NOT_YET: # the result reached the client already
            self.state._task_done(ts, ws, msg.nbytes, msg.type, None, [], [cid])
        elif self.state.idle:
            self.state.stealing.offer(wid)

    def _on_lane_lost(self, cid: str, msg: m.LaneLost) -> None:
        """The client's connection to a worker broke: tasks it placed there may never
        have arrived. Those still counted as its placed copies there go the usual way
        (a worker that has the copy adopts the compute), and the worker forgets the
        confirms it keeps for places that will never come (any later place has a
        higher seq)."""
        wid = self.state.addresses.get(msg.worker)
        if wid is None or cid not in self.placers:
            return                       # that worker is gone (its tasks went on), or none
        ws = self.state.workers[wid]
        for key in list(ws.processing):
            ts = self.state.tasks[key]
            if ts.placed == (cid, ts.attempt):
                self.state._send_compute(ts, ws)
        self.state._emit(wid, m.Withdraw(cid, self.placers[cid]))

    def _on_not_here(self, wid: str, msg: m.NotHere) -> None:
        """A copy a client placed there, which we counted as this compute, never
        arrived (or is gone): if that is still the task's run, run it elsewhere."""
        ts = self.state.tasks.get(msg.key)
        if ts is not None and ts.state == "processing" and ts.processing_on == wid \
                and ts.attempt == msg.attempt:
            self.state.workers[wid].processing.discard(ts.key)
            if ts.running:
                self.state.workers[wid].seceded -= 1
            ts.processing_on = None
            ts.running = False
            ts.stealing = None
            ts.state = "released"
            self.state._recompute(ts)

    # -- the component's hooks ------------------------------------------------------------
    def source_gone(self, source: str) -> None:
        self.placers.pop(source, None)

