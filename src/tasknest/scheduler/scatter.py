"""Data that clients and tasks place on workers themselves (scatter, and a task's
local scatter): the scheduler plans where it goes and records it once stored.
Mixed into SchedulerState, whose records it shares.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol import messages as m
from .records import Task, WorkerInfo


class ScatterMixin:
    if TYPE_CHECKING:
        tasks: dict[str, Task]
        workers: dict[str, WorkerInfo]
        clients: dict[str, set[str]]
        _scatters: dict[int, list]
        _rid: int
        _rr: int

        def _emit(self, target: str, msg: m.Message) -> None: ...
        def _want(self, ts: Task, cid: str) -> None: ...
        def _add_replica(self, ts: Task, ws: WorkerInfo) -> None: ...
        def _memory_reached(self, ts: Task, source: str) -> None: ...

    def _on_scatter(self, cid: str, msg: m.Message) -> None:
        keys, values, rid = msg.keys, msg.values, msg.rid  # type: ignore[attr-defined]
        workers = [w for w in self.workers.values()
                   if not msg.workers or w.address in msg.workers or w.name in msg.workers]  # type: ignore
        if not workers:
            self._emit(cid, m.Reply(rid, None, "no workers to scatter to"))
            return
        busy = [k for k in keys if k in self.tasks
                and self.tasks[k].state in ("waiting", "processing", "erred")]
        if busy:
            self._emit(cid, m.Reply(rid, None, f"scatter: keys {busy[:3]} already name tasks "
                                               "that are not finished"))
            return
        if len(keys) != len(values):
            self._emit(cid, m.Reply(rid, None, "scatter: keys and values differ in length"))
            return
        plan: dict[str, list[int]] = {}
        if msg.broadcast:  # type: ignore[attr-defined]
            for w in workers:
                plan[w.id] = list(range(len(keys)))
        else:
            workers.sort(key=lambda w: len(w.has_what))
            for i in range(len(keys)):
                plan.setdefault(workers[(self._rr + i) % len(workers)].id, []).append(i)
            self._rr += len(keys)
        self._rid += 1
        self._scatters[self._rid] = [cid, rid, set(plan), keys, None]
        for wid, idx in plan.items():
            self._emit(wid, m.PutData(self._rid, [keys[i] for i in idx], [values[i] for i in idx]))

    def _on_put_data_done(self, wid: str, msg: m.Message) -> None:
        entry = self._scatters.get(msg.rid)  # type: ignore[attr-defined]
        ws = self.workers.get(wid)
        if entry is None or ws is None:
            return
        cid, rid, pending, keys, error = entry
        # a client that left meanwhile wants nothing: the data is freed as it lands
        self._add_scattered(ws, msg.keys, msg.nbytes,  # type: ignore[attr-defined]
                            cid if cid in self.clients else None)
        pending.discard(wid)
        if not pending:
            del self._scatters[msg.rid]  # type: ignore[attr-defined]
            if cid in self.clients:
                self._emit(cid, m.Reply(rid, None if error else keys, error))

    def _on_add_keys(self, wid: str, msg: m.Message) -> None:
        ws = self.workers.get(wid)
        if ws is not None:
            self._add_scattered(ws, msg.keys, msg.nbytes, wid)  # type: ignore[attr-defined]

    def _add_scattered(self, ws: WorkerInfo, keys: list, nbytes: list, cid: str | None) -> None:
        for key, nb in zip(keys, nbytes):
            ts = self.tasks.get(key)
            if ts is None:
                ts = self.tasks[key] = Task(key, None, None, [], [0, 0, 0])
                ts.scattered = True
            elif ts.state in ("waiting", "processing", "erred"):
                self._emit(ws.id, m.Free([key]))    # a task owns this key: drop the data
                continue
            ts.nbytes = nb
            if cid is not None:
                self._want(ts, cid)
            self._add_replica(ts, ws)
            if ts.state != "memory":
                ts.state = "memory"
                self._memory_reached(ts, ws.id)

    def _scatter_lost(self, ws: WorkerInfo, reason: str) -> None:
        """A worker died: scatters waiting for it answer with an error."""
        for srid, entry in list(self._scatters.items()):
            if ws.id in entry[2]:               # its put-data-done will never come
                entry[2].discard(ws.id)
                entry[4] = f"worker {ws.address} died during the scatter ({reason})"
                if not entry[2]:
                    del self._scatters[srid]
                    self._emit(entry[0], m.Reply(entry[1], None, entry[4]))
