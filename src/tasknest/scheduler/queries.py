"""What clients may ask the scheduler about the cluster (``query`` -> ``reply``).

Results travel from workers straight to clients, and the workers' reports to the
scheduler may still be on their way when a client asks where its results are.
So questions about where data lives or what runs get a *sync* first: each worker
answers ``sync`` after everything it sent before (its reports among them), and
the reply waits for all of them. A component of SchedulerState: it owns the
questions waiting for their syncs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..protocol import messages as m
from .component import Component
from .records import Task, WorkerInfo

if TYPE_CHECKING:
    from .state import SchedulerState

SYNCED = frozenset({"who_has", "has_what", "processing", "tasks", "task_stream", "edges",
                    "worker_logs", "tree_progress"})


class Queries(Component):
    def __init__(self, state: "SchedulerState") -> None:
        super().__init__(state)
        self.syncs: dict[int, list] = {}     # sync rid -> [client, query, workers pending]
        self._rid = 0
        state.register("query", self._on_query)
        state.register("synced", self._on_synced)

    def _on_query(self, cid: str, msg: m.Query) -> None:
        if msg.what in SYNCED and self.state.workers:
            self._rid += 1
            self.syncs[self._rid] = [cid, msg, set(self.state.workers)]
            for wid in self.state.workers:
                self.state._emit(wid, m.Sync(self._rid))
        else:
            self._answer(cid, msg)

    def _on_synced(self, wid: str, msg: m.Synced) -> None:
        entry = self.syncs.get(msg.rid)
        if entry is not None:
            entry[2].discard(wid)
            if not entry[2]:
                del self.syncs[msg.rid]
                self._answer(entry[0], entry[1])

    # -- the component's hooks ------------------------------------------------------------
    def worker_lost(self, wid: str) -> None:
        """A worker died: syncs waiting for it wait no more."""
        for srid, entry in list(self.syncs.items()):
            entry[2].discard(wid)
            if not entry[2]:
                del self.syncs[srid]
                self._answer(entry[0], entry[1])

    def validate(self) -> None:
        for rid, (_, _, pending) in self.syncs.items():
            assert pending and pending <= set(self.state.workers), (rid, pending)

    def _answer(self, cid: str, msg: m.Query) -> None:
        what, arg = msg.what, msg.arg
        error = None
        value: Any = None
        if what == "who_has":
            keys = arg if isinstance(arg, list) else list(self.state.tasks)
            value = {k: sorted(self.state.workers[w].address for w in self.state.tasks[k].who_has)
                     for k in keys if k in self.state.tasks}
        elif what == "has_what":
            value = {w.address: sorted(w.has_what) for w in self.state.workers.values()}
        elif what == "workers":
            value = [{"id": w.id, "address": w.address, "name": w.name, "nthreads": w.nthreads,
                      "pid": w.pid, "memory_limit": w.memory_limit, "memory": w.memory,
                      "processing": len(w.processing), "keys": len(w.has_what),
                      "paused": w.paused}
                     for w in self.state.workers.values()]
        elif what == "processing":
            value = {w.address: sorted(w.processing) for w in self.state.workers.values()}
        elif what == "demand":
            from .retirement import demand
            value = demand(self.state)
        elif what == "tasks":
            value = {k: t.state for k, t in self.state.tasks.items()}
        else:
            for c in self.state.components:     # (a component may answer: the observer's logs)
                answer = getattr(c, "query", None)
                if answer is not None and what in c.QUERIES:
                    value = answer(what, arg)
                    break
            else:
                error = f"unknown query {what!r}"
        self.state._emit(cid, m.Reply(msg.rid, value, error))
