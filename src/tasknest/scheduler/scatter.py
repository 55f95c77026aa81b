"""Data that clients and tasks place on workers themselves (scatter, and a task's
local scatter): the scheduler plans where it goes and records it once stored.
A component of SchedulerState: it owns the scatters in flight.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol import messages as m
from .component import Component
from .records import Task, WorkerInfo

if TYPE_CHECKING:
    from .state import SchedulerState


class Scatters(Component):
    def __init__(self, state: "SchedulerState") -> None:
        super().__init__(state)
        self.pending: dict[int, list] = {}  # put-data rid -> [client, rid, workers pending, keys, error]
        self._rid = 0
        self._rr = 0                        # where the next scatter starts among the workers
        state.register("scatter", self._on_scatter)
        state.register("scatter-plan", self._on_scatter_plan)
        state.register("scatter-via", self._on_scatter_via)
        state.register("put-data-done", self._on_put_data_done)
        state.register("add-keys", self._on_add_keys)

    def _on_scatter(self, cid: str, msg: m.Scatter) -> None:
        """The values came through us (a client not connected to the workers, a task's
        broadcast): forward each worker its part."""
        if len(msg.keys) != len(msg.values):
            self.state._emit(cid, m.Reply(msg.rid, None, "scatter: keys and values differ in length"))
            return
        planned = self._plan(cid, msg.rid, msg.keys, msg.broadcast, msg.workers)
        if planned is not None:
            srid, plan = planned
            for ws, idx in plan:
                self.state._emit(ws.id, m.PutData(srid, [msg.keys[i] for i in idx],
                                                  [msg.values[i] for i in idx]))

    def _on_scatter_plan(self, cid: str, msg: m.ScatterPlan) -> None:
        """The client sends the values to the workers itself: we only say where."""
        planned = self._plan(cid, msg.rid, msg.keys, msg.broadcast, msg.workers)
        if planned is not None:
            srid, plan = planned
            self.state._emit(cid, m.ScatterTo(msg.rid, srid, {ws.address: idx for ws, idx in plan}))

    def _on_scatter_via(self, cid: str, msg: m.ScatterVia) -> None:
        """A part the client could not hand over itself: forwarded, if still awaited."""
        entry = self.pending.get(msg.id)
        ws = next((w for w in self.state.workers.values() if w.address == msg.worker), None)
        if entry is None or entry[0] != cid or ws is None or ws.id not in entry[2]:
            return       # (that worker died meanwhile: worker_lost answered for it)
        self.state._emit(ws.id, m.PutData(msg.id, msg.keys, msg.values))

    def _plan(self, cid: str, rid: int, keys: list, broadcast: bool,
              only: list | None) -> tuple[int, list[tuple[WorkerInfo, list[int]]]] | None:
        """Which worker gets which values (indices into keys), the scatter registered as
        pending under a new id; None (the client answered) if it cannot be done."""
        workers = [w for w in self.state.workers.values()
                   if not only or w.address in only or w.name in only]
        if not workers:
            self.state._emit(cid, m.Reply(rid, None, "no workers to scatter to"))
            return None
        busy = [k for k in keys if k in self.state.tasks
                and self.state.tasks[k].state in ("waiting", "processing", "erred")]
        if busy:
            self.state._emit(cid, m.Reply(rid, None, f"scatter: keys {busy[:3]} already name tasks "
                                               "that are not finished"))
            return None
        plan: dict[str, list[int]] = {}
        if broadcast:
            for w in workers:
                plan[w.id] = list(range(len(keys)))
        else:
            workers.sort(key=lambda w: len(w.has_what))
            for i in range(len(keys)):
                plan.setdefault(workers[(self._rr + i) % len(workers)].id, []).append(i)
            self._rr += len(keys)
        self._rid += 1
        self.pending[self._rid] = [cid, rid, set(plan), keys, None]
        return self._rid, [(self.state.workers[wid], idx) for wid, idx in plan.items()]

    def _on_put_data_done(self, wid: str, msg: m.PutDataDone) -> None:
        entry = self.pending.get(msg.rid)
        ws = self.state.workers.get(wid)
        if entry is None or ws is None:
            return
        cid, rid, pending, keys, error = entry
        # a client that left meanwhile wants nothing: the data is freed as it lands
        self._add_scattered(ws, msg.keys, msg.nbytes,
                            cid if cid in self.state.clients else None)
        pending.discard(wid)
        if not pending:
            del self.pending[msg.rid]
            if cid in self.state.clients:
                self.state._emit(cid, m.Reply(rid, None if error else keys, error))

    def _on_add_keys(self, wid: str, msg: m.AddKeys) -> None:
        ws = self.state.workers.get(wid)
        if ws is not None:
            self._add_scattered(ws, msg.keys, msg.nbytes, wid)

    def _add_scattered(self, ws: WorkerInfo, keys: list, nbytes: list, cid: str | None) -> None:
        for key, nb in zip(keys, nbytes):
            ts = self.state.tasks.get(key)
            if ts is None:
                ts = self.state.tasks[key] = Task(key, None, None, [], [0, 0, 0])
                ts.scattered = True
            elif ts.state in ("waiting", "processing", "erred"):
                self.state._emit(ws.id, m.Free([key]))    # a task owns this key: drop the data
                continue
            ts.nbytes = nb
            if cid is not None:
                self.state._want(ts, cid)
            self.state._add_replica(ts, ws)
            if ts.state != "memory":
                ts.state = "memory"
                self.state._memory_reached(ts, ws.id)

    # -- the component's hooks ------------------------------------------------------------
    def worker_lost(self, ws: WorkerInfo, reason: str) -> None:
        """A worker died: scatters waiting for it answer with an error."""
        for srid, entry in list(self.pending.items()):
            if ws.id in entry[2]:               # its put-data-done will never come
                entry[2].discard(ws.id)
                entry[4] = f"worker {ws.address} died during the scatter ({reason})"
                if not entry[2]:
                    del self.pending[srid]
                    self.state._emit(entry[0], m.Reply(entry[1], None, entry[4]))

    def validate(self) -> None:
        for rid, (cid, _, pending, keys, _) in self.pending.items():
            assert pending <= set(self.state.workers), (rid, pending)
