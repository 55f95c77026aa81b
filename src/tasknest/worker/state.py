"""WorkerState: what one worker knows about its tasks, as a pure state machine.

Events return actions (actions.py): the scheduler's messages through ``handle(msg)``
(to the ``_on_<op>`` methods, here and in the Placing component), the shell's own
(a task finished, a value arrived) through methods marked ``@event``. Send a
message to the scheduler, Tell a client connected here, Fetch a dependency, wake
the pool (READY), settle local futures on a key that is Done, Drop a value.

Key states::

    waiting --(deps here)--> ready --> executing --> memory | erred
    remote: computed elsewhere (stolen, or claimed first by another worker)
    fetching --> memory (a copy, kept while local tasks need it)
    confirming --(claim-accepted)--> ready: a pure key claimed here, which another
        worker may be claiming at the same moment; it runs once the scheduler
        says the claim is this worker's (``claim-rejected``: remote)

A task a client *placed* here runs at once; placing.py has how the scheduler
confirms that copy.

The shell holds the values (``data``); this class holds the bookkeeping. It is
not thread-safe: the shell calls it under one lock.
"""
from __future__ import annotations

import heapq
from typing import Any, Mapping, Sequence, get_args

from ..memory import EMPTY, shared, sparse
from ..protocol import messages as m
from .placing import Placing
from .actions import READY, Action, Done, Drop, Fetch, Send, Tell, reaping
from .records import CLAIMED, UNCOUNTED, WState, WTask, heap_priority

event = reaping()


