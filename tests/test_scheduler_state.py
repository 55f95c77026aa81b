"""A socket-free cluster: one SchedulerState, WorkerStates and fake clients.

Messages travel through FIFO queues, one per connection and direction, as they
would over TCP; the caller decides which queue moves next, which task runs,
finishes or fails, and when workers die. Each worker shell is mimicked closely
enough that every event sequence is one a real cluster could produce:

* tasks run from ``pop_ready`` (or inline through ``helpable``), submit
  children through the worker's own client (claims), release their children's
  futures when they return (before ``task-finished``), and may keep some
  children alive inside their result (``inner``) until that value is dropped;
* fetches complete from a live peer that holds the value, or fail;
* a dead worker's unsent and undelivered messages are lost.

``validate()`` checks every state machine; ``drain()`` releases everything and
runs the cluster to quiescence so leaks can be asserted.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from tasknest.protocol import messages as m
from tasknest.scheduler.state import SchedulerState
from tasknest.worker.state import WorkerState


@dataclass
class Running:
    key: str
    parent: str | None = None            # the task that runs this one inline
    children: list[str] = field(default_factory=list)   # futures this task holds
    seceded: bool = False


class SimWorker:
    def __init__(self, wid: str, n: int) -> None:
        self.id = wid
        self.address = f"tcp://127.0.0.1:{9000 + n}"
        self.state = WorkerState(self.address)
        self.inbox: deque[m.Message] = deque()
        self.fetches: list[tuple[str, list[str]]] = []
        self.running: dict[str, Running] = {}
        self.refs: Counter[str] = Counter()          # the in-task client's futures
        self.data: set[str] = set()                  # values the shell holds
        self.inner: dict[str, list[str]] = {}        # value -> futures inside it


class SimClient:
    def __init__(self, cid: str) -> None:
        self.id = cid
        self.refs: Counter[str] = Counter()
        self.pending_scatter: dict[int, list[str]] = {}
        self.rid = 0
        self.events: list[m.Message] = []


class Cluster:
    def __init__(self, allowed_failures: int = 2) -> None:
        self.s = SchedulerState(allowed_failures=allowed_failures)
        self.workers: dict[str, SimWorker] = {}
        self.clients: dict[str, SimClient] = {}
        self.to_sched: dict[str, deque[m.Message]] = {}
        self.n = 0
        self.seq = 0
        self.log: list[str] = []

    # -- plumbing ------------------------------------------------------------------------
    def _route(self, actions: list) -> None:
        for target, msg in actions:
            w = self.workers.get(target)
            if w is not None:
                w.inbox.append(msg)
                continue
            c = self.clients.get(target)
            if c is not None:
                self._client_receives(c, msg)
                continue
            assert target[0] in "cw", f"message to a non-connection {target}: {msg}"

    def _client_receives(self, c: SimClient, msg: m.Message) -> None:
        c.events.append(msg)
        if msg.op == "reply" and msg.rid in c.pending_scatter:  # type: ignore[attr-defined]
            c.pending_scatter.pop(msg.rid)  # type: ignore[attr-defined]

    def _apply(self, w: SimWorker, actions: list) -> None:
        for a in actions:
            if a[0] == "send":
                self.to_sched[w.id].append(a[1])
            elif a[0] == "fetch":
                w.fetches.append((a[1], list(a[2])))
            elif a[0] == "drop":
                self._drop_value(w, a[1])

    def _drop_value(self, w: SimWorker, key: str) -> None:
        w.data.discard(key)
        for k in w.inner.pop(key, []):
            self._worker_release(w, k)

    def validate(self) -> None:
        self.s.validate()
        for w in self.workers.values():
            w.state.validate()

    # -- connections ---------------------------------------------------------------------
    def add_client(self) -> str:
        self.n += 1
        cid = f"c-{self.n}"
        self.clients[cid] = SimClient(cid)
        self.to_sched[cid] = deque()
        self._route(self.s.add_client(cid))
        return cid

    def remove_client(self, cid: str) -> None:
        self.log.append(f"remove_client {cid}")
        del self.clients[cid]
        # what the client sent before it went still arrives, then the close
        while self.to_sched[cid]:
            self._route(self.s.handle(cid, self.to_sched[cid].popleft()))
        del self.to_sched[cid]
        self._route(self.s.remove_client(cid))

    def add_worker(self) -> str:
        self.n += 1
        wid = f"w-{self.n}"
        self.log.append(f"add_worker {wid}")
        w = self.workers[wid] = SimWorker(wid, self.n)
        self.to_sched[wid] = deque()
        self._route(self.s.add_worker(wid, w.address, wid, 1, self.n, 0, [], 0.0))
        return wid

    def kill_worker(self, wid: str) -> None:
        self.log.append(f"kill_worker {wid}")
        del self.workers[wid]
        del self.to_sched[wid]
        self._route(self.s.remove_worker(wid, "killed in a test"))

    # -- clients -------------------------------------------------------------------------
    def submit(self, cid: str, key: str, deps: list[str], retries: int = 0) -> None:
        self.log.append(f"submit {cid} {key} deps={deps} retries={retries}")
        c = self.clients[cid]
        c.refs[key] += 1
        if c.refs[key] == 1:
            self.seq += 1
            self.to_sched[cid].append(m.Submit(key, 1, b"", deps, [0, 0, self.seq], retries, None))

    def release(self, cid: str, key: str) -> None:
        self.log.append(f"release {cid} {key}")
        c = self.clients[cid]
        c.refs[key] -= 1
        if not c.refs[key]:
            del c.refs[key]
            self.to_sched[cid].append(m.Release([key]))

    def cancel(self, cid: str, key: str) -> None:
        self.log.append(f"cancel {cid} {key}")
        self.to_sched[cid].append(m.Cancel([key]))

    def fire_and_forget(self, cid: str, key: str) -> None:
        self.log.append(f"fire_and_forget {cid} {key}")
        self.to_sched[cid].append(m.FireAndForget([key]))
        self.release(cid, key)

    def scatter(self, cid: str, keys: list[str], broadcast: bool) -> None:
        self.log.append(f"scatter {cid} {keys} broadcast={broadcast}")
        c = self.clients[cid]
        c.rid += 1
        for k in keys:
            c.refs[k] += 1
        c.pending_scatter[c.rid] = keys
        self.to_sched[cid].append(m.Scatter(c.rid, keys, [[b"x"] for _ in keys], broadcast,
                                            None))

    def releasable(self, cid: str) -> list[str]:
        """Keys a client may drop now (a scatter's futures only once it returned)."""
        c = self.clients[cid]
        blocked = {k for keys in c.pending_scatter.values() for k in keys}
        return sorted(k for k in c.refs if k not in blocked)

    # -- delivery ------------------------------------------------------------------------
    def deliver_to_scheduler(self, source: str) -> None:
        msg = self.to_sched[source].popleft()
        self.log.append(f"sched <- {source}: {msg!r}")
        self._route(self.s.handle(source, msg))

    def deliver_to_worker(self, wid: str) -> None:
        w = self.workers[wid]
        msg = w.inbox.popleft()
        self.log.append(f"{wid} <- {msg!r}")
        st = w.state
        op = msg.op
        if op == "compute":
            out = st.compute(msg.key, msg.fid, msg.args, msg.deps, msg.priority,  # type: ignore
                             msg.retries)  # type: ignore[attr-defined]
        elif op == "free":
            out = st.free(msg.keys)  # type: ignore[attr-defined]
        elif op == "steal":
            out = st.steal(msg.key)  # type: ignore[attr-defined]
        elif op == "claim-rejected":
            out = st.claim_rejected(msg.key)  # type: ignore[attr-defined]
        elif op == "key-memory":
            out = st.key_memory(msg.key, msg.who_has)  # type: ignore[attr-defined]
        elif op == "key-erred":
            out = st.key_erred(msg.key, msg.exception, msg.traceback, msg.kind)  # type: ignore
        elif op == "put-data":
            keys = list(msg.keys)  # type: ignore[attr-defined]
            w.data.update(keys)
            out = st.put_data(keys, [1] * len(keys))
            out.append(("send", m.PutDataDone(msg.rid, keys, [1] * len(keys))))  # type: ignore
        else:
            out = []
        self._apply(w, out)

    def complete_fetch(self, wid: str, i: int, source: int) -> None:
        w = self.workers[wid]
        key, addrs = w.fetches.pop(i)
        addr = addrs[source % len(addrs)]
        peer = next((p for p in self.workers.values() if p.address == addr), None)
        ok = peer is not None and key in peer.data and key in peer.state.tasks \
            and peer.state.tasks[key].state == "memory"
        self.log.append(f"{wid} fetch {key} from {addr}: {'ok' if ok else 'failed'}")
        if ok:
            t = w.state.tasks.get(key)
            if t is not None and t.state == "fetching":
                w.data.add(key)
            self._apply(w, w.state.fetched(key, 1))
        else:
            self._apply(w, w.state.fetch_failed(key, addr))

    # -- tasks on workers ----------------------------------------------------------------
    def start_task(self, wid: str) -> str | None:
        w = self.workers[wid]
        t = w.state.pop_ready()
        if t is None:
            return None
        self.log.append(f"{wid} starts {t.key}")
        w.running[t.key] = Running(t.key)
        return t.key

    def help(self, wid: str, key: str) -> str | None:
        """The running task waits on its children: run a ready one inline."""
        w = self.workers[wid]
        r = w.running[key]
        t = w.state.helpable(list(r.children))
        if t is None:
            return None
        self.log.append(f"{wid} {key} runs {t.key} inline")
        w.running[t.key] = Running(t.key, parent=key)
        return t.key

    def claim(self, wid: str, key: str, child: str, deps: tuple[str, ...] = ()) -> None:
        """Task ``key`` on ``wid`` submits ``child`` (as WorkerClient._submit_key does)."""
        w = self.workers[wid]
        self.log.append(f"{wid} {key} submits {child} deps={deps}")
        w.running[key].children.append(child)
        w.refs[child] += 1
        if w.refs[child] > 1:
            return
        t = w.state.tasks.get(child)
        if t is not None and t.state not in ("erred", "cancelled"):
            self.to_sched[wid].append(m.Want([child]))
            return
        self.seq += 1
        self._apply(w, w.state.claim(child, 1, b"", list(deps), [0, 1, self.seq], 0, {}))

    def secede(self, wid: str, key: str) -> None:
        w = self.workers[wid]
        self.log.append(f"{wid} {key} secedes")
        w.running[key].seceded = True
        self.to_sched[wid].append(m.Secede(key))

    def rejoin(self, wid: str, key: str) -> None:
        w = self.workers[wid]
        self.log.append(f"{wid} {key} rejoins")
        w.running[key].seceded = False
        self.to_sched[wid].append(m.Rejoin(key))

    def finishable(self, wid: str) -> list[str]:
        """Running tasks with no inline child on top of them (the top of each stack)."""
        w = self.workers[wid]
        parents = {r.parent for r in w.running.values()}
        return sorted(k for k in w.running if k not in parents)

    def _worker_release(self, w: SimWorker, key: str) -> None:
        w.refs[key] -= 1
        if not w.refs[key]:
            del w.refs[key]
            self.to_sched[w.id].append(m.Release([key]))

    def finish(self, wid: str, key: str, n_inner: int = 0, rejoin: bool = True) -> None:
        w = self.workers[wid]
        r = w.running.pop(key)
        inner = list(dict.fromkeys(r.children))[:n_inner]
        self.log.append(f"{wid} finishes {key} inner={inner}")
        if r.seceded and rejoin:
            self.to_sched[wid].append(m.Rejoin(key))
        kept = list(r.children)
        for k in inner:
            kept.remove(k)
        for k in kept:                           # the task's locals die as it returns
            self._worker_release(w, k)
        w.data.add(key)
        w.inner[key] = inner
        self._apply(w, w.state.finished(key, 1, "int", None, inner))

    def fail(self, wid: str, key: str, kind: str = "exception") -> None:
        w = self.workers[wid]
        r = w.running.pop(key)
        self.log.append(f"{wid} fails {key} ({kind})")
        for k in r.children:
            self._worker_release(w, k)
        self._apply(w, w.state.erred(key, [b"e"], "Traceback", kind))

    def idle(self, wid: str) -> None:
        w = self.workers[wid]
        if len([r for r in w.running.values() if not r.seceded]) == 0:
            self._apply(w, w.state.idle(True))

    # -- quiescence ----------------------------------------------------------------------
    def step_all(self) -> bool:
        """One round of everything that can move without a new decision."""
        moved = False
        for source in list(self.to_sched):
            while self.to_sched.get(source):
                self.deliver_to_scheduler(source)
                moved = True
        for wid in list(self.workers):
            w = self.workers[wid]
            while w.inbox:
                self.deliver_to_worker(wid)
                moved = True
            while w.fetches:
                self.complete_fetch(wid, 0, 0)
                moved = True
            for key in self.finishable(wid):
                self.finish(wid, key)
                moved = True
            if self.start_task(wid) is not None:
                moved = True
            self.idle(wid)
        self.validate()
        return moved

    def drain(self, release: bool = True, max_rounds: int = 500) -> None:
        if not self.workers:
            self.add_worker()
        for _ in range(max_rounds):
            if release:
                for c in self.clients.values():
                    for k in self.releasable(c.id):
                        while c.refs.get(k):
                            self.release(c.id, k)
            if not self.step_all() and not any(c.pending_scatter for c in self.clients.values()):
                return
        pending = {c.id: c.pending_scatter for c in self.clients.values() if c.pending_scatter}
        raise AssertionError(f"the cluster did not settle: scatters waiting {pending}, "
                             f"tasks {self.s.tasks}")

    def assert_clean(self) -> None:
        s = self.s
        assert not s.tasks, f"task records remain: {s.tasks}"
        for wid, ws in s.workers.items():
            assert not ws.has_what, f"{wid} holds {ws.has_what}"
            assert not ws.processing, f"{wid} processes {ws.processing}"
            assert ws.seceded == 0, (wid, ws.seceded)
        for cid, keys in s.clients.items():
            assert not keys, (cid, keys)
        for wid, w in self.workers.items():
            assert not w.state.tasks, f"{wid} keeps {w.state.snapshot()}"
            assert not w.data, f"{wid} keeps values {w.data}"
            assert not w.refs, f"{wid} holds futures {w.refs}"


# == random plausible histories =============================================================
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings, strategies as st  # noqa: E402
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant,  # noqa: E402
                                 precondition, rule)

