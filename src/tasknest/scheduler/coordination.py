"""Coordination primitives kept by the scheduler: queues, variables, events,
semaphores (a lock is a semaphore of one lease) and published datasets.

A component of SchedulerState: it owns its records and registers its handler
for ``coord`` messages with the state machine. Every request is answered with a
``reply`` carrying the request's number: at once, or, for a request that waits
(a get on an empty queue, a wait on a clear event, an acquire of a taken lease),
once it can be granted. The scheduler has no clock: a caller that stops waiting
sends ``abandon`` with that number, answered with ``{"timeout": True}`` unless the
grant left first (then the caller takes the grant, late).

Values are pickled by the caller; futures inside them are held by the primitive
(``%kind:name`` wants their keys) and handed to the receiver's connection (it
wants them before the reply leaves), so their results stay alive in between.
Leases belong to the connection that took them: when a client or a worker goes,
its leases go and its waiters are dropped.
"""
from __future__ import annotations

from collections import Counter, deque
from typing import TYPE_CHECKING, Any

from ..protocol import messages as m

if TYPE_CHECKING:
    from .state import SchedulerState

Value = tuple  # (frames, keys)


class _Semaphore:
    __slots__ = ("max_leases", "leases", "waiters")

    def __init__(self, max_leases: int) -> None:
        self.max_leases = max_leases
        self.leases: dict[str, str] = {}                    # lease id -> source holding it
        self.waiters: deque[tuple[str, int, str]] = deque()  # (source, rid, lease id)


class _Queue:
    __slots__ = ("items", "getters")

    def __init__(self) -> None:
        self.items: deque[Value] = deque()
        self.getters: deque[tuple[str, int, Any]] = deque()  # (source, rid, batch)


