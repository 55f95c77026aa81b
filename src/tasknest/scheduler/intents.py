"""What the journal holds: the *intents* of clients and tasks, not the facts.

Intents are what only the scheduler heard and nobody could tell it again: the
recipe of every task (function, arguments, dependencies), who holds a future on
which key, what was scattered. Facts (where results live, what runs where) are
rebuilt from what workers report when they come back (recovery.py).

Records are msgpack lists, first field a one-letter op::

    E epoch              a scheduler started serving the state dir
    F fid func           a pickled function, named by fid in later records (of its
                         journal generation: a snapshot numbers them afresh)
    R holder fid retries restrict resources loose keys args priorities deps
                         submissions of one holder and function in a row (a map):
                         the recipe of each keys[i] (args[i], priorities[i], the
                         shared fields, and the inputs ``deps`` lists as [i, keys]
                         for the rows that have any), and holder wants them all
                         (holder nil: the recipes alone, as in a snapshot)
    T key fid args deps priority retries restrict resources loose   a recipe
    S holder key fid args ...   a submission: the recipe (as T), and holder wants key
                         (T and S are what earlier versions wrote: still read)
    D keys               data without a recipe (scattered)
    W holder keys        holder wants keys        U holder keys   ... no longer
    X keys               cancelled: nobody wants them
    G holder             a client or worker left: its wants go
    I key keys           the result of key holds futures on keys
    J wid address        a worker joined (recovery waits for those still here)
    C durable            the coordination primitives' state (queues, variables,
                         datasets, events) after the tick's coord messages

Everything here is pure: ``Recorder`` turns incoming messages into records,
``Intents`` replays records into a table, ``rebuild`` makes SchedulerState
records of it, ``snapshot`` writes a SchedulerState's live intents as records.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .coordination import Coordination
from .records import FIRE_AND_FORGET, Task

if TYPE_CHECKING:
    from .state import SchedulerState

EPOCH_SHIFT = 40      # compute numbers of epoch e start at e << 40: above any earlier one


def _kept_holder(holder: str) -> bool:
    """Holders that outlive the scheduler: clients, workers' in-task clients (until
    recovery hears from their worker), fire-and-forget and results holding futures."""
    return holder[:1] in ("c", "w", "^", "@", "!")


class Recorder:
    """Turns the messages the scheduler is about to handle into journal records.

    Records go into ``out``, the tick's list that the journal writes as one record at
    the commit; ``added()`` is called after each new one (the shell schedules the
    commit then). Submissions and claims are most of a journal, and what they cost is
    the Python run and the objects encoded per task, so a map's are one R record: the
    holder, the function and the options once, and a row per task in columns (key,
    args, priority; inputs only for the rows that have any). A task that continues the
    run costs one comparison and three appends."""

    def __init__(self, out: list, added: Callable[[], None] | None = None) -> None:
        self.out = out
        self.added = added
        self.funcs: dict[bytes, int] = {}
        # The R record submissions go on extending, and what its rows share: holder,
        # function, retries, restrict, resources, loose. A run goes on only while it is
        # the last record: nothing may come between intents that came in order, and a
        # commit (which empties ``out``) ends it. (The tuples compare by identity first:
        # one connection's messages share the function's object, None, False, ...)
        self._run: list | None = None
        self._shared: tuple = ()
        self.ops: dict[str, Callable[[str, Any, "SchedulerState"], None]] = {
            "submit": self._submit, "claim": self._claim, "placed": self._placed,
            "want": self._want, "release": self._release, "cancel": self._cancel,
            "fire-and-forget": self._ff, "add-keys": self._add_keys,
            "put-data-done": self._put_data_done, "task-finished": self._finished,
            "coord": self._coord, "resume": self._resume,
        }
        self._coordination: list | None = None   # this tick's C record, filled at commit

    def append(self, record: list) -> None:
        self.out.append(record)
        if self.added is not None:
            self.added()

    def wants(self, op: str) -> bool:
        return op in self.ops

    def record(self, source: str, msg: Any, state: "SchedulerState") -> None:
        handler = self.ops.get(msg.op)
        if handler is not None:
            handler(source, msg, state)

    def fid(self, func: bytes) -> int:
        fid = self.funcs.get(func)
        if fid is None:
            fid = self.funcs[func] = len(self.funcs)
            self.append(["F", fid, func])
        return fid

    def submitted(self, holder: str | None, key: str, func: Any, args: Any, deps: list,
                  priority: list, retries: int, restrict: Any = None, resources: Any = None,
                  loose: bool = False) -> None:
        """A recipe and its holder's want (holder None: the recipe alone)."""
        if type(func) is not bytes:     # (no recipe to keep)
            if holder is not None:
                self.append(["W", holder, [key]])
            return
        run = self._run
        out = self.out
        if not (out and out[-1] is run
                and (holder, func, retries, restrict, resources, loose) == self._shared):
            fid = self.fid(func)        # (a new function's F record goes first)
            self._run = run = ["R", holder, fid, retries, restrict, resources, loose, [], [],
                               [], []]
            self._shared = (holder, func, retries, restrict, resources, loose)
            self.append(run)
        run[7].append(key)
        run[8].append(args)
        run[9].append(priority)
        if deps:
            run[10].append([len(run[8]) - 1, deps])

    def recipe(self, key: str, func: Any, args: Any, deps: list, priority: list, retries: int,
               restrict: Any = None, resources: Any = None, loose: bool = False) -> None:
        self.submitted(None, key, func, args, deps, priority, retries, restrict, resources,
                       loose)

    # -- messages ---------------------------------------------------------------------
    # (submit and claim, the commonest records by far, become rows of the tick's run)
    def _submit(self, source: str, msg: Any, state: Any) -> None:
        self.submitted(source, msg.key, msg.func, msg.args, msg.deps, msg.priority,
                       msg.retries, msg.workers, msg.resources, msg.loose)

    def _claim(self, source: str, msg: Any, state: Any) -> None:
        self.submitted(source, msg.key, msg.func, msg.args, msg.deps, msg.priority,
                       msg.retries)

    def _placed(self, source: str, msg: Any, state: Any) -> None:
        self.submitted(source, msg.key, msg.func, msg.args, [], msg.priority, msg.retries)

    def _want(self, source: str, msg: Any, state: Any) -> None:
        self.append(["W", source, msg.keys])

    def _release(self, source: str, msg: Any, state: Any) -> None:
        self.append(["U", source, msg.keys])

    def _cancel(self, source: str, msg: Any, state: Any) -> None:
        self.append(["X", msg.keys])

    def _ff(self, source: str, msg: Any, state: Any) -> None:
        self.append(["W", FIRE_AND_FORGET, msg.keys])

    def _add_keys(self, source: str, msg: Any, state: Any) -> None:
        self.append(["D", msg.keys])
        self.append(["W", source, msg.keys])

    def _put_data_done(self, source: str, msg: Any, state: Any) -> None:
        entry = state.scatters.pending.get(msg.rid)
        if entry is not None:
            self.append(["D", msg.keys])
            self.append(["W", entry[0], msg.keys])

    def _resume(self, source: str, msg: Any, state: Any) -> None:
        # What only this worker told us: the recipes of its tasks, the results we had
        # no recipe of, and what its in-task client waits on. Unjournaled, a scheduler
        # killed during or after this recovery would know none of it, and a task resumed
        # there would err, its inputs "lost with the scheduler", if they had moved on
        # meanwhile (stolen by a worker that never heard the compute).
        tasks = state.tasks
        data = [k for k in msg.memory if k not in tasks]
        if data:
            self.append(["D", data])
        for entry in msg.tasks:
            if entry[0] not in tasks:
                key, _, func, args, deps, priority, retries = entry
                self.recipe(key, func, args, deps, priority, retries)
        if msg.wants:
            self.append(["W", source, msg.wants])

    def _coord(self, source: str, msg: Any, state: Any) -> None:
        # (the state after the tick's coord messages, taken as the tick is committed)
        if self._coordination is None:
            self._coordination = ["C", None]
            self.append(self._coordination)

    def committing(self, state: "SchedulerState") -> None:
        """Before the commit: fill in this tick's C record, and end the run (the
        commit empties ``out``; a run kept past it would hold the tick's keys, args
        and priorities alive, up to a whole map's, long after they were written)."""
        if self._coordination is not None:
            self._coordination[1] = state.coordination.durable()
            self._coordination = None
        self._run, self._shared = None, ()

    def _finished(self, source: str, msg: Any, state: Any) -> None:
        if msg.inner:
            self.append(["I", msg.key, msg.inner])

    # -- connections ------------------------------------------------------------------------
    def gone(self, holder: str) -> None:
        self.append(["G", holder])

    def joined(self, wid: str, address: str) -> None:
        self.append(["J", wid, address])

    def snapshot(self, state: "SchedulerState", epoch: int) -> list[list]:
        """The records of what ``state`` holds now (for compaction). Functions are
        numbered afresh: the snapshot starts a new generation of the journal."""
        out: list[list] = [["E", epoch]]
        self.funcs = {}
        saved, self.out, self.added = (self.out, self.added), out, None
        try:
            for ts in state.tasks.values():
                if ts.func is not None:
                    self.recipe(ts.key, ts.func, ts.args, ts.deps, ts.priority, ts.retries,
                                ts.restrict, ts.resources, ts.loose)
                elif ts.scattered or ts.state == "memory":
                    out.append(["D", [ts.key]])
                if ts.inner:
                    out.append(["I", ts.key, list(ts.inner)])
            for holder, keys in state.clients.items():
                if keys and _kept_holder(holder):
                    out.append(["W", holder, list(keys)])
            for wid, ws in state.workers.items():
                out.append(["J", wid, ws.address])
            out.append(["C", state.coordination.durable()])
        finally:
            self.out, self.added = saved
        return out


