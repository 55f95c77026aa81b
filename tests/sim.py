"""A whole tasknest cluster without sockets, threads or processes, for the state-machine tests.

The cluster is one SchedulerState, real WorkerStates and fake clients. Messages
travel through FIFO queues, one per connection and direction, as they would over
TCP; the caller decides which queue moves next, which task runs, finishes or
fails, and when workers die. Each worker shell is mimicked closely enough that
every event sequence is one a real cluster could produce:

* tasks run from ``pop_ready`` (or inline through ``helpable``), submit
  children through the worker's own client (claims), release their children's
  futures when they return (before ``task-finished``), and may keep some
  children alive inside their result (``inner``) until that value is dropped;
* fetches complete from a live peer that holds the value, or fail;
* a dead worker's undelivered messages are lost, but for a few it sent last;
* clients place tasks straight on workers over a lane of their own (its FIFO
  queue), tell the scheduler after (``placed``, with the result's size when the
  result came first), and remind the scheduler when a lane breaks;
* queries wait for a sync with every worker;
* clients use the coordination primitives (queues and variables holding their
  futures, semaphores, events); a value's futures must be held for its receiver
  before the reply leaves, and what is left in them is taken out before draining.

``validate()`` checks every state machine; ``drain()`` releases everything and
runs the cluster to quiescence so leaks can be asserted.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from tasknest.protocol import messages as m
from tasknest.scheduler.state import SchedulerState
from tasknest.worker.actions import Action, Done, Drop, Fetch, Send, Tell
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
        self.settled: set[str] = set()               # futures of the in-task client now done
        self.recipes: dict[str, list[str]] = {}      # keys it asked for by want: their deps
        self.paused = False                          # memory high: starts no new task


class SimClient:
    def __init__(self, cid: str) -> None:
        self.id = cid
        self.refs: Counter[str] = Counter()
        self.pending_scatter: dict[int, list[str]] = {}
        self.rid = 0
        self.events: list[m.Message] = []
        self.placed: dict[str, tuple[str, m.Message]] = {}   # key -> (worker, its ``placed``)
        self.queries: set[int] = set()                        # rids not answered yet


class Cluster:
    def __init__(self, allowed_failures: int = 2) -> None:
        self.s = SchedulerState(allowed_failures=allowed_failures)
        self.workers: dict[str, SimWorker] = {}
        self.clients: dict[str, SimClient] = {}
        self.to_sched: dict[str, deque[m.Message]] = {}
        self.lanes: dict[tuple[str, str], deque[m.Message]] = {}   # (client, worker) -> places
        self.spawners: dict[str, set[str]] = {}    # task -> the tasks that submitted it
        self.pure: set[str] = set()    # keys tasks may claim at once on two workers: confirmed
        self.runs: Counter[tuple[str, int]] = Counter()   # (key, life) -> times started
        self._lives: dict[str, tuple[int, object]] = {}     # pure key -> (life, its record)
        self.n = 0
        self.seq = 0
        self.log: list[str] = []

    # -- plumbing ------------------------------------------------------------------------
    def _route(self, actions: list) -> None:
        for key in self.pure:       # a key forgotten and submitted again starts a new life
            life, record = self._lives.get(key, (0, None))
            ts = self.s.tasks.get(key)
            if ts is not None and ts is not record:
                self._lives[key] = (life + 1, ts)
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
        if msg.op == "reply":
            c.pending_scatter.pop(msg.rid, None)  # type: ignore[attr-defined]
            c.queries.discard(msg.rid)  # type: ignore[attr-defined]
            value = msg.value  # type: ignore[attr-defined]
            if isinstance(value, dict) and "keys" in value:
                for key in value["keys"]:     # futures inside a value: the client holds them
                    ts = self.s.tasks.get(key)    # (held for it before the reply left)
                    assert ts is not None and c.id in ts.who_wants, (key, ts)
                    c.refs[key] += 1
                    if c.refs[key] == 1:
                        self.to_sched[c.id].append(m.Want(keys=[key]))
        elif msg.op in ("key-memory", "key-erred", "key-cancelled"):
            placed = c.placed.pop(msg.key, None)  # type: ignore[attr-defined]
            if placed is not None and msg.op == "key-memory":   # as Client._placed_done
                placed[1].type, placed[1].nbytes = msg.type, msg.nbytes  # type: ignore

    def _apply(self, w: SimWorker, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                self.to_sched[w.id].append(a.msg)
            elif isinstance(a, Tell):
                c = self.clients.get(a.client)
                if c is not None:
                    self._client_receives(c, a.msg)
            elif isinstance(a, Fetch):
                w.fetches.append((a.key, list(a.addrs)))
            elif isinstance(a, Drop):
                self._drop_value(w, a.key)
            elif isinstance(a, Done):
                t = w.state.tasks.get(a.key)
                if t is not None and t.state in ("memory", "erred"):
                    w.settled.add(a.key)

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

    def remove_client(self, cid: str, lanes_arrive: bool = True) -> None:
        self.log.append(f"remove_client {cid} lanes_arrive={lanes_arrive}")
        # what the client sent before it went still arrives (its places only perhaps:
        # written, or not yet), then the close
        for (c, wid) in [lane for lane in self.lanes if lane[0] == cid]:
            while lanes_arrive and self.lanes[(c, wid)]:
                self.deliver_lane(c, wid)
            del self.lanes[(c, wid)]
        del self.clients[cid]
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

    def kill_worker(self, wid: str, last_words: int = 0) -> None:
        """The worker dies; the first ``last_words`` messages it sent still arrive."""
        self.log.append(f"kill_worker {wid} after {last_words} more messages")
        for _ in range(min(last_words, len(self.to_sched[wid]))):
            self.deliver_to_scheduler(wid)
        for (cid, w) in [lane for lane in self.lanes if lane[1] == wid]:
            self._lane_broke(cid, w)
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
            self.to_sched[cid].append(m.Submit(key=key, func=1, args=b"", deps=deps, priority=[0, 0, self.seq], retries=retries, workers=None, resources=None, loose=False))

    def place(self, cid: str, wid: str, key: str) -> None:
        """The client places a dependency-free task straight on a worker."""
        self.log.append(f"place {cid} {key} on {wid}")
        c = self.clients[cid]
        c.refs[key] += 1
        if c.refs[key] == 1:
            self.seq += 1
            address = self.workers[wid].address
            record = m.Placed(key=key, func=1, args=b"", priority=[0, 0, self.seq], retries=0, worker=address, seq=self.seq, nbytes=-1, type="", pinned=False)
            c.placed[key] = (wid, record)
            self.to_sched[cid].append(record)
            self.lanes.setdefault((cid, wid), deque()).append(
                m.Place(key=key, func=1, args=b"", priority=[0, 0, self.seq], retries=0, seq=self.seq))

    def deliver_lane(self, cid: str, wid: str) -> None:
        msg = self.lanes[(cid, wid)].popleft()
        self.log.append(f"{wid} <- lane {cid}: {msg!r}")
        w = self.workers[wid]
        self._apply(w, w.state.placing.place(msg.key, msg.func, msg.args, msg.priority,  # type: ignore
                                     msg.retries, cid, msg.seq))  # type: ignore[attr-defined]

    def break_lane(self, cid: str, wid: str) -> None:
        """The client's connection to a worker closes (both stay): places on it are lost."""
        self.log.append(f"lane {cid} -> {wid} breaks")
        self._lane_broke(cid, wid)

    def _lane_broke(self, cid: str, wid: str) -> None:
        self.lanes.pop((cid, wid), None)
        c = self.clients.get(cid)
        if c is None:
            return
        for key, (w, _) in list(c.placed.items()):      # as Client._stream_lost
            if w == wid:
                del c.placed[key]
        self.to_sched[cid].append(m.LaneLost(worker=self.workers[wid].address))
        if c.refs:
            self.to_sched[cid].append(m.Remind(keys=sorted(c.refs)))

    def coord(self, cid: str, kind: str, name: str, action: str, holder: str = "",
              keys: list[str] | None = None, arg: object = None) -> None:
        """A coordination request (queue, variable, semaphore...); it may wait forever."""
        self.log.append(f"coord {cid} {kind} {name} {action} {holder} {keys} {arg}")
        c = self.clients[cid]
        c.rid += 1
        self.to_sched[cid].append(m.Coord(rid=c.rid, kind=kind, name=name, action=action, holder=holder, value=[b"v"], keys=keys or [], arg=arg))

    def clear_coordination(self) -> None:
        """Before draining: values still in queues and variables go to a client (or away)."""
        co = self.s.coordination
        cid = sorted(self.clients)[0]
        for name, q in list(co.queues.items()):
            if q.items:
                self.coord(cid, "queue", name, "get", arg=len(q.items))
        for name in list(co.variables):
            self.coord(cid, "variable", name, "delete")

    def query(self, cid: str, what: str) -> None:
        c = self.clients[cid]
        c.rid += 1
        c.queries.add(c.rid)
        self.to_sched[cid].append(m.Query(rid=c.rid, what=what, arg=None))

    def release(self, cid: str, key: str) -> None:
        self.log.append(f"release {cid} {key}")
        c = self.clients[cid]
        c.refs[key] -= 1
        if not c.refs[key]:
            del c.refs[key]
            c.placed.pop(key, None)
            self.to_sched[cid].append(m.Release(keys=[key]))

    def want(self, cid: str, key: str) -> None:
        """A future arrives from elsewhere (pickled across clients)."""
        self.log.append(f"want {cid} {key}")
        c = self.clients[cid]
        c.refs[key] += 1
        if c.refs[key] == 1:
            self.to_sched[cid].append(m.Want(keys=[key]))

    def cancel(self, cid: str, key: str) -> None:
        self.log.append(f"cancel {cid} {key}")
        self.to_sched[cid].append(m.Cancel(keys=[key]))

    def fire_and_forget(self, cid: str, key: str) -> None:
        self.log.append(f"fire_and_forget {cid} {key}")
        self.to_sched[cid].append(m.FireAndForget(keys=[key]))
        self.release(cid, key)

    def scatter(self, cid: str, keys: list[str], broadcast: bool) -> None:
        self.log.append(f"scatter {cid} {keys} broadcast={broadcast}")
        c = self.clients[cid]
        c.rid += 1
        for k in keys:
            c.refs[k] += 1
        c.pending_scatter[c.rid] = keys
        self.to_sched[cid].append(m.Scatter(rid=c.rid, keys=keys, values=[[b"x"] for _ in keys], broadcast=broadcast, workers=None))

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
        if op == "free":
            out = st.handle(msg)
            for key in msg.keys:  # type: ignore[attr-defined]
                out += self._claim_again(w, key)
        elif op == "unknown":
            out = self._claim_again(w, msg.key)  # type: ignore[attr-defined]
        elif op == "key-memory":
            w.recipes.pop(msg.key, None)  # type: ignore[attr-defined]
            w.settled.add(msg.key)  # type: ignore[attr-defined]
            t = st.tasks.get(msg.key)  # type: ignore[attr-defined]
            if msg.value is not None and t is not None and t.state in (  # type: ignore
                    "remote", "fetching") and t.dependents:
                # as the shell does: a small value came along, no fetch from a peer
                if t.state == "remote":
                    t.state = "fetching"
                    st.fetching.add(t.key)
                w.data.add(t.key)
                out = st.fetched(t.key, 1)
            else:
                out = st.handle(msg)
        elif op == "key-erred":
            w.recipes.pop(msg.key, None)  # type: ignore[attr-defined]
            w.settled.add(msg.key)  # type: ignore[attr-defined]
            out = st.handle(msg)
        elif op == "put-data":
            keys = list(msg.keys)  # type: ignore[attr-defined]
            w.data.update(keys)
            out = st.put_data(keys, [1] * len(keys))
            out.append(Send(m.PutDataDone(rid=msg.rid, keys=keys, nbytes=[1] * len(keys))))  # type: ignore
        elif op == "sync":
            out = [Send(m.Synced(rid=msg.rid))]  # type: ignore[attr-defined]
        elif op in WorkerState.OPS:   # compute, steal, claim answers, confirm, withdraw...
            out = st.handle(msg)
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
        if w.paused:
            return None
        t = w.state.pop_ready()
        if t is None:
            return None
        self.log.append(f"{wid} starts {t.key}")
        self.runs[t.key, self._lives.get(t.key, (0,))[0]] += 1
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
        self.runs[t.key, self._lives.get(t.key, (0,))[0]] += 1
        w.running[t.key] = Running(t.key, parent=key)
        return t.key

    def claim(self, wid: str, key: str, child: str, deps: tuple[str, ...] = ()) -> None:
        """Task ``key`` on ``wid`` submits ``child`` (as WorkerClient._submit_key does)."""
        w = self.workers[wid]
        self.log.append(f"{wid} {key} submits {child} deps={deps}")
        self.spawners.setdefault(child, set()).add(key)
        w.running[key].children.append(child)
        w.refs[child] += 1
        if w.refs[child] > 1:
            return
        w.settled.discard(child)             # a new future
        w.recipes[child] = list(deps)
        t = w.state.tasks.get(child)
        if t is not None and t.state not in ("erred", "cancelled") and t.attempt != -1:
            self.to_sched[wid].append(m.Want(keys=[child]))
            if t.state == "memory":
                w.settled.add(child)
            return
        self._claim(w, child, list(deps))

    def _claim(self, w: SimWorker, child: str, deps: list[str]) -> None:
        self._apply(w, self._claim_actions(w, child, deps))

    def _claim_actions(self, w: SimWorker, child: str, deps: list[str]) -> list:
        self.seq += 1
        return w.state.claim(child, 1, b"", deps, [0, 1, self.seq], 0, {}, child in self.pure)

    def _claim_again(self, w: SimWorker, key: str) -> list:
        """As WorkerClient._claim_again: a future still waiting on a key the scheduler
        dropped (the record here is gone, or its run cancelled) claims it anew."""
        t = w.state.tasks.get(key)
        if key in w.recipes and w.refs.get(key) and key not in w.settled and (
                t is None or t.state == "cancelled"):
            self.log.append(f"{w.id} claims {key} again")
            return self._claim_actions(w, key, w.recipes[key])
        return []

    def scatter_here(self, wid: str, key: str, data_key: str) -> None:
        """Task ``key`` scatters from inside: the data stays on its worker."""
        w = self.workers[wid]
        self.log.append(f"{wid} {key} scatters {data_key}")
        w.running[key].children.append(data_key)
        w.refs[data_key] += 1
        w.data.add(data_key)
        self._apply(w, w.state.put_data([data_key], [1]))
        self.to_sched[wid].append(m.AddKeys(keys=[data_key], nbytes=[1]))

    def secede(self, wid: str, key: str) -> None:
        w = self.workers[wid]
        self.log.append(f"{wid} {key} secedes")
        w.running[key].seceded = True
        self.to_sched[wid].append(m.Secede(key=key))

    def rejoin(self, wid: str, key: str) -> None:
        w = self.workers[wid]
        self.log.append(f"{wid} {key} rejoins")
        w.running[key].seceded = False
        self.to_sched[wid].append(m.Rejoin(key=key))

    def stack(self, wid: str, key: str) -> list[str]:
        """The task and those it runs inline for."""
        w = self.workers[wid]
        out = [key]
        while w.running[out[-1]].parent is not None:
            out.append(w.running[out[-1]].parent)  # type: ignore[arg-type]
        return out

    def ancestry(self, wid: str, key: str) -> set[str]:
        """The task, those it runs inline for, and every task that spawned one of them."""
        out: set[str] = set()
        todo = self.stack(wid, key)
        while todo:
            k = todo.pop()
            if k not in out:
                out.add(k)
                todo.extend(self.spawners.get(k, ()))
        return out

    def finishable(self, wid: str) -> list[str]:
        """Running tasks with no inline child on top of them (the top of each stack)."""
        w = self.workers[wid]
        parents = {r.parent for r in w.running.values()}
        return sorted(k for k in w.running if k not in parents)

    def _worker_release(self, w: SimWorker, key: str) -> None:
        w.refs[key] -= 1
        if not w.refs[key]:
            del w.refs[key]
            w.recipes.pop(key, None)
            self.to_sched[w.id].append(m.Release(keys=[key]))

    def finish(self, wid: str, key: str, n_inner: int = 0, rejoin: bool = True) -> None:
        w = self.workers[wid]
        r = w.running.pop(key)
        inner = list(dict.fromkeys(r.children))[:n_inner]
        self.log.append(f"{wid} finishes {key} inner={inner}")
        if r.seceded and rejoin:
            self.to_sched[wid].append(m.Rejoin(key=key))
        kept = list(r.children)
        for k in inner:
            kept.remove(k)
        for k in kept:                           # the task's locals die as it returns
            self._worker_release(w, k)
        w.data.add(key)
        w.inner[key] = inner
        value = [b"v"] if len(key) % 2 else None      # small results travel inline
        # every client is connected to every worker: results go to it directly
        self._apply(w, w.state.finished(key, 1, "int", value, inner, set(self.clients)))

    def fail(self, wid: str, key: str, kind: str = "exception") -> None:
        w = self.workers[wid]
        r = w.running.pop(key)
        self.log.append(f"{wid} fails {key} ({kind})")
        for k in r.children:
            self._worker_release(w, k)
        self._apply(w, w.state.erred(key, [b"e"], "Traceback", kind))

    def idle(self, wid: str) -> None:
        """The pool has a free slot (tasks may run: a blocked gather lends its slot)."""
        w = self.workers[wid]
        self._apply(w, w.state.idle(not w.paused))

    def toggle_pause(self, wid: str) -> None:
        w = self.workers[wid]
        w.paused = not w.paused
        self.log.append(f"{wid} {'pauses' if w.paused else 'resumes'}")
        self.to_sched[wid].append(m.Paused(paused=w.paused))

    # -- quiescence ----------------------------------------------------------------------
    def step_all(self) -> bool:
        """One round of everything that can move without a new decision."""
        moved = False
        for lane in list(self.lanes):
            while self.lanes.get(lane):
                self.deliver_lane(*lane)
                moved = True
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
        for wid, w in self.workers.items():     # memory falls again: all resume
            if w.paused:
                self.toggle_pause(wid)
        self.clear_coordination()
        for _ in range(max_rounds):
            if release:
                for c in self.clients.values():
                    for k in self.releasable(c.id):
                        while c.refs.get(k):
                            self.release(c.id, k)
            if not self.step_all() and not any(c.pending_scatter or c.queries
                                               for c in self.clients.values()):
                return
        pending = {c.id: (c.pending_scatter, c.queries) for c in self.clients.values()
                   if c.pending_scatter or c.queries}
        raise AssertionError(f"the cluster did not settle: scatters and queries waiting "
                             f"{pending}, tasks {self.s.tasks}")

    def assert_consistent(self) -> None:
        """At rest, the scheduler's picture matches what each worker holds and runs."""
        s = self.s
        for wid, w in self.workers.items():
            ws = s.workers[wid]
            owned = {k for k, t in w.state.tasks.items() if t.state == "memory" and t.owned}
            assert ws.has_what == owned, (wid, ws.has_what, owned)
            assert owned <= w.data, (wid, owned - w.data)
            assert not ws.processing, (wid, ws.processing)
        for key, ts in s.tasks.items():
            assert ts.state in ("memory", "erred", "released"), (ts, s.unrunnable)

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
            assert not w.state.placing.places and not w.state.placing.early, \
                (wid, w.state.placing.places, w.state.placing.early)
            assert not w.data, f"{wid} keeps values {w.data}"
            assert not w.refs, f"{wid} holds futures {w.refs}"