class WorkerState:
    def __init__(self, address: str = "") -> None:
        self.address = address
        self.tasks: dict[str, WTask] = {}
        self.ready: list[tuple] = []           # records' priorities: (..., key)
        self.executing: set[str] = set()
        self.fetching: set[str] = set()
        self.idle_reported = False
        self._erred: list[str] = []    # erred records to forget at the next event (reap)
        self.placing = Placing(self)   # tasks clients placed here straight
        # op -> the bound method that takes it (the state's own, or its component's)
        self._handlers = m.handlers(self, self.placing)

    # == dispatch =====================================================================
    def handle(self, msg: m.Message) -> list[Action]:
        """One message from the scheduler, as the scheduler's ``handle``: the actions it
        causes. Records an earlier event erred are reaped first, here, once for the
        message (actions.reaping has why); the shell's own events reap by ``@event``."""
        if self._erred:
            out = self.reap()
            out += self._handlers[msg.op](msg)
            return out
        return self._handlers[msg.op](msg)

    OPS: frozenset[str] = frozenset()     # what handle() takes, set below the class

    def compact(self) -> bool:
        """Right-size the tables a large run left mostly empty; True if any was."""
        shrank = False
        if sparse(self.tasks):
            self.tasks, shrank = dict(self.tasks), True
        if sparse(self.executing):
            self.executing = set(self.executing)
        return shrank

    # == incoming work ===================================================================
    def _on_compute(self, msg: m.Compute) -> list[Action]:
        """The scheduler assigned a task here (its ``attempt``-th assignment)."""
        out: list[Action] = []
        key, notify, attempt = msg.key, msg.notify, msg.attempt
        t = self.tasks.get(key)
        if t is None:
            t = self.tasks[key] = WTask(key, "new")
        elif t.state not in ("remote", "fetching"):
            # the one run there is (a cancelled one resumes) answers the newest compute
            self._adopt(t, attempt, out)
            if t.unconfirmed:             # assigned here: the claim is ours
                self._accept(t, out)
            if notify and t.state != "memory":
                t.notify = list(dict.fromkeys([*t.notify, *notify]))
            return out
        t.notify = shared(tuple(notify)) if notify else ()   # (the same client, mostly)
        t.attempt = attempt
        t.recipe = (msg.func, msg.args, msg.retries)
        t.priority = heap_priority(msg.priority, key)
        t.deps = tuple(msg.deps)
        self.idle_reported = False
        self._resolve_deps(t, msg.deps, out)
        return out

    @event
    def claim(self, key: str, func: bytes, args: bytes, deps: list[str], priority: list,
              retries: int, locations: Mapping[str, Sequence[str]] | None = None,
              confirm: bool = False) -> list[Action]:
        """A task on this worker submitted a new task: queue it here, tell the scheduler.

        ``confirm``: the key may be claimed elsewhere at the same moment (a pure call),
        so it waits for the scheduler's word before it runs; a fresh key (``pure=False``)
        can only be claimed here and runs at once."""
        out: list[Action] = [Send(m.Claim(key, func, args, deps, priority, retries,
                                              confirm))]
        t = self.tasks.get(key)
        if t is not None and t.state == "cancelled":   # still running: that run counts again
            t.state, t.owned, t.attempt = "executing", True, CLAIMED
            return out
        if t is not None and t.attempt == UNCOUNTED and t.state in (
                "ready", "waiting", "executing", "memory", "erred"):
            # a client's placed copy the scheduler may not know yet: it hears of it from
            return out            # here too (the claim)
        t = self.tasks[key] = WTask(key, "new")
        t.recipe, t.deps = (func, args, retries), deps
        t.priority = heap_priority(priority, key)
        t.owned = True
        t.unconfirmed = confirm
        self._resolve_deps(t, {d: (locations or {}).get(d, []) for d in deps}, out)
        return out

    def _on_claim_accepted(self, msg: m.ClaimAccepted) -> list[Action]:
        """The scheduler keeps these claims as ours: they may run."""
        out: list[Action] = []
        for key in msg.keys:
            t = self.tasks.get(key)
            if t is not None and t.unconfirmed:
                self._accept(t, out)
        return out

    def _accept(self, t: WTask, out: list[Action]) -> None:
        t.unconfirmed = False
        if t.state == "confirming":
            self._make_ready(t, out)

    def _adopt(self, t: WTask, attempt: int, out: list[Action]) -> None:
        """The scheduler counts the run here as its compute ``attempt``."""
        t.attempt = attempt
        if t.state == "cancelled":        # freed while it ran, wanted again: that run counts
            t.state = "executing"
        if t.state in ("memory", "erred"):
            msg: Any = t.held
            if msg is None and t.state == "memory":   # reported before, as another
                msg = m.TaskFinished(t.key, t.nbytes, t.type, None, [], [], attempt)  # compute
            elif msg is None:
                assert t.error is not None
                exception, traceback, kind = t.error
                msg = m.TaskErred(t.key, exception, traceback, kind, attempt)
            msg.attempt = attempt
            out.append(Send(msg))
            t.held = None
        t.owned = t.state != "erred"

    def _resolve_deps(self, t: WTask, deps: Mapping[str, Sequence[str]], out: list[Action]) -> None:
        t.waiting_on = set() if deps else EMPTY
        for dk, addrs in deps.items():
            d = self.tasks.get(dk)
            if d is None:
                d = self.tasks[dk] = WTask(dk, "remote")
            if d.dependents:
                d.dependents.add(t.key)
            else:
                d.dependents = {t.key}
            if d.state == "memory":
                continue
            if d.state == "erred":
                assert d.error is not None, d
                exception, traceback, kind = d.error
                self._set_erred(t, exception, traceback, kind, out)
                return
            t.waiting_on.add(dk)
            if addrs and d.state == "remote":
                d.who_has = [a for a in addrs if a != self.address] or d.who_has
                self._fetch(d, out)
        if t.waiting_on:
            t.state = "waiting"
        else:
            self._make_ready(t, out)

    def _make_ready(self, t: WTask, out: list[Action]) -> None:
        if t.unconfirmed:              # ready but for the scheduler's word
            t.state = "confirming"
            return
        t.state = "ready"
        heapq.heappush(self.ready, t.priority)       # (it ends with the key)
        self.idle_reported = False
        out.append(READY)

    def _fetch(self, d: WTask, out: list[Action]) -> None:
        if d.state == "remote" and d.who_has and d.key not in self.fetching:
            d.state = "fetching"
            self.fetching.add(d.key)
            out.append(Fetch(d.key, list(d.who_has)))

    # == execution =========================================================================
    def pop_ready(self) -> WTask | None:
        """The highest-priority ready task, now executing."""
        heap = self.ready
        while heap:
            key = heapq.heappop(heap)[-1]
            t = self.tasks.get(key)
            if t is not None and t.state == "ready":
                t.state = "executing"
                self.executing.add(key)
                return t
        return None

    def has_ready(self) -> bool:
        return self._best_ready() is not None

    def _best_ready(self) -> WTask | None:
        """The ready task at the top of the heap (stale entries dropped), not popped."""
        heap = self.ready
        while heap:
            t = self.tasks.get(heap[0][-1])
            if t is not None and t.state == "ready":
                return t
            heapq.heappop(heap)
        return None

    def helpable(self, keys: list[str]) -> WTask | None:
        """A ready task among ``keys`` or what they wait on, taken for running inline.

        Depth first and lazy: it stops at the first ready task, so waiting on an
        aggregate of thousands of queued inputs costs little per call."""
        top = self._best_ready()
        if top is not None:      # the usual case: the best ready task is a direct input
            tasks = self.tasks
            for key in keys:
                w = tasks.get(key)
                if key == top.key or (w is not None and w.state == "waiting"
                                      and top.key in w.waiting_on):
                    heapq.heappop(self.ready)
                    top.state = "executing"
                    self.executing.add(top.key)
                    return top
        # else search; a set emptied from the front is slow to scan again from its start,
        # which is why the shortcut above comes first
        seen: set[str] = set()
        stack = [iter(keys)]
        while stack:
            for key in stack[-1]:
                if key in seen:
                    continue
                seen.add(key)
                t = self.tasks.get(key)
                if t is None:
                    continue
                if t.state == "ready":
                    t.state = "executing"
                    self.executing.add(key)
                    return t
                if t.state == "waiting" and t.waiting_on:
                    stack.append(iter(t.waiting_on))   # not mutated while we hold the lock
                    break
            else:
                stack.pop()
        return None

    def awaits_confirm(self, keys: list[str]) -> bool:
        """Whether one of ``keys``, or what they wait on here, is a claim that runs here
        once the scheduler accepts it (so a task waiting on them helps after that)."""
        seen: set[str] = set()
        todo = list(keys)
        while todo:
            key = todo.pop()
            t = self.tasks.get(key)
            if t is None or key in seen:
                continue
            seen.add(key)
            if t.state == "confirming":
                return True
            if t.state == "waiting":
                todo.extend(t.waiting_on)
        return False

    @event
    def finished(self, key: str, nbytes: int, type_name: str, inline: list | None,
                 inner: list[str], connected: Any = ()) -> list[Action]:
        """A task ran here. Clients in its ``notify`` list that are ``connected`` to
        this worker are told directly (one hop instead of two through the scheduler),
        and the scheduler hears whom it need not tell. ``inner``: keys of futures
        inside the result."""
        out: list[Action] = []
        self.executing.discard(key)
        t = self.tasks.get(key)
        if t is None or t.state != "executing":
            out.append(Drop(key))       # freed while it ran
            if t is not None and t.state == "cancelled":
                t.state = "remote"
                self._release_inputs(t, out)
                self._maybe_drop(t, out)
            return out
        t.state = "memory"
        t.nbytes = nbytes
        t.type = shared(type_name)       # (a builtin's name is made afresh each time)
        t.owned = True
        # a result holding futures goes through the scheduler: the client asks for those
        # futures' keys as it unpickles them, and the scheduler must have read this
        # worker's claims of them (sent before this report) by then
        notified = [c for c in t.notify if c in connected] if t.notify and not inner else []
        t.notify = ()
        report = m.TaskFinished(key, nbytes, type_name, inline, inner, notified, t.attempt)
        if t.attempt == UNCOUNTED:
            t.held = report                  # until the scheduler counts the placed copy
        else:     # queued before the clients hear: a ``sync`` after that finds it sent
            out.append(Send(report))
            t.attempt = CLAIMED      # (answered: its number, an int object, is not kept)
        for cid in notified:
            out.append(Tell(cid, m.KeyMemory(key, type_name, nbytes, [self.address], inline)))
        out.append(Done(key))
        self._dependency_arrived(t, out)
        self._release_inputs(t, out)
        # the record now holds a result, maybe for long: its recipe is the scheduler's
        # to keep (a resume names results by key alone)
        t.recipe = None
        t.deps = t.priority = ()
        return out

    @event
    def erred(self, key: str, exception: list, traceback: str, kind: str,
              connected: Any = ()) -> list[Action]:
        out: list[Action] = []
        self.executing.discard(key)
        t = self.tasks.get(key)
        if t is None or t.state != "executing":
            if t is not None and t.state == "cancelled":
                t.state = "remote"
                self._release_inputs(t, out)
                self._maybe_drop(t, out)
            return out
        if t.recipe is not None and t.recipe[2] > 0 and kind == "exception":
            func, args, retries = t.recipe
            t.recipe = (func, args, retries - 1)
            self._make_ready(t, out)
            return out
        report = m.TaskErred(key, exception, traceback, kind, t.attempt)
        if t.attempt == UNCOUNTED:                  # tell the placing client, hold the report
            for cid in t.notify:
                if cid in connected:
                    out.append(Tell(cid, m.KeyErred(key, exception, traceback, kind)))
            t.held = report
        else:
            out.append(Send(report))
        t.notify = ()
        self._set_erred(t, exception, traceback, kind, out)
        self._release_inputs(t, out)
        return out

    def _set_erred(self, t: WTask, exception: list, traceback: str, kind: str,
                   out: list[Action]) -> None:
        t.state = "erred"
        t.unconfirmed = False
        t.error = (exception, traceback, kind)
        t.waiting_on = EMPTY
        self._erred.append(t.key)
        out.append(Done(t.key))
        for dk in list(t.dependents):
            d = self.tasks.get(dk)
            if d is not None and d.state in ("waiting", "ready", "confirming"):
                self._set_erred(d, exception, traceback, kind, out)

    def reap(self) -> list[Action]:
        """Forget erred records once the shell settled local futures from them.

        The scheduler never frees an erred key on a worker (no data is held), and
        it tells every holder of a future about the error itself.
        """
        out: list[Action] = []
        keys, self._erred = self._erred, []
        for key in keys:
            t = self.tasks.get(key)
            if t is None or t.state != "erred":
                continue
            if t.held is not None:        # its report waits for the confirm: keep it till then
                self._erred.append(key)
                continue
            del self.tasks[key]
            for dk in t.deps:
                d = self.tasks.get(dk)
                if d is not None:
                    d.dependents.discard(key)
                    self._maybe_drop(d, out)
        return out

    def _dependency_arrived(self, t: WTask, out: list[Action]) -> None:
        for dk in t.dependents:
            d = self.tasks.get(dk)
            if d is not None and d.state == "waiting":
                d.waiting_on.discard(t.key)
                if not d.waiting_on:
                    self._make_ready(d, out)

    def _release_inputs(self, t: WTask, out: list[Action]) -> None:
        """Drop fetched copies that no local task needs any more."""
        t.waiting_on = EMPTY           # it will not run here (any more)
        for dk in t.deps:
            d = self.tasks.get(dk)
            if d is None:
                continue
            d.dependents.discard(t.key)
            self._maybe_drop(d, out)

    def _maybe_drop(self, d: WTask, out: list[Action]) -> None:
        if d.owned or d.state in ("executing", "cancelled", "ready", "waiting", "fetching",
                                  "confirming"):
            return                     # (a cancelled task still runs: it ends in finished/erred)
        if any(self.tasks[k].state in ("waiting", "ready", "executing", "confirming")
               for k in d.dependents if k in self.tasks):
            return
        if d.state == "memory":
            out.append(Drop(d.key))
        del self.tasks[d.key]
        for k in d.dependents:
            dep = self.tasks.get(k)
            if dep is not None:
                dep.waiting_on.discard(d.key)

    # == data ===============================================================================
    @event
    def fetched(self, key: str, nbytes: int) -> list[Action]:
        out: list[Action] = []
        self.fetching.discard(key)
        t = self.tasks.get(key)
        if t is None or t.state != "fetching":
            return out
        t.state = "memory"
        t.nbytes = nbytes
        self._dependency_arrived(t, out)
        self._maybe_drop(t, out)
        return out

    @event
    def value_arrived(self, key: str, nbytes: int) -> list[Action]:
        """A dependency's value came with the scheduler's key-memory: no fetch needed."""
        t = self.tasks.get(key)
        if t is None or t.state not in ("remote", "fetching"):
            return []
        if t.state == "remote":
            t.state = "fetching"
            self.fetching.add(key)
        return self.fetched(key, nbytes)

    @event
    def fetch_failed(self, key: str, address: str) -> list[Action]:
        out: list[Action] = []
        self.fetching.discard(key)
        t = self.tasks.get(key)
        if t is None or t.state != "fetching":
            return out
        t.state = "remote"
        t.who_has = [a for a in t.who_has if a != address]
        out.append(Send(m.MissingData(key, address)))
        self._fetch(t, out)
        self._maybe_drop(t, out)      # its dependents may have gone while it travelled
        return out

    def _on_key_memory(self, msg: m.KeyMemory) -> list[Action]:
        """The scheduler says where a key we may need lives."""
        out: list[Action] = []
        t = self.tasks.get(msg.key)
        if t is None or t.state not in ("remote", "fetching"):
            return out
        t.who_has = [a for a in msg.who_has if a != self.address]
        if any(self.tasks[k].state == "waiting" for k in t.dependents if k in self.tasks):
            self._fetch(t, out)
        return out

    def _on_key_erred(self, msg: m.KeyErred) -> list[Action]:
        out: list[Action] = []
        t = self.tasks.get(msg.key)
        if t is not None and t.state in ("remote", "fetching", "waiting", "ready",
                                         "confirming"):
            self.fetching.discard(msg.key)
            self._set_erred(t, msg.exception, msg.traceback, msg.kind, out)
            t.owned = False
            self._release_inputs(t, out)   # a claim that waited: its inputs may go now
            self._maybe_drop(t, out)
        return out

    @event
    def put_data(self, keys: list[str], nbytes: list[int]) -> list[Action]:
        """Data placed here (scatter): owned, in memory."""
        out: list[Action] = []
        for key, nb in zip(keys, nbytes):
            t = self.tasks.get(key)
            if t is None:
                t = self.tasks[key] = WTask(key, "memory")
            was = t.state
            t.state, t.nbytes, t.owned, t.unconfirmed = "memory", nb, True, False
            self.fetching.discard(key)
            if was != "memory":
                out.append(Done(key))
                self._dependency_arrived(t, out)
        return out

    def _on_free(self, msg: m.Free) -> list[Action]:
        """The scheduler no longer needs these here."""
        out: list[Action] = []
        for key in msg.keys:
            pk = self.placing.early_run(key)
            if pk is not None:    # that run (still on its way) is not wanted any more
                self.placing.early[pk] = (key, UNCOUNTED)
                continue
            t = self.tasks.get(key)
            if t is None:
                continue
            if t.placers:         # a client counts on this copy: it stays, uncounted by the
                t.attempt = UNCOUNTED    # scheduler now, till the confirm says whether it counts
                continue
            if t.state == "executing":
                t.state = "cancelled"     # its result is dropped when it finishes
                t.owned = False
                continue
            t.owned = False
            if t.state in ("ready", "waiting", "confirming"):
                t.state = "remote"
                t.unconfirmed = False
                self._release_inputs(t, out)
            self._maybe_drop(t, out)
        return out

    def _on_steal(self, msg: m.Steal) -> list[Action]:
        key = msg.key
        # (not a task a local one waits to run the moment its claim is accepted: it
        # would only bounce to the thief and back, and its siblings' shared calls too)
        t = self.tasks.get(key)
        ok = t is not None and t.state == "ready" and not t.placers and not t.awaited \
            and self.placing.early_run(key) is None
        later = t is not None and t.state == "ready" and bool(t.awaited)
        out: list[Action] = [Send(m.StealReply(key, ok, later))]
        if ok and t is not None:
            t.state = "remote"            # computed elsewhere now; local dependents wait for it
            t.owned = False
            t.who_has = ()
            self._release_inputs(t, out)
            self._maybe_drop(t, out)
        return out

    def _on_claim_rejected(self, msg: m.ClaimRejected) -> list[Action]:
        """Another worker claimed this pure key first; wait for its result instead."""
        out: list[Action] = []
        t = self.tasks.get(msg.key)
        # (placed by a client too: its confirm says whether the copy stays; running or
        # run here already: that run goes on, and its result counts as a copy)
        if t is not None and not t.placers and t.state in ("ready", "waiting", "confirming"):
            t.state = "remote"
            t.owned = False
            t.unconfirmed = False
            t.who_has = ()
            self._release_inputs(t, out)
            self._maybe_drop(t, out)
        return out

    @event
    def idle(self, has_free_slot: bool) -> list[Action]:
        """The pool found nothing to do; say so once so the scheduler can send work."""
        out: list[Action] = []
        if has_free_slot and not self.idle_reported and not self.has_ready():
            self.idle_reported = True
            out.append(Send(m.Idle()))
        return out

    def held_keys(self) -> list[str]:
        return [k for k, t in self.tasks.items() if t.state == "memory" and t.owned]

    # == invariants ==========================================================================
    def validate(self) -> None:
        for key, t in self.tasks.items():
            assert t.key == key
            assert t.state in get_args(WState) and t.state != "new", t
            # a pure claim never runs before the scheduler said it is this worker's
            assert (t.state == "confirming") <= t.unconfirmed, t
            assert not t.unconfirmed or t.state in ("waiting", "confirming"), t
            if t.state == "waiting":
                assert t.waiting_on, t
            for dk in t.waiting_on:
                assert dk in self.tasks, (t, dk)
                assert self.tasks[dk].state != "memory", (t, dk)
                assert key in self.tasks[dk].dependents, (t, dk)
            if t.state == "executing" or t.state == "cancelled":
                assert key in self.executing, t
            if t.state == "fetching":
                assert key in self.fetching, t
            for pk in t.placers:
                assert self.placing.places.get(pk) == key, (t, pk)
            if t.held is not None:
                assert t.attempt == UNCOUNTED and t.state in ("memory", "erred"), t
        for key in self.executing:     # a running task keeps its record until it ends
            assert key in self.tasks and self.tasks[key].state in ("executing", "cancelled"), key
        queued = {entry[-1] for entry in self.ready}
        for key, t in self.tasks.items():
            if t.state == "ready":
                assert key in queued, t

    def snapshot(self) -> dict[str, Any]:
        return {k: t.state for k, t in self.tasks.items()}


WorkerState.OPS = frozenset(m.handlers(WorkerState, Placing))