class Coordination:
    """The primitives' records and the handler of ``coord`` messages."""

    def __init__(self, state: "SchedulerState") -> None:
        self.state = state
        self.queues: dict[str, _Queue] = {}
        self.variables: dict[str, Value] = {}
        self.var_waiters: dict[str, list[tuple[str, int]]] = {}
        self.events: dict[str, bool] = {}
        self.event_waiters: dict[str, list[tuple[str, int]]] = {}
        self.semaphores: dict[str, _Semaphore] = {}
        self.datasets: dict[str, Value] = {}
        self.held: dict[str, Counter[str]] = {}    # holder -> keys of futures in its values
        state.register("coord", self._on_coord)
        state.components.append(self)

    # -- dispatch ----------------------------------------------------------------------------
    def _on_coord(self, source: str, msg: m.Coord) -> None:
        kind, op = msg.kind, msg.action
        handler = getattr(self, f"_{kind}_{op}", None) if kind in _KINDS else None
        if op == "abandon":
            self._abandon(source, msg.rid)
            return
        if handler is None:
            self._reply(source, msg.rid, None, f"unknown coordination request {kind!r} {op!r}")
            return
        handler(source, msg)

    def _reply(self, target: str, rid: int, value: Any, error: str | None = None) -> None:
        self.state._emit(target, m.Reply(rid, value, error))

    def _give(self, target: str, rid: int, value: Value, holder: str | None,
              extra: dict | None = None) -> None:
        """Reply with a value; its futures are wanted by the receiver first."""
        frames, keys = value
        live = self._want_for(target, keys)
        if holder is not None:
            self._unhold(holder, keys)
        self._reply(target, rid, {"value": frames, "keys": live, **(extra or {})})

    def _want_for(self, target: str, keys: list[str]) -> list[str]:
        """The receiver holds the futures before it hears of them; those a cancel made
        the scheduler forget meanwhile are left out (they err as unknown there)."""
        live = []
        for k in keys:
            ts = self.state.tasks.get(k)
            if ts is not None:
                self.state._want(ts, target)
                live.append(k)
        return live

    def _hold(self, holder: str, keys: list[str]) -> None:
        if not keys:
            return
        held = self.held.setdefault(holder, Counter())
        for k in keys:
            ts = self.state.tasks.get(k)
            if ts is None:
                continue
            held[k] += 1
            self.state._want(ts, holder)

    def _unhold(self, holder: str, keys: list[str]) -> None:
        held = self.held.get(holder)
        if held is None:
            return
        for k in keys:
            if held[k] <= 0:
                continue
            held[k] -= 1
            if held[k] == 0:
                del held[k]
                ts = self.state.tasks.get(k)
                if ts is not None:
                    self.state._unwant(ts, holder)
                    self.state._maybe_release(ts)
        if not held:
            del self.held[holder]
            self.state._forget_holder(holder)

    # -- queues ------------------------------------------------------------------------------
    def _queue_put(self, source: str, msg: m.Coord) -> None:
        q = self.queues.setdefault(msg.name, _Queue())
        value = (msg.value or [], list(msg.keys))
        holder = "%queue:" + msg.name
        self._hold(holder, value[1])
        q.items.append(value)
        self._reply(source, msg.rid, True)
        self._serve_queue(msg.name, q)

    def _queue_get(self, source: str, msg: m.Coord) -> None:
        batch = msg.arg
        if batch is not None and not (type(batch) is int and batch >= 0) and batch is not True:
            self._reply(source, msg.rid, None, f"batch must be an int or True, got {batch!r}")
            return
        q = self.queues.setdefault(msg.name, _Queue())
        q.getters.append((source, msg.rid, batch))
        self._serve_queue(msg.name, q)

    def _queue_qsize(self, source: str, msg: m.Coord) -> None:
        q = self.queues.get(msg.name)
        self._reply(source, msg.rid, len(q.items) if q else 0)

    def _serve_queue(self, name: str, q: _Queue) -> None:
        holder = "%queue:" + name
        while q.getters:
            source, rid, batch = q.getters[0]
            if batch is None:
                if not q.items:
                    break
                q.getters.popleft()
                self._give(source, rid, q.items.popleft(), holder)
                continue
            n = len(q.items) if batch is True else batch
            if len(q.items) < n:
                break
            q.getters.popleft()
            got = [q.items.popleft() for _ in range(n)]
            frames = [v[0] for v in got]
            keys = [k for v in got for k in v[1]]
            live = self._want_for(source, keys)
            self._unhold(holder, keys)
            self._reply(source, rid, {"batch": frames, "keys": live})
        if not q.items and not q.getters:
            del self.queues[name]

    # -- variables and datasets --------------------------------------------------------------
    def _variable_set(self, source: str, msg: m.Coord) -> None:
        name = msg.name
        holder = "%variable:" + name
        value = (msg.value or [], list(msg.keys))
        self._hold(holder, value[1])
        old = self.variables.get(name)
        self.variables[name] = value
        if old is not None:
            self._unhold(holder, old[1])
        self._reply(source, msg.rid, True)
        for target, rid in self.var_waiters.pop(name, []):
            self._give(target, rid, value, None)

    def _variable_get(self, source: str, msg: m.Coord) -> None:
        value = self.variables.get(msg.name)
        if value is None:
            self.var_waiters.setdefault(msg.name, []).append((source, msg.rid))
        else:
            self._give(source, msg.rid, value, None)

    def _variable_delete(self, source: str, msg: m.Coord) -> None:
        old = self.variables.pop(msg.name, None)
        if old is not None:
            self._unhold("%variable:" + msg.name, old[1])
        self._reply(source, msg.rid, old is not None)

    def _dataset_publish(self, source: str, msg: m.Coord) -> None:
        name = msg.name
        if name in self.datasets and not msg.arg:
            self._reply(source, msg.rid, {"exists": True})
            return
        value = (msg.value or [], list(msg.keys))
        holder = "%dataset:" + name
        self._hold(holder, value[1])
        old = self.datasets.get(name)
        self.datasets[name] = value
        if old is not None:
            self._unhold(holder, old[1])
        self._reply(source, msg.rid, True)

    def _dataset_get(self, source: str, msg: m.Coord) -> None:
        value = self.datasets.get(msg.name)
        if value is None:
            self._reply(source, msg.rid, {"missing": True})
        else:
            self._give(source, msg.rid, value, None)

    def _dataset_list(self, source: str, msg: m.Coord) -> None:
        self._reply(source, msg.rid, sorted(self.datasets))

    def _dataset_unpublish(self, source: str, msg: m.Coord) -> None:
        old = self.datasets.pop(msg.name, None)
        if old is None:
            self._reply(source, msg.rid, {"missing": True})
            return
        self._unhold("%dataset:" + msg.name, old[1])
        self._reply(source, msg.rid, True)

    # -- events ------------------------------------------------------------------------------
    def _event_set(self, source: str, msg: m.Coord) -> None:
        self.events[msg.name] = True
        for target, rid in self.event_waiters.pop(msg.name, []):
            self._reply(target, rid, True)
        self._reply(source, msg.rid, True)

    def _event_clear(self, source: str, msg: m.Coord) -> None:
        self.events.pop(msg.name, None)
        self._reply(source, msg.rid, True)

    def _event_is_set(self, source: str, msg: m.Coord) -> None:
        self._reply(source, msg.rid, self.events.get(msg.name, False))

    def _event_wait(self, source: str, msg: m.Coord) -> None:
        if self.events.get(msg.name):
            self._reply(source, msg.rid, True)
        else:
            self.event_waiters.setdefault(msg.name, []).append((source, msg.rid))

    # -- semaphores (and locks: one lease) ---------------------------------------------------
    def _semaphore_acquire(self, source: str, msg: m.Coord) -> None:
        name, rid, lease, n = msg.name, msg.rid, msg.holder, msg.arg
        if type(n) is not int or n < 1 or not lease:
            self._reply(source, rid, None, f"max_leases must be a positive int, got {n!r}")
            return
        sem = self.semaphores.get(name)
        if sem is None:
            sem = self.semaphores[name] = _Semaphore(n)
        elif sem.max_leases != n:
            self._reply(source, rid, None, f"semaphore {name!r} has {sem.max_leases} leases, "
                                           f"not {n}")
            return
        if lease in sem.leases or any(w[2] == lease for w in sem.waiters):
            self._reply(source, rid, None, f"lease {lease!r} of {name!r} is taken already")
            return
        sem.waiters.append((source, rid, lease))
        self._serve_semaphore(name, sem)

    def _semaphore_release(self, source: str, msg: m.Coord) -> None:
        name, lease = msg.name, msg.holder
        sem = self.semaphores.get(name)
        if sem is None or sem.leases.get(lease) != source:
            self._reply(source, msg.rid, None, f"{name!r} was released without being "
                                               "acquired (or its lease was already released)")
            return
        del sem.leases[lease]
        self._reply(source, msg.rid, True)
        self._serve_semaphore(name, sem)

    def _semaphore_count(self, source: str, msg: m.Coord) -> None:
        sem = self.semaphores.get(msg.name)
        self._reply(source, msg.rid, len(sem.leases) if sem else 0)

    def _serve_semaphore(self, name: str, sem: _Semaphore) -> None:
        while sem.waiters and len(sem.leases) < sem.max_leases:
            source, rid, lease = sem.waiters.popleft()
            sem.leases[lease] = source
            self._reply(source, rid, True)
        if not sem.leases and not sem.waiters:
            del self.semaphores[name]

    # -- waiting callers and connections that go ------------------------------------------
    def _abandon(self, source: str, rid: int) -> None:
        """The caller stopped waiting on request ``rid``: drop it if still waiting."""
        if self._drop_waiters(lambda s, r: s == source and r == rid):
            self._reply(source, rid, {"timeout": True})

    def _drop_waiters(self, match: Any) -> bool:
        dropped = False
        for name, q in list(self.queues.items()):
            before = len(q.getters)
            q.getters = deque(g for g in q.getters if not match(g[0], g[1]))
            dropped |= len(q.getters) != before
            if not q.items and not q.getters:
                del self.queues[name]
        for table in (self.var_waiters, self.event_waiters):
            for name, waiters in list(table.items()):
                kept = [w for w in waiters if not match(*w)]
                dropped |= len(kept) != len(waiters)
                if kept:
                    table[name] = kept
                else:
                    del table[name]
        for name, sem in list(self.semaphores.items()):
            before = len(sem.waiters)
            sem.waiters = deque(w for w in sem.waiters if not match(w[0], w[1]))
            dropped |= len(sem.waiters) != before
            if not sem.leases and not sem.waiters:
                del self.semaphores[name]
        return dropped

    def source_gone(self, source: str) -> None:
        """A client or worker left: its waiters go, its leases are released."""
        self._drop_waiters(lambda s, r: s == source)
        for name, sem in list(self.semaphores.items()):
            for lease in [k for k, s in sem.leases.items() if s == source]:
                del sem.leases[lease]
            self._serve_semaphore(name, sem)

    def worker_added(self, wid: str) -> None:
        pass

    # -- what outlives the scheduler (journalled: scheduler/intents.py) -------------------------
    def durable(self) -> list:
        """Queues' items, variables, datasets and the events that are set. Semaphores'
        leases and every waiter belong to connections, which a restart ends."""
        return [{n: [[v[0], v[1]] for v in q.items] for n, q in self.queues.items() if q.items},
                {n: [v[0], v[1]] for n, v in self.variables.items()},
                {n: [v[0], v[1]] for n, v in self.datasets.items()},
                sorted(n for n, is_set in self.events.items() if is_set)]

    def restore(self, durable: list) -> None:
        """Back from the journal, into an empty component: values hold their futures again."""
        queues, variables, datasets, events = durable
        for name, items in queues.items():
            q = self.queues[name] = _Queue()
            for frames, keys in items:
                q.items.append((list(frames), list(keys)))
                self._hold("%queue:" + name, keys)
        for table, prefix, values in ((self.variables, "%variable:", variables),
                                      (self.datasets, "%dataset:", datasets)):
            for name, (frames, keys) in values.items():
                table[name] = (list(frames), list(keys))
                self._hold(prefix + name, keys)
        for name in events:
            self.events[name] = True

    @staticmethod
    def durable_keys(durable: list) -> list[str]:
        """The futures inside journalled values (they keep their results alive)."""
        queues, variables, datasets, _ = durable
        keys = [k for items in queues.values() for _, ks in items for k in ks]
        return keys + [k for table in (variables, datasets) for _, ks in table.values()
                       for k in ks]

    # -- invariants --------------------------------------------------------------------------
    def validate(self) -> None:
        live = set(self.state.clients) | set(self.state.workers)
        for holder, held in self.held.items():
            assert holder.startswith("%"), holder
            for k, n in held.items():
                assert n > 0, (holder, k)
                ts = self.state.tasks.get(k)
                # (a cancel may have dropped the want; then nothing refers to the record)
                assert ts is None or holder in ts.who_wants or ts.state == "released" \
                    or k not in self.state.clients.get(holder, ()), (holder, k)
        for name, sem in self.semaphores.items():
            assert len(sem.leases) <= sem.max_leases, (name, sem.leases)
            assert sem.leases or sem.waiters, name
            assert not sem.waiters or len(sem.leases) == sem.max_leases, (name, sem.waiters)
            for s in list(sem.leases.values()) + [w[0] for w in sem.waiters]:
                assert s in live, (name, s)
        for name, q in self.queues.items():
            assert q.items or q.getters, name
            assert not (q.items and q.getters and q.getters[0][2] is None), name
        for name in self.event_waiters:
            assert not self.events.get(name), name
        for name in self.var_waiters:
            assert name not in self.variables, name


_KINDS = frozenset({"queue", "variable", "dataset", "event", "semaphore"})
