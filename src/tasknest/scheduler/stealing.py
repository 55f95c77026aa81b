"""Work stealing: idle workers take unstarted tasks from the busiest one.

A worker with a free slot and nothing ready says ``idle``; the scheduler asks the
busiest worker for its shallowest unstarted tasks (the biggest subtrees). The
victim answers each request truthfully (``steal-reply ok`` only if the task had
not started), so a task never runs twice by accident; one found running is never
asked for again. Mixed into SchedulerState, whose records it shares.
"""
from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from ..protocol import messages as m
from .records import Task, WorkerInfo

STEAL_BATCH = 64
STEAL_SCAN = 2048          # candidates looked at per steal round
STEAL_DATA_LIMIT = 4096    # bytes of inputs a stolen task may need moved
STEAL_VICTIMS = 16         # workers looked at for a victim (all, in a cluster this small)


def _steal_order(ts: "Task") -> tuple:
    p = ts.priority
    return (p[1] if len(p) > 1 else 0, -(p[2] if len(p) > 2 else 0))



def _slots(ws: WorkerInfo) -> int:
    """Tasks a worker will start soon: none while it is paused."""
    return 0 if ws.paused else ws.nthreads


class StealingMixin:
    if TYPE_CHECKING:
        tasks: dict[str, Task]
        workers: dict[str, WorkerInfo]
        idle: set[str]
        paused: set[str]
        steals: dict[str, tuple[str, str]]
        _fruitless: dict[str, tuple[str, int]]

        def _emit(self, target: str, msg: m.Message) -> None: ...
        def _candidates(self, ts: Task) -> Any: ...
        def _set_processing(self, ts: Task, ws: WorkerInfo) -> None: ...
        def _send_compute(self, ts: Task, ws: WorkerInfo) -> None: ...
        def _assign(self, ts: Task) -> None: ...
        def _next_workers(self, k: int) -> list[WorkerInfo]: ...

    def _on_idle(self, wid: str, msg: m.Message) -> None:
        ws = self.workers.get(wid)
        if ws is not None and not ws.paused:
            ws.idle = True
            self.idle.add(wid)
            self._fruitless.pop(wid, None)
            self._balance(ws)

    def _on_paused(self, wid: str, msg: m.Message) -> None:
        """A worker's memory is high (or fine again): while paused it gets no new
        task, and idle workers may take every unstarted task it holds."""
        ws = self.workers.get(wid)
        if ws is None:
            return
        ws.paused = msg.paused  # type: ignore[attr-defined]
        (self.paused.add if ws.paused else self.paused.discard)(wid)
        if ws.paused:
            ws.idle = False
            self.idle.discard(wid)
            for thief_id in list(self.idle):
                self._balance(self.workers[thief_id])

    def _on_steal_reply(self, wid: str, msg: m.Message) -> None:
        key = msg.key  # type: ignore[attr-defined]
        thief_id = self.steals.pop(key, (None, None))[0]
        ts = self.tasks.get(key)
        thief = self.workers.get(thief_id) if thief_id else None
        if thief is not None:
            thief.asked -= 1
        if ts is not None and ts.stealing == thief_id:
            ts.stealing = None
        if ts is not None and ts.processing_on == wid:
            if msg.ok:  # type: ignore[attr-defined]
                self.workers[wid].processing.discard(key)
                ts.processing_on = None
                ts.state = "released"
                if thief is not None:
                    self._set_processing(ts, thief)
                    self._send_compute(ts, thief)
                else:
                    self._assign(ts)
            elif not msg.later:  # type: ignore[attr-defined]
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
            victims = [w for w in self._next_workers(STEAL_VICTIMS)
                       if w is not thief and len(w.processing) - w.seceded > _slots(w)]
            if not victims:
                return
            victim = max(victims, key=lambda w: len(w.processing) - w.seceded - _slots(w))
        excess = len(victim.processing) - victim.seceded - _slots(victim)
        last = self._fruitless.get(thief.id)
        if last is not None and last[0] == victim.id and len(victim.processing) < 2 * last[1] + 16:
            return                        # nothing was stealable there a moment ago
        self._fruitless.pop(thief.id, None)
        candidates = []
        tasks = self.tasks
        for key in victim.processing:
            ts = tasks[key]
            if ts.running or ts.started or ts.stealing is not None or ts.waiting_on:
                continue
            if ts.resources:
                continue                  # it holds resources where it was placed
            if ts.restrict and thief not in self._candidates(ts):
                continue
            if ts.deps and sum(tasks[d].nbytes for d in ts.deps
                               if thief.id not in tasks[d].who_has) > STEAL_DATA_LIMIT:
                continue                  # its inputs would cost more to move than to wait
            candidates.append(ts)
            if len(candidates) >= STEAL_SCAN:
                break
        if not candidates:
            self._fruitless[thief.id] = (victim.id, len(victim.processing))
            return
        n = min(STEAL_BATCH, max(1, excess // 2), len(candidates))
        # shallowest first (the biggest subtrees), newest first among equals
        for ts in heapq.nsmallest(n, candidates, key=_steal_order):
            ts.stealing = thief.id
            earlier = self.steals.get(ts.key)      # (asked of an earlier life of the key)
            if earlier is not None and earlier[0] in self.workers:
                self.workers[earlier[0]].asked -= 1
            self.steals[ts.key] = (thief.id, victim.id)
            thief.asked += 1
            self._emit(victim.id, m.Steal(ts.key))
