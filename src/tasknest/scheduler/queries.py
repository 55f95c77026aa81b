"""What clients may ask the scheduler about the cluster (``query`` -> ``reply``).

Results travel from workers straight to clients, and the workers' reports to the
scheduler may still be on their way when a client asks where its results are.
So questions about where data lives or what runs get a *sync* first: each worker
answers ``sync`` after everything it sent before (its reports among them), and
the reply waits for all of them. Mixed into SchedulerState, whose records it reads.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..protocol import messages as m
from .records import Task, WorkerInfo

SYNCED = frozenset({"who_has", "has_what", "processing", "tasks", "task_stream", "edges",
                    "worker_logs", "tree_progress"})


class QueriesMixin:
    if TYPE_CHECKING:
        tasks: dict[str, Task]
        workers: dict[str, WorkerInfo]
        _syncs: dict[int, list]
        _rid: int
        components: list

        def _emit(self, target: str, msg: m.Message) -> None: ...

    def _on_query(self, cid: str, msg: m.Message) -> None:
        if msg.what in SYNCED and self.workers:  # type: ignore[attr-defined]
            self._rid += 1
            self._syncs[self._rid] = [cid, msg, set(self.workers)]
            for wid in self.workers:
                self._emit(wid, m.Sync(self._rid))
        else:
            self._answer(cid, msg)

    def _on_synced(self, wid: str, msg: m.Message) -> None:
        entry = self._syncs.get(msg.rid)  # type: ignore[attr-defined]
        if entry is not None:
            entry[2].discard(wid)
            if not entry[2]:
                del self._syncs[msg.rid]  # type: ignore[attr-defined]
                self._answer(entry[0], entry[1])

    def _sync_lost(self, wid: str) -> None:
        """A worker died: syncs waiting for it wait no more."""
        for srid, entry in list(self._syncs.items()):
            entry[2].discard(wid)
            if not entry[2]:
                del self._syncs[srid]
                self._answer(entry[0], entry[1])

    def _answer(self, cid: str, msg: m.Message) -> None:
        what, arg = msg.what, msg.arg  # type: ignore[attr-defined]
        error = None
        value: Any = None
        if what == "who_has":
            keys = arg if isinstance(arg, list) else list(self.tasks)
            value = {k: sorted(self.workers[w].address for w in self.tasks[k].who_has)
                     for k in keys if k in self.tasks}
        elif what == "has_what":
            value = {w.address: sorted(w.has_what) for w in self.workers.values()}
        elif what == "workers":
            value = [{"id": w.id, "address": w.address, "name": w.name, "nthreads": w.nthreads,
                      "pid": w.pid, "memory_limit": w.memory_limit, "memory": w.memory,
                      "processing": len(w.processing), "keys": len(w.has_what),
                      "paused": w.paused}
                     for w in self.workers.values()]
        elif what == "processing":
            value = {w.address: sorted(w.processing) for w in self.workers.values()}
        elif what == "demand":
            from .retirement import demand
            value = demand(self)  # type: ignore[arg-type]
        elif what == "tasks":
            value = {k: t.state for k, t in self.tasks.items()}
        else:
            for c in self.components:     # (a component may answer: the observer's logs)
                answer = getattr(c, "query", None)
                if answer is not None and what in c.QUERIES:
                    value = answer(what, arg)
                    break
            else:
                error = f"unknown query {what!r}"
        self._emit(cid, m.Reply(msg.rid, value, error))  # type: ignore[attr-defined]
