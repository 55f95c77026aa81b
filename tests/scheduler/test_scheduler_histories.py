"""SchedulerState in whole histories: random plausible ones of a socket-free cluster
(``Cluster``, in sim.py) driven by hypothesis, and the nested Fibonacci tree with
random interleavings and worker deaths, with ``validate()`` after every event.
"""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from sim import Cluster

pytestmark = pytest.mark.timeout(60)


# == random plausible histories =============================================================

PURE_KEYS = [f"pure-{i}" for i in range(4)]     # shared by clients and claims, no deps


class ClusterMachine(RuleBasedStateMachine):
    """Clients, workers and their tasks move in any order a real cluster allows."""

    def __init__(self) -> None:
        super().__init__()
        self.c = Cluster(allowed_failures=2)
        self.c.pure.update(PURE_KEYS)
        self.n = 0

    def _fresh(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n}"

    @initialize()
    def start(self) -> None:
        self.c.add_client()
        self.c.add_worker()
        self.c.add_worker()

    # Hypothesis picks rules evenly, so each rule below draws a sub-action from a
    # list whose repetitions are its weights: task work dominates, deaths are rare.

    # -- connections ---------------------------------------------------------------------
    @rule(data=st.data(), what=st.sampled_from(["add_client", "remove_client", "add_worker",
                                                 "kill_worker"]))
    def connection(self, data: st.DataObject, what: str) -> None:
        c = self.c
        if what == "add_client" and len(c.clients) < 3:
            c.add_client()
        elif what == "remove_client" and len(c.clients) > 1:
            c.remove_client(data.draw(st.sampled_from(sorted(c.clients))),
                            data.draw(st.booleans()))
        elif what == "add_worker" and len(c.workers) < 4:
            c.add_worker()
        elif what == "kill_worker" and c.workers and data.draw(st.booleans()):
            c.kill_worker(data.draw(st.sampled_from(sorted(c.workers))),
                          data.draw(st.integers(0, 3)))

    # -- clients -------------------------------------------------------------------------
    @rule(data=st.data(), what=st.sampled_from(["submit"] * 4 + ["release"] * 3 + ["place"] * 3
                                               + ["cancel", "fire_and_forget", "scatter", "want",
                                                  "break_lane", "query", "coord", "coord"]))
    def client(self, data: st.DataObject, what: str) -> None:
        c = self.c
        cid = data.draw(st.sampled_from(sorted(c.clients)))
        if what == "place":
            if c.workers:
                key = data.draw(st.sampled_from(PURE_KEYS)) if data.draw(st.booleans()) \
                    else self._fresh("p")
                c.place(cid, data.draw(st.sampled_from(sorted(c.workers))), key)
        elif what == "break_lane":
            lanes = sorted(lane for lane in c.lanes if lane[0] == cid)
            if lanes:
                c.break_lane(*data.draw(st.sampled_from(lanes)))
        elif what == "query":
            c.query(cid, data.draw(st.sampled_from(["who_has", "has_what", "workers"])))
        elif what == "coord":
            held = c.releasable(cid)
            keys = data.draw(st.lists(st.sampled_from(held), max_size=2, unique=True)) \
                if held else []
            name = data.draw(st.sampled_from(["x", "y"]))
            action = data.draw(st.sampled_from(["queue put", "queue get", "variable set",
                                                "variable get", "variable delete",
                                                "semaphore acquire", "semaphore release",
                                                "event wait", "event set", "event clear"]))
            kind, act = action.split()
            lease = data.draw(st.sampled_from(["L1", "L2", "L3"]))
            c.coord(cid, kind, name, act, lease if kind == "semaphore" else "",
                    keys if act in ("put", "set") else [], 2 if kind == "semaphore" else None)
        elif what == "submit":
            if data.draw(st.booleans()):
                key, deps = data.draw(st.sampled_from(PURE_KEYS)), []
            else:
                key = self._fresh("t")
                held = c.releasable(cid)        # a scatter's futures exist once it returned
                deps = data.draw(st.lists(st.sampled_from(held), max_size=2, unique=True)) \
                    if held else []
            c.submit(cid, key, deps, data.draw(st.integers(0, 1)))
        elif what == "scatter":
            if c.workers:
                c.scatter(cid, [self._fresh("data") for _ in range(data.draw(st.integers(1, 2)))],
                          data.draw(st.booleans()))
        elif what == "want":
            others = sorted({k for o in c.clients.values() if o.id != cid
                             for k in c.releasable(o.id)})
            if others:
                c.want(cid, data.draw(st.sampled_from(others)))
        else:
            keys = c.releasable(cid) if what != "cancel" else sorted(c.clients[cid].refs)
            if keys:
                getattr(c, what)(cid, data.draw(st.sampled_from(keys)))

    # -- delivery ------------------------------------------------------------------------
    @rule(data=st.data())
    def deliver_to_scheduler(self, data: st.DataObject) -> None:
        sources = sorted(s for s, q in self.c.to_sched.items() if q)
        if sources:
            self.c.deliver_to_scheduler(data.draw(st.sampled_from(sources)))

    @rule(data=st.data())
    def deliver_lane(self, data: st.DataObject) -> None:
        lanes = sorted(lane for lane, q in self.c.lanes.items() if q)
        if lanes:
            self.c.deliver_lane(*data.draw(st.sampled_from(lanes)))

    @rule(data=st.data())
    def deliver_to_worker(self, data: st.DataObject) -> None:
        wids = sorted(w for w, sw in self.c.workers.items() if sw.inbox)
        if wids:
            self.c.deliver_to_worker(data.draw(st.sampled_from(wids)))

    @rule()
    def deliver_everything(self) -> None:
        """Every queue empties (in a fixed order): the system catches up."""
        c = self.c
        while any(c.to_sched.values()) or any(w.inbox for w in c.workers.values()) \
                or any(c.lanes.values()):
            for lane in sorted(c.lanes):
                while c.lanes[lane]:
                    c.deliver_lane(*lane)
            for source in sorted(c.to_sched):
                while c.to_sched[source]:
                    c.deliver_to_scheduler(source)
            for wid in sorted(c.workers):
                while c.workers[wid].inbox:
                    c.deliver_to_worker(wid)

    # -- tasks ---------------------------------------------------------------------------
    def _running(self, data: st.DataObject, top: bool = False) -> tuple[str, str] | None:
        pairs = sorted((wid, k) for wid, w in self.c.workers.items()
                       for k in (self.c.finishable(wid) if top else w.running))
        return data.draw(st.sampled_from(pairs)) if pairs else None

    @rule(data=st.data(), what=st.sampled_from(
        ["start"] * 3 + ["claim"] * 4 + ["help"] * 2 + ["finish"] * 3 + [
            "secede_or_rejoin", "fail", "idle", "fetch", "scatter_here", "pause"]))
    def task(self, data: st.DataObject, what: str) -> None:
        c = self.c
        if not c.workers:
            return
        if what in ("start", "idle", "pause"):
            wid = data.draw(st.sampled_from(sorted(c.workers)))
            (c.start_task if what == "start" else c.idle if what == "idle"
             else c.toggle_pause)(wid)
        elif what == "fetch":
            wids = sorted(w for w, sw in c.workers.items() if sw.fetches)
            if wids:
                wid = data.draw(st.sampled_from(wids))
                i = data.draw(st.integers(0, len(c.workers[wid].fetches) - 1))
                c.complete_fetch(wid, i, data.draw(st.integers(0, 3)))
        elif what == "claim":
            pair = self._running(data)
            if pair is None:
                return
            wid, key = pair
            if data.draw(st.booleans()):
                # a pure call never (even indirectly) calls itself: pure-i only calls pure-j,
                # j > i, from anywhere below it (else futures to each other in their results
                # hold both forever: a cycle that, like any, no reference count frees)
                lowest = max((PURE_KEYS.index(k) + 1 for k in c.ancestry(wid, key)
                              if k in PURE_KEYS), default=0)
                if lowest >= len(PURE_KEYS):
                    return
                child, deps = data.draw(st.sampled_from(PURE_KEYS[lowest:])), []
            else:
                child = self._fresh("k")
                held = sorted(set(c.workers[wid].running[key].children))
                deps = data.draw(st.lists(st.sampled_from(held), max_size=2, unique=True)) \
                    if held else []
            c.claim(wid, key, child, tuple(deps))
        elif what == "scatter_here":
            pair = self._running(data)
            if pair is not None:
                c.scatter_here(*pair, self._fresh("local"))
        elif what == "secede_or_rejoin":
            pair = self._running(data)
            if pair is not None:
                wid, key = pair
                r = c.workers[wid].running[key]
                if r.parent is None:              # inline runs borrow their parent's thread
                    (c.rejoin if r.seceded else c.secede)(wid, key)
        else:
            pair = self._running(data, top=True)
            if pair is None:
                return
            if what == "help":
                c.help(*pair)
            elif what == "finish":
                c.finish(*pair, n_inner=data.draw(st.integers(0, 2)),
                         rejoin=data.draw(st.booleans()))
            else:
                c.fail(*pair, kind=data.draw(st.sampled_from(["exception", "serialization"])))

    @rule(data=st.data(), what=st.sampled_from(["start", "claim", "claim", "help", "finish"]))
    def nested(self, data: st.DataObject, what: str) -> None:
        """More of the tasks-launching-tasks moves (a second rule doubles their weight)."""
        self.task(data, what)

    # -- checks --------------------------------------------------------------------------
    @invariant()
    def valid(self) -> None:
        self.c.validate()

    def teardown(self) -> None:
        try:
            self.c.drain(release=False)
            self.c.assert_consistent()
            self.c.drain()
            self.c.assert_clean()
        except AssertionError as exc:       # what happened, for the shrunk example
            raise AssertionError(f"{exc}\n" + "\n".join(self.c.log[-80:])) from None


ClusterMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
# ~10 s alone; the timeout leaves room for a loaded machine
test_random_cluster_histories = pytest.mark.timeout(300)(ClusterMachine.TestCase)


# == the nested Fibonacci tree, with random interleavings ================================
def run_fib(seed: int, n: int = 6, n_workers: int = 2, kill_rate: float = 0.0,
            pure: bool = False) -> Cluster:
    """fib(n) with pure=False: each task claims fib(n-1) and fib(n-2), gathers them
    (helping inline or waiting), releases them and returns. Every choice of what
    moves next is drawn from ``seed``. ``pure``: as the seed writes it, a call's key
    is its argument, so the tasks of two workers claim the same keys (confirmed)."""
    rng = random.Random(seed)
    c = Cluster()
    cid = c.add_client()
    for _ in range(n_workers):
        c.add_worker()
    root = f"fib({n})" if pure else "fib-root"
    arg = {root: n}
    if pure:
        c.pure.update(f"fib({i})" for i in range(n))
    spawned: set[str] = set()
    c.submit(cid, root, [])
    for _ in range(100_000):
        client = c.clients[cid]
        if root in client.refs and any(
                getattr(e, "key", None) == root for e in client.events):
            c.release(cid, root)
        moves: list[tuple] = [("sched", s) for s, q in c.to_sched.items() if q]
        for wid, w in c.workers.items():
            if w.inbox:
                moves.append(("worker", wid))
            if w.fetches:
                moves.append(("fetch", wid))
            if w.state.has_ready():
                moves.append(("start", wid))
            for key in c.finishable(wid):
                r = w.running[key]
                if arg[key] >= 2 and key not in spawned:
                    moves.append(("spawn", wid, key))
                elif all(ch in w.settled for ch in r.children):
                    moves.append(("finish", wid, key))
                else:
                    moves.append(("help", wid, key))
        if not moves and root not in client.refs:
            break
        if kill_rate and rng.random() < kill_rate:
            c.kill_worker(rng.choice(sorted(c.workers)))
            c.add_worker()
            continue
        move = rng.choice(moves)
        if rng.random() < 0.1:
            c.idle(rng.choice(sorted(c.workers)))
        kind, wid = move[0], move[1]
        if kind == "sched":
            c.deliver_to_scheduler(wid)
        elif kind == "worker":
            c.deliver_to_worker(wid)
        elif kind == "fetch":
            c.complete_fetch(wid, 0, rng.randrange(4))
        elif kind == "start":
            c.start_task(wid)
        elif kind == "spawn":
            key = move[2]
            spawned.add(key)
            w = c.workers[wid]
            if w.running[key].parent is None and rng.random() < 0.5:
                c.secede(wid, key)
            for d in (1, 2):
                child = f"fib({arg[key] - d})" if pure else f"fib-{len(arg)}"
                arg[child] = arg[key] - d
                c.claim(wid, key, child)
        elif kind == "help":
            c.help(wid, move[2])
        else:
            c.finish(wid, move[2])
        c.validate()
    else:
        raise AssertionError("fib did not finish")
    return c