PURE_KEYS = [f"pure-{i}" for i in range(4)]     # shared by clients and claims, no deps


class ClusterMachine(RuleBasedStateMachine):
    """Clients, workers and their tasks move in any order a real cluster allows."""

    def __init__(self) -> None:
        super().__init__()
        self.c = Cluster(allowed_failures=2)
        self.n = 0

    def _fresh(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n}"

    @initialize()
    def start(self) -> None:
        self.c.add_client()
        self.c.add_worker()
        self.c.add_worker()

    # -- connections ---------------------------------------------------------------------
    @precondition(lambda self: len(self.c.clients) < 3)
    @rule()
    def add_client(self) -> None:
        self.c.add_client()

    @precondition(lambda self: len(self.c.clients) > 1)
    @rule(data=st.data())
    def remove_client(self, data: st.DataObject) -> None:
        self.c.remove_client(data.draw(st.sampled_from(sorted(self.c.clients))))

    @precondition(lambda self: len(self.c.workers) < 4)
    @rule()
    def add_worker(self) -> None:
        self.c.add_worker()

    @precondition(lambda self: self.c.workers)
    @rule(data=st.data())
    def kill_worker(self, data: st.DataObject) -> None:
        self.c.kill_worker(data.draw(st.sampled_from(sorted(self.c.workers))))

    # -- clients -------------------------------------------------------------------------
    def _client(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(sorted(self.c.clients)))

    @rule(data=st.data(), pure=st.booleans(), retries=st.integers(0, 1))
    def submit(self, data: st.DataObject, pure: bool, retries: int) -> None:
        cid = self._client(data)
        if pure:
            key, deps = data.draw(st.sampled_from(PURE_KEYS)), []
        else:
            key = self._fresh("t")
            held = sorted(self.c.clients[cid].refs)
            deps = data.draw(st.lists(st.sampled_from(held), max_size=2, unique=True)) \
                if held else []
        self.c.submit(cid, key, deps, retries)

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        cid = self._client(data)
        keys = self.c.releasable(cid)
        if keys:
            self.c.release(cid, data.draw(st.sampled_from(keys)))

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        cid = self._client(data)
        keys = sorted(self.c.clients[cid].refs)
        if keys:
            self.c.cancel(cid, data.draw(st.sampled_from(keys)))

    @rule(data=st.data())
    def fire_and_forget(self, data: st.DataObject) -> None:
        cid = self._client(data)
        keys = self.c.releasable(cid)
        if keys:
            self.c.fire_and_forget(cid, data.draw(st.sampled_from(keys)))

    @precondition(lambda self: self.c.workers)
    @rule(data=st.data(), n=st.integers(1, 2), broadcast=st.booleans())
    def scatter(self, data: st.DataObject, n: int, broadcast: bool) -> None:
        self.c.scatter(self._client(data), [self._fresh("data") for _ in range(n)], broadcast)

    # -- delivery ------------------------------------------------------------------------
    @rule(data=st.data())
    def deliver_to_scheduler(self, data: st.DataObject) -> None:
        sources = sorted(s for s, q in self.c.to_sched.items() if q)
        if sources:
            self.c.deliver_to_scheduler(data.draw(st.sampled_from(sources)))

    @rule(data=st.data())
    def deliver_to_worker(self, data: st.DataObject) -> None:
        wids = sorted(w for w, sw in self.c.workers.items() if sw.inbox)
        if wids:
            self.c.deliver_to_worker(data.draw(st.sampled_from(wids)))

    @rule(data=st.data(), source=st.integers(0, 3))
    def complete_fetch(self, data: st.DataObject, source: int) -> None:
        wids = sorted(w for w, sw in self.c.workers.items() if sw.fetches)
        if wids:
            wid = data.draw(st.sampled_from(wids))
            i = data.draw(st.integers(0, len(self.c.workers[wid].fetches) - 1))
            self.c.complete_fetch(wid, i, source)

    # -- tasks ---------------------------------------------------------------------------
    def _worker(self, data: st.DataObject) -> str | None:
        return data.draw(st.sampled_from(sorted(self.c.workers))) if self.c.workers else None

    def _running(self, data: st.DataObject, top: bool = False) -> tuple[str, str] | None:
        pairs = sorted((wid, k) for wid, w in self.c.workers.items()
                       for k in (self.c.finishable(wid) if top else w.running))
        return data.draw(st.sampled_from(pairs)) if pairs else None

    @rule(data=st.data())
    def start_task(self, data: st.DataObject) -> None:
        wid = self._worker(data)
        if wid is not None:
            self.c.start_task(wid)

    @rule(data=st.data())
    def help(self, data: st.DataObject) -> None:
        pair = self._running(data, top=True)
        if pair is not None:
            self.c.help(*pair)

    @rule(data=st.data(), pure=st.booleans())
    def claim(self, data: st.DataObject, pure: bool) -> None:
        pair = self._running(data)
        if pair is None:
            return
        wid, key = pair
        if pure:
            child, deps = data.draw(st.sampled_from(PURE_KEYS)), []
        else:
            child = self._fresh("k")
            held = sorted(set(self.c.workers[wid].running[key].children))
            deps = data.draw(st.lists(st.sampled_from(held), max_size=2, unique=True)) \
                if held else []
        self.c.claim(wid, key, child, tuple(deps))

    @rule(data=st.data())
    def secede_or_rejoin(self, data: st.DataObject) -> None:
        pair = self._running(data)
        if pair is None:
            return
        wid, key = pair
        r = self.c.workers[wid].running[key]
        if r.parent is not None:
            return                                  # inline runs borrow their parent's thread
        (self.c.rejoin if r.seceded else self.c.secede)(wid, key)

    @rule(data=st.data(), n_inner=st.integers(0, 2), rejoin=st.booleans())
    def finish(self, data: st.DataObject, n_inner: int, rejoin: bool) -> None:
        pair = self._running(data, top=True)
        if pair is not None:
            self.c.finish(*pair, n_inner=n_inner, rejoin=rejoin)

    @rule(data=st.data(), kind=st.sampled_from(["exception", "serialization"]))
    def fail(self, data: st.DataObject, kind: str) -> None:
        pair = self._running(data, top=True)
        if pair is not None:
            self.c.fail(*pair, kind=kind)

    @rule(data=st.data())
    def idle(self, data: st.DataObject) -> None:
        wid = self._worker(data)
        if wid is not None:
            self.c.idle(wid)

    # -- checks --------------------------------------------------------------------------
    @invariant()
    def valid(self) -> None:
        self.c.validate()

    def teardown(self) -> None:
        self.c.drain()
        self.c.assert_clean()


ClusterMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_random_cluster_histories = pytest.mark.timeout(120)(ClusterMachine.TestCase)