class Intents:
    """The journal replayed: recipes, data keys and wants."""

    def __init__(self) -> None:
        self.epoch = 0
        self.funcs: dict[int, bytes] = {}
        self.recipes: dict[str, list] = {}    # key -> [func, args, deps, priority, retries,
        self.data: set[str] = set()           #          restrict, resources, loose]
        self.inner: dict[str, list[str]] = {}
        self.wants: dict[str, set[str]] = {}
        self.workers: dict[str, str] = {}     # workers that had joined and not left
        self.coordination: list | None = None   # the primitives' last journalled state
        self.bad = 0                          # records that made no sense (skipped)

    def replay(self, records: list) -> "Intents":
        for rec in records:
            try:
                self.apply(rec)
            except (TypeError, ValueError, IndexError, KeyError):
                self.bad += 1
        return self

    def apply(self, rec: list) -> None:
        op = rec[0]
        if op == "R":
            (_, holder, fid, retries, restrict, resources, loose, keys, args, priorities,
             deps) = rec
            if not len(keys) == len(args) == len(priorities):
                raise ValueError("R: columns of different lengths")
            func = self.funcs[fid]
            inputs = {i: d for i, d in deps}
            recipes = self.recipes
            for i, key in enumerate(keys):
                if key not in recipes:
                    recipes[key] = [func, args[i], inputs.get(i, []), priorities[i], retries,
                                    restrict, resources, loose]
            self.data.difference_update(keys)
            if holder is not None and _kept_holder(holder):
                self.wants.setdefault(holder, set()).update(keys)
        elif op == "S":
            key = rec[2]
            if key not in self.recipes:
                self.recipes[key] = [self.funcs[rec[3]], *rec[4:11]]
            self.data.discard(key)
            if _kept_holder(rec[1]):
                self.wants.setdefault(rec[1], set()).add(key)
        elif op == "T":
            key = rec[1]
            if key not in self.recipes:
                self.recipes[key] = [self.funcs[rec[2]], *rec[3:10]]
            self.data.discard(key)
        elif op == "W":
            if _kept_holder(rec[1]):
                self.wants.setdefault(rec[1], set()).update(rec[2])
        elif op == "U":
            wants = self.wants.get(rec[1])
            if wants is not None:
                wants.difference_update(rec[2])
        elif op == "F":
            self.funcs[rec[1]] = bytes(rec[2])
        elif op == "X":
            keys = set(rec[1])
            for wants in self.wants.values():
                wants -= keys
        elif op == "D":
            self.data.update(k for k in rec[1] if k not in self.recipes)
        elif op == "G":
            self.wants.pop(rec[1], None)
            self.workers.pop(rec[1], None)
        elif op == "I":
            self.inner[rec[1]] = list(rec[2])
        elif op == "J":
            self.workers[rec[1]] = rec[2]
        elif op == "E":
            self.epoch = max(self.epoch, int(rec[1]))
        elif op == "C":
            if rec[1] is not None and len(rec[1]) == 4:
                self.coordination = rec[1]
        else:
            raise ValueError(op)

    def live(self) -> set[str]:
        """Keys something still refers to: wanted, or an input (or inner future) of one."""
        known = self.recipes.keys() | self.data
        stack = [k for keys in self.wants.values() for k in keys if k in known]
        if self.coordination is not None:
            stack += [k for k in Coordination.durable_keys(self.coordination) if k in known]
        seen: set[str] = set()
        while stack:
            key = stack.pop()
            if key in seen:
                continue
            seen.add(key)
            recipe = self.recipes.get(key)
            if recipe is not None:
                stack.extend(d for d in recipe[2] if d in known and d not in seen)
            stack.extend(k for k in self.inner.get(key, ()) if k in known and k not in seen)
        return seen


