"""SchedulerState: the truth about every task, as a pure state machine.

``handle(source, msg)`` takes one event (a catalogue message from a client or a
worker, or a connection event; ``handle_run``, a run of them) and returns the
actions it causes, as a list of ``(target_id, message)``. No sockets, threads or
clocks live here: the shell (server.py) delivers events and carries out the
actions; time arrives as an argument of ``tick``.

Task lifecycle::

    released -> waiting -> processing@W -> memory@{W..} | erred  -> (forgotten)

A *claimed* task was submitted from inside a task on worker W and put straight
into W's own queue; the scheduler records it as processing@W when it hears of
it, lets idle workers steal it, and reruns it if W dies.

A scheduler "client" is any holder of futures: a user's Client (id ``c-...``), a
worker's in-task client (the worker's own id ``w-...``), a task whose result
holds futures (``^key``) and fire-and-forget (``@ff``).
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from ..errors import ProtocolError
from ..memory import sparse, shared
from ..protocol import messages as m
from .resources import free_for
from .records import (ALLOWED_FAILURES, CLAIMED, EMPTY, FIRE_AND_FORGET, NOTHING, Task, WorkerInfo,
                      with_names)
from . import invariants
from .coordination import Coordination
from .loss import Losses
from .operations import Operations
from .placing import Placing
from .queries import Queries
from .retirement import Retirement
from .scatter import Scatters
from .stealing import Stealing


SMALL_CLUSTER = 16     # up to this many workers, a task goes to the least loaded of all
RING_WINDOW = 8        # beyond, to the least loaded of this many next in turn


class SchedulerState:
    def __init__(self, allowed_failures: int = ALLOWED_FAILURES, inline_limit: int = 64 * 1024) -> None:
        self.tasks: dict[str, Task] = {}
        self.workers: dict[str, WorkerInfo] = {}
        self.clients: dict[str, set[str]] = {FIRE_AND_FORGET: set()}
        self.unrunnable: dict[str, Task] = {}            # ready, but no (allowed) worker
        self.idle: set[str] = set()                      # workers that asked for work
        self.paused: set[str] = set()                    # workers paused for memory
        self.allowed_failures = allowed_failures
        self.inline_limit = inline_limit
        self.out: list[tuple[str, m.Message]] = []
        self._rr = 0
        self._ring: list[WorkerInfo] | None = None   # the workers in turn (_any_worker)
        self.alone: dict[str, frozenset] = {}     # holder -> {holder}, shared (see _want)
        self._attempts = 0        # computes sent so far: each is numbered
        self.addresses: dict[str, str] = {}       # worker address -> id
        self._handlers = m.handlers(self)
        # components own their records, register their handlers and hear of
        # source_gone(id), worker_added(id) and validate() (retirement wraps stealing's
        # "paused", so it comes after it)
        self.components: list[Any] = []
        self.stealing = Stealing(self)
        self.scatters = Scatters(self)
        self.queries = Queries(self)
        self.placing = Placing(self)
        self.coordination = Coordination(self)
        self.operations = Operations(self)
        self.retirement = Retirement(self)
        self.losses = Losses(self)

    def register(self, op: str, handler: Any) -> None:
        """A component handles this message op itself."""
        assert op in m.CATALOGUE and op not in self._handlers, op
        self._handlers[op] = handler

    # == dispatch =====================================================================
    def handle(self, source: str, msg: m.Message) -> list[tuple[str, m.Message]]:
        return self.handle_run(source, (msg,))

    def handle_run(self, source: str, msgs: Sequence[m.Message]) -> list[tuple[str, m.Message]]:
        """Messages of one op (one, or a run: protocol/runs.py), handled in order; the
        actions of all of them."""
        handler = self._handlers.get(msgs[0].op)
        if handler is None:
            raise ProtocolError(f"scheduler does not accept {msgs[0].op!r}")
        losses = self.losses
        for msg in msgs:
            handler(source, msg)
            if losses.orphans:
                losses.release_orphans()
        if self.unrunnable and self.workers:    # resources freed may let some run now
            for ts in [t for t in self.unrunnable.values() if t.resources]:
                if self.unrunnable.get(ts.key) is ts:
                    self._assign(ts)
        out, self.out = self.out, []
        return out

    def _emit(self, target: str, msg: m.Message) -> None:
        self.out.append((target, msg))

    def validate(self) -> None:
        """Raise AssertionError if the records contradict each other."""
        invariants.validate(self)

    def _flush(self) -> list[tuple[str, m.Message]]:
        out, self.out = self.out, []
        return out

    # == connections ==================================================================
    def add_client(self, cid: str) -> list:
        self.clients.setdefault(cid, set())
        return self._flush()

    def remove_client(self, cid: str) -> list:
        for c in self.components:
            c.source_gone(cid)
        self._drop_client(cid)
        for wid in self.workers:     # places it made that we never heard of go (the
            self._emit(wid, m.ClientGone(cid))   # confirms of the others went before)
        return self._flush()

    def _forget_holder(self, holder: str) -> Any:
        """What ``holder`` wanted, no longer recorded as its (nor its shared {holder})."""
        self.alone.pop(holder, None)
        return self.clients.pop(holder, EMPTY)

    def _drop_client(self, cid: str) -> None:
        for key in self._forget_holder(cid):
            ts = self.tasks.get(key)
            if ts is not None:
                ts.unwanted_by(cid)
                self._maybe_release(ts)

    def add_worker(self, wid: str, address: str, name: str, nthreads: int, pid: int,
                   memory_limit: int, keys: Iterable[str], now: float,
                   resources: dict | None = None) -> list:
        ws = WorkerInfo(wid, address, name, nthreads, pid, memory_limit, now)
        self._ring = None
        ws.resources = dict(resources or {})
        self.workers[wid] = ws
        self.addresses[address] = wid
        ws.idle = True                 # a new worker has nothing to do until told
        self.idle.add(wid)
        self.clients.setdefault(wid, set())
        stale = []
        for key in keys:
            ts = self.tasks.get(key)
            if ts is not None and ts.state in ("memory", "released", "waiting"):
                self._add_replica(ts, ws)
            else:
                stale.append(key)
        if stale:
            self._emit(wid, m.Free(stale))
        for c in self.components:
            c.worker_added(wid)
        for ts in list(self.unrunnable.values()):
            self._assign(ts)
        return self._flush()

    def remove_worker(self, wid: str, reason: str = "worker lost") -> list:
        self.losses.worker_lost(wid, reason)
        return self._flush()

    def tick(self, now: float, timeout: float) -> list[str]:
        """Workers whose heartbeats stopped; the shell removes them."""
        return [w.id for w in self.workers.values() if now - w.last_seen > timeout]

    def compact(self) -> bool:
        """Right-size the tables a large run left mostly empty (dicts and sets never
        shrink by themselves); True if any was, so the shell may give memory back."""
        shrank = False
        if sparse(self.tasks):
            self.tasks, shrank = dict(self.tasks), True
        if sparse(self.unrunnable):
            self.unrunnable = dict(self.unrunnable)
        for cid, wants in self.clients.items():
            if sparse(wants):
                self.clients[cid], shrank = set(wants), True
        for ws in self.workers.values():
            if sparse(ws.processing):
                ws.processing, shrank = set(ws.processing), True
            if sparse(ws.has_what):
                ws.has_what, shrank = set(ws.has_what), True
        return shrank

    def heartbeat(self, wid: str, now: float, memory: int = 0) -> None:
        ws = self.workers.get(wid)
        if ws is not None:
            ws.last_seen = now
            ws.memory = memory

    # == clients ======================================================================
    def _new_task(self, key: str, func: bytes, args: bytes, deps: list[str], priority: list,
                  retries: int, restrict: list | None) -> Task | None:
        tasks = self.tasks
        for dk in deps:               # all or nothing: no dangling dependents on failure
            if dk not in tasks:
                return None
        if restrict:
            restrict = with_names(restrict, self.workers.values())
        ts = Task(key, func, args, deps, priority, retries, restrict)
        tasks[key] = ts
        for dk in deps:
            dts = tasks[dk]
            if dts.dependents:
                dts.dependents.add(key)
            else:
                dts.dependents = {key}
        return ts

    def _on_submit(self, cid: str, msg: m.Submit) -> None:
        self._submitted(cid, msg.key, msg.func, msg.args, msg.deps, msg.priority,
                        msg.retries, msg.workers, msg.resources, msg.loose)

    def _submitted(self, cid: str, key: str, func: bytes, args: bytes, deps: list[str],
                   priority: list, retries: int, restrict: list | None,
                   resources: dict | None = None, loose: bool = False) -> None:
        ts = self.tasks.get(key)
        if ts is None:
            ts = self._new_task(key, func, args, deps, priority, retries, restrict)
            if ts is None:
                missing = [d for d in deps if d not in self.tasks]
                self._emit(cid, m.KeyErred(key, [], f"dependencies {missing} of {key} are "
                                           "unknown to the scheduler (released?)", "lost"))
                return
            ts.resources, ts.loose = resources or None, loose
            self._want(ts, cid)
            self._recompute(ts)
            return
        self._want(ts, cid)
        self._revive(ts)
        if ts.state == "released":
            if ts.func is None:
                ts.func, ts.args = func, args
            self._recompute(ts)
        else:
            self._report(ts, cid)

    def _revive(self, ts: Task) -> None:
        """A task erred only because the cluster was restarted runs again when asked."""
        if ts.state == "erred" and ts.error is not None and ts.error[2] == "restarted" \
                and ts.func is not None:
            ts.state = "released"
            ts.error = None
            for dk in ts.deps:
                self._revive(self.tasks[dk])

    def _on_want(self, cid: str, msg: m.Want) -> None:
        for key in msg.keys:
            ts = self.tasks.get(key)
            if ts is None:
                # (a worker's in-task client claims it anew if its future still waits)
                self._emit(cid, m.Unknown(key) if cid[0] == "w" else m.KeyErred(
                    key, [], f"{key} is unknown to the scheduler (it was released or never "
                    "existed)", "lost"))
                continue
            self._want(ts, cid)
            if ts.state == "released":
                self._recompute(ts)
            elif ts.state in ("memory", "erred"):
                self._report(ts, cid)
            else:    # told when it ends: a worker's direct word went to a released future
                ts.tell = {*ts.tell, cid}

    def _on_remind(self, cid: str, msg: m.Remind) -> None:
        """The client lost a connection a worker would have told it a result through:
        report the keys it waits on (those we know; the rest are still on their way)."""
        for key in msg.keys:
            ts = self.tasks.get(key)
            if ts is None or cid not in ts.who_wants:
                continue
            if ts.state in ("memory", "erred"):
                self._report(ts, cid)
                continue
            if ts.tell:
                ts.tell.add(cid)
            else:
                ts.tell = {cid}

    def _on_release(self, cid: str, msg: m.Release) -> None:
        wants = self.clients.get(cid)
        for key in msg.keys:
            ts = self.tasks.get(key)
            if wants is not None:
                wants.discard(key)
            if ts is not None and cid in ts.who_wants:
                ts.unwanted_by(cid)
                self._maybe_release(ts)

    def _on_fire_and_forget(self, cid: str, msg: m.FireAndForget) -> None:
        for key in msg.keys:
            ts = self.tasks.get(key)
            if ts is not None and ts.state not in ("memory", "erred"):
                self._want(ts, FIRE_AND_FORGET)

    def _on_cancel(self, cid: str, msg: m.Cancel) -> None:
        for key in msg.keys:
            ts = self.tasks.get(key)
            if ts is None:
                continue
            if ts.state not in ("memory", "erred"):
                self._cancel(ts, f"{key} was cancelled")
            elif cid in ts.who_wants:      # done already: the canceller lets go of it
                self._unwant(ts, cid)
                self._maybe_release(ts)

    def _on_retry(self, cid: str, msg: m.Retry) -> None:
        for key in msg.keys:
            ts = self.tasks.get(key)
            if ts is not None and ts.state == "erred" and ts.func is not None:
                self._retry(ts)

    def _retry(self, ts: Task) -> None:
        """An erred task runs again, after the erred tasks it depends on."""
        for dk in ts.deps:
            dts = self.tasks[dk]
            if dts.state == "erred" and dts.func is not None:
                self._retry(dts)
        ts.state = "released"
        ts.error = None
        ts.suspicious = 0
        ts.died_on = NOTHING
        self._recompute(ts)

    def _cancel(self, ts: Task, reason: str) -> None:
        for dk in list(ts.dependents):
            dts = self.tasks.get(dk)
            if dts is not None and dts.state not in ("memory", "erred"):
                self._cancel(dts, reason)
        for cid in ts.who_wants:
            if cid[0] in "cw":
                self._emit(cid, m.KeyCancelled(ts.key, reason))
            self.clients.get(cid, set()).discard(ts.key)
        ts.who_wants = EMPTY
        self._maybe_release(ts)

    # == workers =======================================================================
    def _on_claim(self, wid: str, msg: m.Claim) -> None:
        key = msg.key
        ws = self.workers.get(wid)
        if ws is None:
            return
        ts = self.tasks.get(key)
        if ts is not None and ts.state != "released":
            self._want(ts, wid)
            if ts.processing_on == wid:   # assigned here too (a client submitted it): keep
                if msg.confirm:
                    self._emit(wid, m.ClaimAccepted([key]))
                for dk in ts.deps:          # the claimed copy, and say where its inputs are
                    dts = self.tasks[dk]
                    if dts.state == "memory" and wid not in dts.who_has:
                        self._emit(wid, self._key_memory(dts, inline=False))
                return
            self._emit(wid, m.ClaimRejected(key))
            self._report(ts, wid)
            return
        if ts is None:
            ts = self._new_task(key, msg.func, msg.args, msg.deps, msg.priority,
                                msg.retries, None)
            if ts is None:
                self._emit(wid, m.ClaimRejected(key))
                missing = [d for d in msg.deps if d not in self.tasks]
                self._emit(wid, m.KeyErred(key, [], f"dependencies {missing} of {key} are "
                                           "unknown to the scheduler (released?)", "lost"))
                return
        elif ts.func is None:
            ts.func, ts.args = msg.func, msg.args
        self._want(ts, wid)
        for dk in ts.deps:
            dts = self.tasks[dk]
            if dts.state == "erred":      # it can never run: err it (and tell the claimer)
                self._err(ts, *dts.failure())
                return
        ts.waiting_on = {d for d in ts.deps if self.tasks[d].state != "memory"} or EMPTY
        self._set_processing(ts, ws)
        ts.attempt = 0
        if msg.confirm:
            self._emit(wid, m.ClaimAccepted([key]))   # (before any steal of it)
        if self.idle:
            self.stealing.offer(wid)
        for dk in ts.deps:
            dts = self.tasks[dk]
            if dts.state == "memory" and wid not in dts.who_has:
                self._emit(wid, self._key_memory(dts, inline=False))
            elif dts.state == "erred":
                self._emit(wid, self._key_erred(dts))
            elif dts.state == "released":
                self._recompute(dts)

    def _on_task_finished(self, wid: str, msg: m.TaskFinished) -> None:
        key = msg.key
        ts = self.tasks.get(key)
        ws = self.workers.get(wid)
        if ws is None:
            return
        if ts is None or ts.state == "erred":
            self._emit(wid, m.Free([key]))
            return
        if _stale(ts, msg):
            if ts.processing_on != wid and wid not in ts.who_has:
                # (a run there we counted once, then gave to another worker: its value
                # is nobody's. A run released there was freed already, and the worker
                # may run the key anew as we asked: a second free would cancel that.)
                self._emit(wid, m.Free([key]))
            return
        self._task_done(ts, ws, msg.nbytes, msg.type, msg.value, msg.inner,
                        msg.notified)

    def _task_done(self, ts: Task, ws: WorkerInfo, nbytes: int, type_name: str,
                   value: list | None, inner: list[str], notified: list[str]) -> None:
        """A worker holds the task's result."""
        key, wid = ts.key, ws.id
        ts.nbytes, ts.type = nbytes, shared(type_name)
        if value is not None and nbytes <= self.inline_limit:
            ts.value = value
        self._add_replica(ts, ws)
        if ts.state == "memory":
            return
        if ts.processing_on is not None:
            self.workers[ts.processing_on].processing.discard(key)
            if ts.running:
                self.workers[ts.processing_on].seceded -= 1
        ts.processing_on = None
        ts.stealing = None
        ts.running = False
        ts.state = "memory"
        ts.waiting_on = EMPTY
        self.unrunnable.pop(key, None)
        if inner or ts.inner:
            self._hold_inner(ts, inner)
        self._memory_reached(ts, wid, notified)

    def _hold_inner(self, ts: Task, inner: list[str]) -> None:
        """The task's result holds these futures (``^key`` wants them). A result
        computed again (the first was lost) holds its own: the first one's go."""
        holder = "^" + ts.key
        before, ts.inner = ts.inner, []
        self.clients.setdefault(holder, set())
        for ik in inner:
            its = self.tasks.get(ik)
            if its is not None:
                self._want(its, holder)
                ts.inner.append(ik)
        ts.inner = ts.inner or NOTHING
        for ik in before:
            its = self.tasks.get(ik)
            if its is not None and ik not in ts.inner:
                self._unwant(its, holder)
                self._maybe_release(its)
        if not ts.inner:
            self._forget_holder(holder)

    def _memory_reached(self, ts: Task, source: str, notified: Iterable[str] = ()) -> None:
        ff = FIRE_AND_FORGET in ts.who_wants
        skip = set(notified) - ts.tell if notified else ()
        ts.tell = EMPTY
        for cid in ts.who_wants:
            if cid[0] in "cw" and cid != source and cid not in skip:
                self._emit(cid, self._key_memory(ts, inline=True))
        for dk in list(ts.dependents):
            dts = self.tasks.get(dk)
            if dts is None:
                continue
            dts.waiting_on.discard(ts.key)
            if dts.state == "waiting" and not dts.waiting_on:
                self._assign(dts)
            elif dts.state == "processing" and dts.processing_on is not None and \
                    dts.processing_on not in ts.who_has and dts.processing_on not in ts.who_wants:
                self._emit(dts.processing_on, self._key_memory(ts, inline=False))
        if ff:
            self._unwant(ts, FIRE_AND_FORGET)
        self._maybe_release(ts)

    def _on_task_erred(self, wid: str, msg: m.TaskErred) -> None:
        ts = self.tasks.get(msg.key)
        if ts is None or ts.state in ("memory", "erred") or _stale(ts, msg):
            return
        self._err(ts, msg.exception, msg.traceback, msg.kind)

    def _err(self, ts: Task, exception: list, traceback: str, kind: str,
             source: str | None = None) -> None:
        if ts.processing_on is not None:
            ws = self.workers.get(ts.processing_on)
            if ws is not None:
                ws.processing.discard(ts.key)
                if ts.running:
                    ws.seceded -= 1
        ts.processing_on = None
        ts.running = False
        ts.stealing = None
        ts.state = "erred"
        ts.error = (exception, traceback, kind)
        self.unrunnable.pop(ts.key, None)
        for cid in ts.who_wants:
            if cid[0] in "cw":
                self._emit(cid, self._key_erred(ts))
        for dk in list(ts.dependents):
            dts = self.tasks.get(dk)
            if dts is None or dts.state in ("memory", "erred"):
                continue
            if dts.state == "processing" and dts.processing_on is not None \
                    and dts.processing_on not in dts.who_wants:
                self._emit(dts.processing_on, self._key_erred(ts))
            self._err(dts, exception, traceback, kind)
        self._unwant(ts, FIRE_AND_FORGET)
        self._maybe_release(ts)

    def _on_secede(self, wid: str, msg: m.Secede) -> None:
        ws = self.workers.get(wid)
        ts = self.tasks.get(msg.key)
        if ws is None or ts is None or ts.processing_on != wid or ts.running:
            return
        ts.running = True
        ws.seceded += 1

    def _on_rejoin(self, wid: str, msg: m.Rejoin) -> None:
        ws = self.workers.get(wid)
        ts = self.tasks.get(msg.key)
        if ws is None or ts is None or not ts.running or ts.processing_on != wid:
            return
        ts.running = False
        ws.seceded -= 1

    def _on_missing_data(self, wid: str, msg: m.MissingData) -> None:
        ts = self.tasks.get(msg.key)
        bad = next((w for w in self.workers.values() if w.address == msg.worker), None)
        if ts is None:
            return
        if bad is not None and bad.id in ts.who_has:
            ts.replica_lost(bad.id)
            bad.has_what.discard(ts.key)
        if ts.state == "memory":
            if ts.who_has:
                self._emit(wid, self._key_memory(ts, inline=False))
            elif ts.scattered:
                self._err(ts, [], f"the data of {ts.key} was lost", "lost")
            else:
                ts.state = "released"
                self._recompute(ts)

    def _on_heartbeat(self, wid: str, msg: m.Heartbeat) -> None:
        pass  # the shell records the time

    # == core transitions ==================================================================
    def _want(self, ts: Task, cid: str) -> None:
        # (one holder, most tasks' lot: its frozenset {cid}, shared; a set of 216 B for two)
        who = ts.who_wants
        if not who:
            alone = self.alone.get(cid)
            if alone is None:
                alone = self.alone[cid] = frozenset((cid,))
            ts.who_wants = alone
        elif cid not in who:
            if type(who) is set:
                who.add(cid)
            else:
                ts.who_wants = {*who, cid}
        wants = self.clients.get(cid)
        if wants is None:
            wants = self.clients[cid] = set()
        wants.add(ts.key)

    def _unwant(self, ts: Task, cid: str) -> None:
        if cid in ts.who_wants:
            ts.unwanted_by(cid)
            self.clients.get(cid, set()).discard(ts.key)

    def _needed(self, ts: Task) -> bool:
        if ts.who_wants:
            return True
        for dk in ts.dependents:
            dts = self.tasks.get(dk)
            if dts is not None and dts.state in ("waiting", "processing", "released") \
                    and self._needed(dts):
                return True
        return False

    def _recompute(self, ts: Task) -> None:
        """Bring a released (or new) task back towards memory, deps first."""
        if ts.state in ("waiting", "processing", "memory", "erred"):
            return
        if ts.func is None:
            self._err(ts, [], f"the data of {ts.key} was lost and it has no recipe", "lost")
            return
        waiting: set[str] = set() if ts.deps else EMPTY
        for dk in ts.deps:
            dts = self.tasks[dk]
            if dts.state == "erred":
                exc, tb, kind = dts.failure()
                ts.waiting_on = EMPTY
                self._err(ts, exc, tb, kind)
                return
            if dts.state != "memory":
                waiting.add(dk)
        ts.waiting_on = waiting or EMPTY
        ts.state = "waiting"
        for dk in list(ts.waiting_on):
            self._recompute(self.tasks[dk])
        if ts.state == "waiting" and not ts.waiting_on:
            self._assign(ts)

    def _candidates(self, ts: Task) -> Any:
        workers: Any = self.workers.values()
        if self.retirement.retiring:      # a retiring worker gets no new task
            workers = [w for w in workers if w.id not in self.retirement.retiring]
        if ts.restrict:
            # ("!address": that worker only, and the task errs once it is gone: an actor's)
            allowed = {r.lstrip("!") for r in ts.restrict}
            named = [w for w in workers
                     if w.address in allowed or w.name in allowed or w.id in allowed]
            workers = named if named or not ts.loose else workers
        if ts.resources:
            need = ts.resources
            workers = [w for w in workers
                       if all(w.resources.get(r, 0) >= n for r, n in need.items())]
        return workers

    def _assign(self, ts: Task) -> None:
        workers = self._candidates(ts)
        if ts.resources and workers:
            workers = free_for(self.tasks, ts, workers)   # (else it waits for some)
        elif ts.resources and self.workers and ts.key not in self.unrunnable:
            text = (f"task {ts.key} asks for resources {ts.resources} that no worker has: it "
                    "waits for a worker that has them")
            for cid in ts.who_wants:
                if cid[0] == "c":
                    self._emit(cid, m.Warn(text))
        if not workers:
            if ts.restrict and ts.restrict[0][:1] == "!":
                self._err(ts, [], f"{ts.key} was to run on worker {ts.restrict[0][1:]}, which "
                                  "is gone (an actor lives and dies with its worker)", "lost")
                return
            ts.state = "waiting"
            self.unrunnable[ts.key] = ts
            return
        self.unrunnable.pop(ts.key, None)
        if self.paused and len(workers) > 1:    # a paused worker would only queue it
            workers = [w for w in workers if not w.paused] or workers
        if len(workers) == 1:
            best = next(iter(workers))
        elif ts.deps:
            best = min(workers, key=lambda w: (
                -sum(self.tasks[d].nbytes for d in ts.deps if w.id in self.tasks[d].who_has),
                w.load()))
        elif len(workers) > SMALL_CLUSTER and not ts.restrict and not ts.resources \
                and not self.retirement.retiring:     # (_any_worker: of all the workers)
            best = self._any_worker()
        else:
            best = min(workers, key=WorkerInfo.load)
        self._set_processing(ts, best)
        self._send_compute(ts, best)

    def _any_worker(self) -> WorkerInfo:
        """A worker for a task that may run anywhere, in O(1) whatever the cluster's
        size: one that said it is idle, else the least loaded of a few next in turn
        (a scan of every worker per task made 500 workers slower than 2)."""
        for wid in self.idle:
            ws = self.workers[wid]
            if not ws.paused:
                return ws
        window = self._next_workers(RING_WINDOW)
        return min((w for w in window if not w.paused), key=WorkerInfo.load, default=window[0])

    def _next_workers(self, k: int) -> list[WorkerInfo]:
        """k workers next in turn (all of them, if there are no more than k)."""
        ring = self._ring
        if ring is None:
            ring = self._ring = list(self.workers.values())
        n = len(ring)
        if n <= k:
            return ring
        start = self._rr % n
        self._rr = start + 1
        return ring[start:start + k] if start + k <= n else ring[start:] + ring[:start + k - n]

    def _set_processing(self, ts: Task, ws: WorkerInfo) -> None:
        ts.state = "processing"
        ts.processing_on = ws.id
        ws.processing.add(ts.key)
        if ws.idle:
            ws.idle = False
            self.idle.discard(ws.id)

    def _send_compute(self, ts: Task, ws: WorkerInfo) -> None:
        deps = {d: [self.workers[w].address for w in self.tasks[d].who_has]
                for d in ts.deps} if ts.deps else {}
        notify = [c for c in ts.who_wants if c[0] == "c"]   # users' clients (c-...)
        self._attempts += 1
        ts.attempt = self._attempts
        assert ts.func is not None and ts.args is not None, ts   # (a recipe, not data)
        self._emit(ws.id, m.Compute(ts.key, ts.func, ts.args, deps, ts.priority, ts.retries,
                                    notify, ts.attempt))

    def _add_replica(self, ts: Task, ws: WorkerInfo) -> None:
        who = ts.who_has    # (one holder, most results' lot: its shared {wid}, as _want)
        if not who:
            ts.who_has = ws.alone
        elif ws.id not in who:
            if type(who) is set:
                who.add(ws.id)
            else:
                ts.who_has = {*who, ws.id}
        ws.has_what.add(ts.key)

    def _key_memory(self, ts: Task, inline: bool) -> m.Message:
        return m.KeyMemory(ts.key, ts.type, ts.nbytes,
                           [self.workers[w].address for w in ts.who_has],
                           ts.value if inline else None)

    def _key_erred(self, ts: Task) -> m.Message:
        exc, tb, kind = ts.failure()
        return m.KeyErred(ts.key, exc, tb, kind)

    def _report(self, ts: Task, cid: str) -> None:
        if ts.state == "memory":
            self._emit(cid, self._key_memory(ts, inline=True))
        elif ts.state == "erred":
            self._emit(cid, self._key_erred(ts))

    def _maybe_release(self, ts: Task) -> None:
        """Drop a result nobody needs; forget the record once nothing refers to it."""
        if ts.who_wants:
            return
        for dk in ts.dependents:
            dts = self.tasks.get(dk)
            if dts is not None and dts.state in ("waiting", "processing"):
                return
        if ts.state == "memory":
            for wid in ts.who_has:
                ws = self.workers.get(wid)
                if ws is not None:
                    ws.has_what.discard(ts.key)
                    self._emit(wid, m.Free([ts.key]))
            ts.who_has = EMPTY
            ts.value = None
            ts.state = "released"
        elif ts.state in ("waiting", "processing"):
            if ts.processing_on is not None:
                ws = self.workers[ts.processing_on]
                ws.processing.discard(ts.key)
                if ts.running:
                    ws.seceded -= 1
                self._emit(ts.processing_on, m.Free([ts.key]))
            ts.processing_on = None
            ts.running = False
            ts.stealing = None
            ts.state = "released"
            self.unrunnable.pop(ts.key, None)
        if not ts.dependents:
            self._forget(ts)

    def _forget(self, ts: Task) -> None:
        if self.tasks.get(ts.key) is not ts:
            return
        for wid in ts.who_has:
            ws = self.workers.get(wid)
            if ws is not None:
                ws.has_what.discard(ts.key)
                self._emit(wid, m.Free([ts.key]))
        if ts.processing_on is not None:
            ws = self.workers.get(ts.processing_on)
            if ws is not None:
                ws.processing.discard(ts.key)
                if ts.running:
                    ws.seceded -= 1
        self.unrunnable.pop(ts.key, None)
        del self.tasks[ts.key]
        for dk in ts.dependents:
            dts = self.tasks.get(dk)
            if dts is not None:
                dts.waiting_on.discard(ts.key)
        for dk in ts.deps:
            dts = self.tasks.get(dk)
            if dts is not None:
                dts.dependents.discard(ts.key)
                self._maybe_release(dts)
        if ts.inner:
            holder = "^" + ts.key
            self._forget_holder(holder)
            for ik in ts.inner:
                its = self.tasks.get(ik)
                if its is not None:
                    its.unwanted_by(holder)
                    self._maybe_release(its)
        for cid in ts.who_wants:
            self.clients.get(cid, set()).discard(ts.key)


def _stale(ts: Task, msg: m.TaskFinished | m.TaskErred) -> bool:
    """A report of a compute that is no longer in force: the scheduler released that run
    (and told its worker to free it) and the key has been submitted and assigned anew
    since. Its result is about to be dropped, and whom it says it told were waiting for
    the old run: taking it would lose the new one's result."""
    return msg.attempt != CLAIMED and msg.attempt != ts.attempt
