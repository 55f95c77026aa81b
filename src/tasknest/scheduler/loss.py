"""A worker's loss: what it ran is rerun or condemned, what it held is recomputed or
lost, and what its tasks wanted is kept for their reruns (orphans).

    remove_worker ──> components hear source_gone ──> processing: suspected or released
                  ──> held only there: lost ──> recomputed if needed (scattered: erred)
                  ──> the worker's own wants move to a holder "!wid" until its tasks,
                      rerun elsewhere, are done

A component of SchedulerState: it owns the held orphans and is asked after every
event whether any may go.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .component import Component
from .records import Task, WorkerInfo

if TYPE_CHECKING:
    from .state import SchedulerState


class Losses(Component):
    def __init__(self, state: "SchedulerState") -> None:
        super().__init__(state)
        self.orphans: dict[str, set[str]] = {}    # holder -> rerun parents (see hold_orphans)

    def worker_lost(self, wid: str, reason: str) -> None:
        """Forget worker ``wid``; its tasks and results go as the module says."""
        st = self.state
        for c in st.components:
            c.source_gone(wid)
        ws = st.workers.pop(wid, None)
        st._ring = None
        st.idle.discard(wid)
        st.paused.discard(wid)
        if ws is None:
            st.stealing.worker_lost(wid)
            return
        if st.addresses.get(ws.address) == wid:   # (a restarted worker may share it)
            del st.addresses[ws.address]
            for other in st.workers.values():
                if other.address == ws.address:
                    st.addresses[ws.address] = other.id
        killed: list[Task] = []
        lost: list[Task] = []
        started = self._maybe_started(ws)
        for key in ws.processing:
            ts = st.tasks[key]
            ts.processing_on = None
            ts.stealing = None
            ts.running = False
            ts.state = "released"
            if key in started:   # only a task that may have been running is suspected
                ts.suspicious += 1
                ts.died_on = [*ts.died_on, ws.address]
            (killed if ts.suspicious > st.allowed_failures else lost).append(ts)
        for key in ws.has_what:
            ts = st.tasks[key]
            ts.replica_lost(wid)
            if not ts.who_has and ts.state == "memory":
                ts.state = "released"
                ts.value = None
                lost.append(ts)
        st.stealing.worker_lost(wid)
        st.scatters.worker_lost(ws, reason)
        st.queries.worker_lost(wid)
        for ts in killed:
            st._err(ts, [], f"task {ts.key} was running on {ts.suspicious} workers that died "
                            f"({', '.join(ts.died_on)}; the last: {reason})", "killed")
        for ts in lost:
            if ts.state != "released":
                continue
            if ts.scattered:
                st._err(ts, [], f"the data of {ts.key} was lost with worker {ws.address} and "
                                "cannot be recomputed (scatter with broadcast=True keeps "
                                "copies)", "lost")
            elif st._needed(ts):
                st._recompute(ts)
        self.hold_orphans(wid, [st.tasks[k] for k in ws.processing if k in st.tasks])
        for ts in lost:
            if st.tasks.get(ts.key) is ts:
                st._maybe_release(ts)

    def _maybe_started(self, ws: WorkerInfo) -> set[str]:
        """Tasks that may have been executing on a lost worker.

        Workers do not report when a task starts, and a worker holds many queued
        tasks; it runs them best priority first (user priority, then depth, then
        FIFO), one per thread, plus one inline per seceded thread. Counting only
        those keeps a worker killed by something else from condemning its queue.
        """
        tasks = [self.state.tasks[k] for k in ws.processing]
        started = {ts.key for ts in tasks if ts.running}

        def order(ts: Task) -> tuple:
            user, depth, seq = (list(ts.priority) + [0, 0, 0])[:3]
            return (-user, -depth, seq)
        queued = sorted((ts for ts in tasks if not ts.running), key=order)
        started.update(ts.key for ts in queued[: ws.nthreads + ws.seceded])
        return started

    def hold_orphans(self, wid: str, reran: list[Task]) -> None:
        """Keep what tasks on a lost worker wanted until those tasks, rerun elsewhere,
        are done: a rerun parent that submits a child again (same pure key) finds it
        finished or running instead of recomputing it. Then the wants are dropped."""
        parents = {ts.key for ts in reran if ts.state in ("waiting", "processing", "released")}
        wanted = self.state.clients.get(wid)
        if not wanted or not parents:
            self.state._drop_client(wid)
            return
        holder = "!" + wid
        for key in self.state._forget_holder(wid):
            ts = self.state.tasks.get(key)
            if ts is not None:
                ts.unwanted_by(wid)
                self.state._want(ts, holder)
        self.orphans[holder] = parents

    def release_orphans(self) -> None:
        st = self.state
        for holder, parents in list(self.orphans.items()):
            for key in list(parents):
                ts = st.tasks.get(key)
                if ts is None or ts.state in ("memory", "erred") or (
                        ts.state == "released" and not st._needed(ts)):
                    parents.discard(key)
            if not parents:
                del self.orphans[holder]
                st._drop_client(holder)