@pytest.mark.timeout(120)
def test_nested_fib_leaves_nothing_behind():
    """Random delivery orders, steals, inline help and secedes: all clean at the end."""
    for seed in range(150):
        c = run_fib(seed, n=5 + seed % 3, n_workers=2 + seed % 2)
        try:
            c.drain()
            c.assert_clean()
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: {exc}\n" + "\n".join(c.log[-60:])) from None


@pytest.mark.timeout(120)
def test_nested_fib_with_pure_keys_runs_each_call_once():
    """Workers steal parts of the tree and claim the same pure keys at once: each
    call still runs once, whatever the order the messages move in. (Once: while the
    scheduler keeps its record. A result every holder released is forgotten; a task
    that asks for the call after that, a stolen sibling that started late, runs it
    anew, as it would any new call.)"""
    for seed in range(150):
        n = 6 + seed % 3
        c = run_fib(seed, n=n, n_workers=2 + seed % 2, pure=True)
        try:
            assert {k for k, _ in c.runs} == {f"fib({i})" for i in range(n + 1)}, c.runs
            assert set(c.runs.values()) == {1}, c.runs
            c.drain()
            c.assert_clean()
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: {exc}\n" + "\n".join(c.log[-60:])) from None


@pytest.mark.timeout(120)
def test_nested_fib_with_worker_deaths_leaves_nothing_behind():
    for seed in range(100):
        c = run_fib(seed, n=5, n_workers=3, kill_rate=0.01)
        try:
            c.drain()
            c.assert_clean()
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: {exc}\n" + "\n".join(c.log[-60:])) from None