def rebuild(state: "SchedulerState", intents: Intents) -> int:
    """Fill an empty SchedulerState with the live intents: every task released (no
    worker is known yet), every holder wanting what it wanted. Returns the tasks made."""
    live = intents.live()
    made = 0
    order: list[str] = []
    seen: set[str] = set()
    for key in live:            # dependencies first (iteratively: trees can be deep)
        if key in seen:
            continue
        stack = [(key, False)]
        while stack:
            k, expanded = stack.pop()
            if expanded:
                order.append(k)
                continue
            if k in seen:
                continue
            seen.add(k)
            stack.append((k, True))
            recipe = intents.recipes.get(k)
            if recipe is not None:
                stack.extend((d, False) for d in recipe[2] if d in live and d not in seen)
    for key in order:
        recipe = intents.recipes.get(key)
        if recipe is None:
            ts = state.tasks[key] = Task(key, None, None, [], [0, 0, 0])
            ts.scattered = True
        else:
            func, args, deps, priority, retries, restrict, resources, loose = recipe
            if any(d not in state.tasks for d in deps):
                continue
            made_ts = state._new_task(key, func, args, list(deps), list(priority), retries,
                                      restrict)
            if made_ts is None:
                continue
            made_ts.resources = resources or None
            made_ts.loose = bool(loose)
        made += 1
    for key, inner in intents.inner.items():
        holder_ts = state.tasks.get(key)
        if holder_ts is not None:
            holder_ts.inner = [k for k in inner if k in state.tasks]
            for k in holder_ts.inner:
                state._want(state.tasks[k], "^" + key)
    for holder, keys in intents.wants.items():
        for key in keys:
            wanted = state.tasks.get(key)
            if wanted is not None:
                state._want(wanted, holder)
    if intents.coordination is not None:
        state.coordination.restore(intents.coordination)
    state._attempts = max(state._attempts, intents.epoch << EPOCH_SHIFT)
    return made

