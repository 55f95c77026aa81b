"""The Observer: what the dashboard, /metrics and the clients' output need, fed by events.

A component of SchedulerState (registers ``monitor``, hears of workers leaving),
owning bounded records that the task records do not keep:

* the task stream: a row per execution, from the workers' ``monitor`` messages;
* the spawn tree's edges (parent -> children), as the submitting worker saw them;
* the last run of recent keys (worker, start, stop), for the task page;
* failures: erred tasks, KilledWorker, lost workers;
* each worker's recent log lines and its last stats (CPU, memory, spilled keys);
* task output, routed to the client that submitted the root of the task's tree.

Every record is a ring or a capped dict: a run of a million tasks costs a bounded
amount of memory here. The task records themselves stay untouched.
"""
from __future__ import annotations

import bisect
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any, Callable

from ..protocol import messages as m

if TYPE_CHECKING:
    from .state import SchedulerState

STREAM = 20_000        # task stream rows kept
FAILURES = 1_000       # failures kept
RECENT = 100_000       # keys whose last run is remembered
EDGES = 200_000        # spawn edges kept (those of forgotten tasks go first)
LOG_LINES = 200        # log lines kept per worker
MARKS = 2_000          # transfers and spills kept (marked on the task stream)
PENDING = 3.0          # seconds output waits for its task's tree to be known
BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0)


def funcname(key: str) -> str:
    """Keys are ``<function>-<token>``: the function's name, for grouping."""
    i = key.rfind("-")
    return key[:i] if i > 0 else key


