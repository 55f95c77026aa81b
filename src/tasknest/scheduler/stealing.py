"""Work stealing: idle workers take unstarted tasks from the busiest one.

A worker with a free slot and nothing ready says ``idle``; the scheduler asks the
busiest worker for its shallowest unstarted tasks (the biggest subtrees). The
victim answers each request truthfully (``steal-reply ok`` only if the task had
not started), so a task never runs twice by accident; one found running is never
asked for again. A component of SchedulerState: it owns the open steal requests
and registers its handlers; retirement moves a leaving worker's queue with ``ask``.
"""
from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from ..protocol import messages as m
from .component import Component
from .records import Task, WorkerInfo

if TYPE_CHECKING:
    from .state import SchedulerState

STEAL_BATCH = 64
STEAL_SCAN = 2048          # candidates looked at per steal round
STEAL_DATA_LIMIT = 4096    # bytes of inputs a stolen task may need moved
STEAL_VICTIMS = 16         # workers looked at for a victim (all, in a cluster this small)
OFFER_THIEVES = 4          # idle workers offered a share of a worker's new work per event


def _steal_order(ts: "Task") -> tuple:
    p = ts.priority
    return (p[1] if len(p) > 1 else 0, -(p[2] if len(p) > 2 else 0))


def _slots(ws: WorkerInfo) -> int:
    """Tasks a worker will start soon: none while it is paused."""
    return 0 if ws.paused else ws.nthreads


class Stealing(Component):
    def __init__(self, state: "SchedulerState") -> None:
        super().__init__(state)
        self.steals: dict[str, tuple[str, str]] = {}     # key -> (thief, victim), while asked
        self.fruitless: dict[str, tuple[str, int]] = {}  # thief -> (victim, its size) at a vain scan
        state.register("idle", self._on_idle)
        state.register("paused", self._on_paused)
        state.register("steal-reply", self._on_steal_reply)

    def _on_idle(self, wid: str, msg: m.Idle) -> None:
        ws = self.state.workers.get(wid)
        if ws is not None and not ws.paused:
            ws.idle = True
            self.state.idle.add(wid)
            self.fruitless.pop(wid, None)
            self._balance(ws)

    def _on_paused(self, wid: str, msg: m.Paused) -> None:
        """A worker's memory is high (or fine again): while paused it gets no new
        task, and idle workers may take every unstarted task it holds."""
        ws = self.state.workers.get(wid)
        if ws is None:
            return
        ws.paused = msg.paused
        (self.state.paused.add if ws.paused else self.state.paused.discard)(wid)
        if ws.paused:
            ws.idle = False
            self.state.idle.discard(wid)
            for thief_id in list(self.state.idle):
                self._balance(self.state.workers[thief_id])

    def _on_steal_reply(self, wid: str, msg: m.StealReply) -> None:
        key = msg.key
        thief_id = self.steals.pop(key, (None, None))[0]
        ts = self.state.tasks.get(key)
        thief = self.state.workers.get(thief_id) if thief_id else None
        if thief is not None:
            thief.asked -= 1
        if ts is not None and ts.stealing == thief_id:
            ts.stealing = None
        if ts is not None and ts.processing_on == wid:
            if msg.ok:
                self.state.workers[wid].processing.discard(key)
                ts.processing_on = None
                ts.state = "released"
                if thief is not None:
                    self.state._set_processing(ts, thief)
                    self.state._send_compute(ts, thief)
                else:
                    self.state._assign(ts)
            elif not msg.later:
                ts.started = True         # never ask for it again
        if thief is not None and thief.idle:
            self._balance(thief)          # still nothing for it: try other tasks

    def _balance(self, thief: WorkerInfo, victim: WorkerInfo | None = None) -> None:
        """An idle worker wants work: ask the busiest worker (or ``victim``, one that
        just took on work) for unstarted tasks."""
        if thief.asked:
            return                        # wait for the answers to earlier requests
        if victim is not None:
            if len(victim.processing) - victim.seceded <= _slots(victim):
                return
        else:   # (a sample of the workers in turn: an idle report costs O(1) with 500)
            victims = [w for w in self.state._next_workers(STEAL_VICTIMS)
                       if w is not thief and len(w.processing) - w.seceded > _slots(w)]
            if not victims:
                return
            victim = max(victims, key=lambda w: len(w.processing) - w.seceded - _slots(w))
        excess = len(victim.processing) - victim.seceded - _slots(victim)
        last = self.fruitless.get(thief.id)
        if last is not None and last[0] == victim.id and len(victim.processing) < 2 * last[1] + 16:
            return                        # nothing was stealable there a moment ago
        self.fruitless.pop(thief.id, None)
        candidates = []
        tasks = self.state.tasks
        for key in victim.processing:
            ts = tasks[key]
            if ts.running or ts.started or ts.stealing is not None or ts.waiting_on:
                continue
            if ts.resources:
                continue                  # it holds resources where it was placed
            if ts.restrict and thief not in self.state._candidates(ts):
                continue
            if ts.deps and sum(tasks[d].nbytes for d in ts.deps
                               if thief.id not in tasks[d].who_has) > STEAL_DATA_LIMIT:
                continue                  # its inputs would cost more to move than to wait
            candidates.append(ts)
            if len(candidates) >= STEAL_SCAN:
                break
        if not candidates:
            self.fruitless[thief.id] = (victim.id, len(victim.processing))
            return
        n = min(STEAL_BATCH, max(1, excess // 2), len(candidates))
        # shallowest first (the biggest subtrees), newest first among equals
        for ts in heapq.nsmallest(n, candidates, key=_steal_order):
            self.ask(ts, thief, victim)

    def ask(self, ts: Task, thief: WorkerInfo, victim: WorkerInfo) -> None:
        """Ask ``victim`` to give ``ts`` up for ``thief``; it answers truthfully."""
        workers = self.state.workers
        ts.stealing = thief.id
        earlier = self.steals.get(ts.key)      # (asked of an earlier life of the key)
        if earlier is not None and earlier[0] in workers:
            workers[earlier[0]].asked -= 1
        self.steals[ts.key] = (thief.id, victim.id)
        thief.asked += 1
        self.state._emit(victim.id, m.Steal(ts.key))

    def offer(self, wid: str) -> None:
        """A worker took on new work: idle workers may steal some of it (a few per
        event, so a claim costs O(1) however many workers idle; the next claims
        offer to the next ones)."""
        asked = 0
        workers = self.state.workers
        victim = workers[wid]
        for thief_id in self.state.idle:   # (_balance only sends: the set stays as it is)
            thief = workers[thief_id]
            if thief_id == wid or thief.asked:
                continue
            self._balance(thief, victim)
            asked += 1
            if asked >= OFFER_THIEVES:
                break

    # -- the component's hooks ------------------------------------------------------------
    def worker_lost(self, wid: str) -> None:
        """A worker is gone: no answer will come from it, nor be awaited for it."""
        self.fruitless.pop(wid, None)
        for ts in self.state.tasks.values():
            if ts.stealing == wid:
                ts.stealing = None
        workers = self.state.workers
        for key, (thief, victim) in list(self.steals.items()):
            if wid in (thief, victim):
                del self.steals[key]
                if thief in workers:
                    workers[thief].asked -= 1

    def validate(self) -> None:
        for wid, ws in self.state.workers.items():
            assert ws.asked == sum(1 for t, _ in self.steals.values() if t == wid), (wid, ws.asked)
        for key, (thief, victim) in self.steals.items():
            assert victim in self.state.workers, (key, victim)
