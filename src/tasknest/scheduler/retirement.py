"""Graceful retirement: a worker leaves without losing or recomputing anything.

    retire ──> paused (no new task; idle workers steal its queue; its queued tasks
               are moved) ──> every result only it holds is copied to another worker
               (``replicate`` there, ``replicated`` back) ──> its running tasks drain
               (up to the timeout) ──> ``close`` ──> it says goodbye and leaves

A component of SchedulerState: it owns its records and registers its handlers.
Clients ask with ``retire`` (``client.retire_workers``, a cluster's scale-down);
a worker asks for itself (SIGTERM, ``--lifetime``, a batch job's walltime). Time
is not read here: the shell calls ``tick(now)``, which starts the clocks and
closes a worker whose drain outlived its timeout (its remaining tasks then run
elsewhere, as for any lost worker). A retiring worker stays ``paused``, so
stealing treats its queue as surplus and placement prefers every other worker.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..protocol import messages as m

if TYPE_CHECKING:
    from .records import WorkerInfo
    from .state import SchedulerState

DEFAULT_TIMEOUT = 60.0


class Retiring:
    __slots__ = ("wid", "address", "timeout", "deadline", "moving", "closing", "patient")

    def __init__(self, wid: str, address: str, timeout: float, patient: bool) -> None:
        self.wid = wid
        self.address = address
        self.timeout = timeout
        self.deadline: float | None = None            # set by the first tick
        self.moving: dict[str, str] = {}              # key -> worker copying it
        self.closing = False
        # (a worker that leaves by itself, at a batch job's end, and is alone: its results
        # wait for a replacement worker until the timeout instead of being lost)
        self.patient = patient


class Retirement:
    def __init__(self, state: "SchedulerState") -> None:
        self.state = state
        self.retiring: dict[str, Retiring] = {}
        self._requests: dict[tuple[str, int], set[str]] = {}   # (client, rid) -> workers
        self._rid = 0
        self._moves: dict[int, tuple[str, str]] = {}    # replicate rid -> (target, retiree)
        self._gone: dict[tuple[str, int], list[str]] = {}       # request -> retired so far
        state.register("retire", self._on_retire)
        state.register("replicated", self._on_replicated)
        self._paused = state._handlers["paused"]
        state._handlers["paused"] = self._on_paused
        state.components.append(self)

    # -- requests -------------------------------------------------------------------------
    def _on_retire(self, source: str, msg: m.Retire) -> None:
        st = self.state
        names, timeout = msg.workers, msg.timeout_ms / 1000
        if timeout <= 0:
            timeout = DEFAULT_TIMEOUT
        itself = source in st.workers and not names
        if itself:                                       # a worker retires itself
            chosen = [st.workers[source]]
        else:
            wanted = set(names)
            chosen = [w for w in st.workers.values()
                      if w.address in wanted or w.name in wanted or w.id in wanted]
        rid = msg.rid
        if rid:
            if not chosen:
                st._emit(source, m.Reply(rid, [], None))
                return
            self._requests[(source, rid)] = {w.id for w in chosen}
        for ws in chosen:
            r = self.retiring.get(ws.id)
            if r is None:
                r = self.retiring[ws.id] = Retiring(ws.id, ws.address, timeout, itself)
                ws.paused = True
                st.paused.add(ws.id)
                ws.idle = False
                st.idle.discard(ws.id)
            else:
                r.timeout = min(r.timeout, timeout)
        for ws in chosen:
            if ws.id in self.retiring:
                self._progress(self.retiring[ws.id])

    def _on_paused(self, wid: str, msg: m.Paused) -> None:
        if wid not in self.retiring:       # a retiring worker stays paused
            self._paused(wid, msg)

    # -- progress ---------------------------------------------------------------------------
    def _others(self) -> list["WorkerInfo"]:
        return [w for w in self.state.workers.values() if w.id not in self.retiring]

    def _progress(self, r: Retiring) -> None:
        """Move what can be moved; close the worker once nothing is left to wait for."""
        st = self.state
        ws = st.workers.get(r.wid)
        if ws is None or r.closing:
            return
        others = self._others()
        if others:
            self._move_queued(ws, others)
            self._replicate(r, ws, others)
        if not ws.processing and not r.moving and not (
                (others or r.patient) and self._only_here(ws)):
            self._close(r)

    def _only_here(self, ws: "WorkerInfo") -> list[str]:
        """Results nobody else holds that someone still needs."""
        tasks = self.state.tasks
        return [k for k in ws.has_what if tasks[k].who_has == {ws.id}
                and tasks[k].state == "memory"]

    def _move_queued(self, ws: "WorkerInfo", others: list["WorkerInfo"]) -> None:
        """Ask the worker to give up the tasks it has not started (the steal protocol:
        it answers truthfully, so nothing runs twice)."""
        st = self.state
        for key in list(ws.processing):
            ts = st.tasks[key]
            if ts.running or ts.started or ts.stealing is not None or ts.resources \
                    or ts.waiting_on:      # (one waiting for inputs moves once they are in)
                continue
            fits = [w for w in others if not ts.restrict or w in st._candidates(ts)]
            if not fits:
                continue
            thief = min(fits, key=lambda w: (w.load() + w.asked / w.nthreads))
            st.stealing.ask(ts, thief, ws)

    def _replicate(self, r: Retiring, ws: "WorkerInfo", others: list["WorkerInfo"]) -> None:
        plan: dict[str, list[str]] = {}
        load = {w.id: len(w.has_what) for w in others}
        for key in self._only_here(ws):
            if key in r.moving:
                continue
            target = min(others, key=lambda w: (w.memory, load[w.id])).id \
                if all(w.memory for w in others) else min(load, key=load.__getitem__)
            load[target] += 1
            r.moving[key] = target
            plan.setdefault(target, []).append(key)
        for target, keys in plan.items():
            self._rid += 1
            self._moves[self._rid] = (target, r.wid)
            self.state._emit(target, m.Replicate(self._rid, keys, ws.address))

    def _on_replicated(self, wid: str, msg: m.Replicated) -> None:
        st = self.state
        move = self._moves.pop(msg.rid, None)
        ws = st.workers.get(wid)
        if ws is None:
            return
        unwanted = []
        for key in msg.keys:
            ts = st.tasks.get(key)
            if ts is None or ts.state != "memory" or wid in ts.who_has:
                if ts is None or ts.state != "memory":
                    unwanted.append(key)          # released meanwhile: drop the copy
                continue
            st._add_replica(ts, ws)
        if unwanted:
            st._emit(wid, m.Free(unwanted))
        if move is None:
            return
        r = self.retiring.get(move[1])
        if r is None:
            return
        for key, target in list(r.moving.items()):
            if target == wid:              # (a copy that failed is planned again)
                del r.moving[key]
        self._progress(r)

    def _close(self, r: Retiring) -> None:
        r.closing = True
        self.state._emit(r.wid, m.Close("retired"))

    def tick(self, now: float) -> list:
        """Called by the shell: start the clocks, end drains that outlived their timeout,
        and move what finished since."""
        for r in list(self.retiring.values()):
            if r.deadline is None:
                r.deadline = now + r.timeout
            if r.closing:
                continue
            if now > r.deadline:
                self._close(r)
            else:
                self._progress(r)
        return self.state._flush()

    @property
    def active(self) -> bool:
        return bool(self.retiring)

    # -- the component protocol ---------------------------------------------------------------
    def source_gone(self, source: str) -> None:
        st = self.state
        for key in [k for k in self._requests if k[0] == source]:
            del self._requests[key]
            self._gone.pop(key, None)
        r = self.retiring.pop(source, None)
        if r is not None:
            st.paused.discard(source)
            for req, pending in list(self._requests.items()):
                if source not in pending:
                    continue
                pending.discard(source)
                self._gone.setdefault(req, []).append(r.address)
                if not pending:
                    del self._requests[req]
                    if req[0] in st.clients:
                        st._emit(req[0], m.Reply(req[1], sorted(self._gone.pop(req)), None))
                    self._gone.pop(req, None)
        for rid, (target, retiree) in list(self._moves.items()):
            if source in (target, retiree):
                del self._moves[rid]
                other = self.retiring.get(retiree)
                if other is not None:
                    for k, t in list(other.moving.items()):
                        if t == source:
                            del other.moving[k]

    def worker_added(self, wid: str) -> None:
        for r in self.retiring.values():   # someone to hand things to, at last
            self._progress(r)

    def validate(self) -> None:
        st = self.state
        for wid, r in self.retiring.items():
            assert wid in st.workers, r.address
            assert st.workers[wid].paused, r.address
            for key, target in r.moving.items():
                assert target in st.workers, (key, target)



def demand(state: "SchedulerState") -> dict[str, Any]:
    """What an adaptive cluster sizes itself by: tasks runnable or running now (those a
    task launched included; a task blocked on its children does not count), the
    threads serving them, and per worker how useful it is to keep."""
    busy = sum(len(w.processing) - w.seceded for w in state.workers.values())
    retiring = state.retirement.retiring
    return {
        "tasks": busy + len(state.unrunnable),
        "workers": [{"address": w.address, "name": w.name, "nthreads": w.nthreads,
                     "processing": len(w.processing), "keys": len(w.has_what),
                     "nbytes": sum(state.tasks[k].nbytes for k in w.has_what),
                     "retiring": w.id in retiring}
                    for w in state.workers.values()],
    }