class Observer:
    def __init__(self, state: "SchedulerState", clock: Callable[[], float]) -> None:
        self.state = state
        self.clock = clock
        self.stream: deque[list] = deque(maxlen=STREAM)   # [seq, worker, thread, key, start, stop, ok]
        self.seq = 0
        self.recent: OrderedDict[str, list] = OrderedDict()   # key -> [worker, start, stop, ok]
        self.parent: dict[str, str] = {}
        self.children: dict[str, list[str]] = {}
        self.failures: deque[dict] = deque(maxlen=FAILURES)
        self.failed: set[str] = set()        # erred keys already listed
        self.logs: dict[str, deque[str]] = {}
        self.stats: dict[str, dict] = {}
        self.pending: deque[tuple[float, str, list]] = deque()   # (until, key, line)
        self.hist = [0] * (len(BUCKETS) + 1)     # task durations, seconds
        self.hist_sum = 0.0
        self.done_by_func: dict[str, list] = {}   # function -> [finished, erred]
        self.marks: deque[list] = deque(maxlen=MARKS)   # [seq, worker, kind, start, stop, peer, keys, bytes]
        self.mark_seq = 0
        self.transferred = 0                      # bytes workers fetched from peers
        state.register("monitor", self._on_monitor)
        state.components.append(self)

    # -- component interface ------------------------------------------------------------
    def worker_added(self, wid: str) -> None:
        self.logs[wid] = deque(maxlen=LOG_LINES)

    def source_gone(self, source: str) -> None:
        ws = self.state.workers.get(source)
        if ws is None:
            return
        self.logs.pop(source, None)
        self.stats.pop(source, None)
        self.failures.append({"time": self.clock(), "kind": "worker-lost", "key": "",
                              "worker": ws.address,
                              "text": f"worker {ws.name} at {ws.address} left with "
                                      f"{len(ws.processing)} tasks processing"})

    def validate(self) -> None:
        assert len(self.stream) <= STREAM and len(self.recent) <= RECENT

    # -- events ----------------------------------------------------------------------------
    def _on_monitor(self, wid: str, msg: Any) -> None:
        ws = self.state.workers.get(wid)
        if ws is None:
            return
        address = ws.address
        stream, recent, hist = self.stream, self.recent, self.hist
        for key, thread, start, stop, ok in msg.runs:
            self.seq += 1
            stream.append([self.seq, address, thread, key, start, stop, ok])
            recent[key] = [address, start, stop, ok]
            d = stop - start
            hist[bisect.bisect_left(BUCKETS, d)] += 1
            self.hist_sum += d
            counts = self.done_by_func.get(funcname(key))
            if counts is None:
                if len(self.done_by_func) >= 1000:      # (keys without a function name)
                    continue
                counts = self.done_by_func[funcname(key)] = [0, 0]
            counts[0 if ok else 1] += 1
            if not ok and key in self.failed:     # listed before its run arrived: say where
                self._failed_on(key, address, stop)
        while len(recent) > RECENT:
            recent.popitem(last=False)
        for parent, child in msg.spawns:
            if child not in self.parent:
                self.parent[child] = parent
                self.children.setdefault(parent, []).append(child)
        if len(self.parent) > EDGES:
            self.prune()
        if msg.logs:
            self.logs.setdefault(wid, deque(maxlen=LOG_LINES)).extend(msg.logs)
        self.stats[wid] = msg.stats
        for kind, start, stop, peer, nkeys, nbytes in msg.events:
            self.mark_seq += 1
            self.marks.append([self.mark_seq, address, kind, start, stop, peer, nkeys, nbytes])
            if kind == "transfer":
                self.transferred += nbytes
        now = self.clock()
        for key, stream_name, text in msg.output:
            self.pending.append((now + PENDING, key, [funcname(key), address, key,
                                                      stream_name, text]))
        if self.pending:
            self._route_output(now)

    def _route_output(self, now: float) -> None:
        """Send each line to the client that submitted the root of its task's tree; a line
        whose tree is not known yet (the edge comes from another worker) waits a little."""
        by_client: dict[str, list] = {}
        keep: deque = deque()
        for until, key, line in self.pending:
            cid = self.owner(key)
            if cid is not None:
                by_client.setdefault(cid, []).append(line)
            elif until > now:
                keep.append((until, key, line))
        self.pending = keep
        for cid, lines in by_client.items():
            self.state._emit(cid, m.Output(lines))

    def tick(self) -> None:
        """Periodically, from the shell: output that waited for its tree."""
        if self.pending:
            self._route_output(self.clock())

    QUERIES = frozenset({"worker_logs", "task_stream", "edges", "tree_progress"})

    def query(self, what: str, arg: Any) -> Any:
        workers = self.state.workers
        if what == "edges":          # {child: parent} of these keys
            return {k: self.parent[k] for k in (arg or [])[:100_000] if k in self.parent}
        if what == "tree_progress":  # [tasks, finished] in the trees under these keys
            return self.tree_progress(list(arg or []))
        if what == "worker_logs":
            return {workers[w].address: list(lines) for w, lines in self.logs.items()
                    if w in workers}
        start = arg if isinstance(arg, (int, float)) else None
        return [{"key": r[3], "worker": r[1], "thread": r[2], "start": r[4], "stop": r[5],
                 "status": "OK" if r[6] else "error", "function": funcname(r[3])}
                for r in self.stream if start is None or r[5] >= start]

    # -- reading -----------------------------------------------------------------------------
    def root(self, key: str) -> str:
        seen = 0
        parent = self.parent
        while key in parent and seen < 10_000:
            key = parent[key]
            seen += 1
        return key

    def owner(self, key: str) -> str | None:
        """The user's client that submitted the root of the key's tree, if still known."""
        tasks = self.state.tasks
        k: str | None = key
        seen = 0
        while k is not None and seen < 10_000:
            ts = tasks.get(k)
            if ts is not None:
                for cid in ts.who_wants:
                    if cid[:2] == "c-":
                        return cid
            k = self.parent.get(k)
            seen += 1
        return None

    def tree_progress(self, keys: list[str], limit: int = 200_000) -> list[int]:
        """How many tasks the trees under ``keys`` hold so far, and how many finished."""
        tasks, recent, children = self.state.tasks, self.recent, self.children
        total = done = 0
        todo = list(keys)
        while todo and total < limit:
            k = todo.pop()
            total += 1
            ts = tasks.get(k)
            if ts is not None and ts.state in ("memory", "erred") or \
                    ts is None and k in recent:
                done += 1
            todo.extend(children.get(k, ()))
        return [total, done]

    def prune(self) -> None:
        """Forget the edges of trees none of whose tasks the scheduler knows any more."""
        tasks = self.state.tasks
        for parent in [p for p, kids in self.children.items()
                       if p not in tasks and not any(k in tasks for k in kids)]:
            for kid in self.children.pop(parent):
                if self.parent.get(kid) == parent:
                    del self.parent[kid]
        if len(self.parent) > EDGES:     # still too many live edges: keep the newest
            for kid in list(self.parent)[: len(self.parent) - EDGES]:
                p = self.parent.pop(kid)
                kids = self.children.get(p)
                if kids is not None:
                    try:
                        kids.remove(kid)
                    except ValueError:
                        pass
                    if not kids:
                        del self.children[p]

    def _failed_on(self, key: str, address: str, stop: float) -> None:
        for i in range(len(self.failures) - 1, max(-1, len(self.failures) - 51), -1):
            f = self.failures[i]
            if f["key"] == key and not f["worker"]:
                f["worker"], f["time"] = address, stop
                return

    def note_failures(self, erred: list) -> None:
        """Erred tasks not listed yet (found by the snapshot's scan, not per event)."""
        tasks = self.state.tasks
        if len(self.failed) > FAILURES:
            for key in [k for k in self.failed if k not in tasks]:
                self.failed.discard(key)
        for ts in erred:
            if ts.key not in self.failed and ts.error is not None:
                self.failed.add(ts.key)
                run = self.recent.get(ts.key)
                tb = ts.error[1] or ""
                self.failures.append({
                    "time": run[2] if run else self.clock(),
                    "kind": "killed-worker" if ts.error[2] == "killed" else ts.error[2],
                    "key": ts.key, "worker": run[0] if run else "",
                    "text": (tb.strip().splitlines() or [""])[-1][:300]})
