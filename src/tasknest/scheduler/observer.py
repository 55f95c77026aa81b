"""The Observer: what the dashboard, /metrics and the clients' output need, fed by events.

A component of SchedulerState (registers ``monitor``, hears of workers leaving),
owning bounded records that the task records do not keep:

* the task stream: the workers' execution rows, kept as the packed batches they came
  in (decoded when read: see protocol/monitoring.pack_runs);
* the spawn tree's edges (parent -> children), as the submitting worker saw them;
* failures: erred tasks, KilledWorker, lost workers;
* each worker's recent log lines and its last stats (CPU, memory, spilled keys);
* counts per function and the duration histogram (added up by the workers);
* task output, routed to the client that submitted the root of the task's tree.

Nothing is done per task when a message arrives: batches are appended, aggregates
added. Edges are indexed, and the last run of each key looked up, only when someone
asks (a page, an output line to route). Every record is a ring or capped: a run of a
million tasks costs a bounded amount of memory here.
"""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..protocol import messages as m
from ..protocol.monitoring import BUCKETS, funcname, unpack_runs

if TYPE_CHECKING:
    from .state import SchedulerState

__all__ = ["Observer", "funcname", "BUCKETS"]

STREAM = 20_000        # task stream rows kept
FAILURES = 1_000       # failures kept
EDGES = 200_000        # spawn edges kept (those of forgotten tasks go first)
LOG_LINES = 200        # log lines kept per worker
MARKS = 2_000          # transfers and spills kept (marked on the task stream)
FUNCS = 1_000          # function names counted
PENDING = 3.0          # seconds output waits for its task's tree to be known


NUM = (int, float)
STATS: dict[str, Any] = {"cpu": NUM, "memory": int, "spilled": int, "keys": int, "time": NUM, "dropped": int,
         "http": str}


def _rows_ok(rows: list, *types: Any) -> list:
    """The rows of the right shape (a worker's message is checked like any input)."""
    return [r for r in rows if len(r) == len(types) and all(
        isinstance(v, t) for v, t in zip(r, types))]


class Observer:
    def __init__(self, state: "SchedulerState", clock: Callable[[], float]) -> None:
        self.state = state
        self.clock = clock
        # (seq of its first row, worker, rows, the rows packed)
        self.batches: deque[tuple[int, str, int, bytes]] = deque()
        self.rows = 0                      # rows in batches
        self.seq = 0                       # rows ever received
        self._recent: tuple[int, dict] = (-1, {})
        self.parent: dict[str, str] = {}
        self.children: dict[str, list[str]] = {}
        self.roots: dict[str, None] = {}   # parents with no known parent, oldest first
        self._spawns: deque[list] = deque()    # edges not indexed yet, as they came
        self._spawn_rows = 0
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
        assert self.rows == sum(b[2] for b in self.batches)
        assert self.rows <= STREAM + max((b[2] for b in self.batches), default=0)
        assert all(0 < b[2] <= len(b[3]) for b in self.batches)

    # -- events: per message, never per task -------------------------------------------
    def _on_monitor(self, wid: str, msg: m.Monitor) -> None:
        ws = self.state.workers.get(wid)
        if ws is None:
            return
        address = ws.address
        n = msg.nruns
        # (rows are checked when read: nothing per task on arrival; a row packs to
        # 6 bytes at least, so a count beyond the blob's size is a lie, not kept)
        if 0 < n <= len(msg.runs):
            self.batches.append((self.seq + 1, address, n, msg.runs))
            self.seq += n
            self.rows += n
            while self.rows - self.batches[0][2] >= STREAM:
                self.rows -= self.batches.popleft()[2]
        if msg.spawns:
            self._spawns.append(msg.spawns)
            self._spawn_rows += len(msg.spawns)
            while self._spawn_rows > EDGES and len(self._spawns) > 1:   # nobody looked
                self._spawn_rows -= len(self._spawns.popleft())
        stats = msg.stats
        self._add_up(stats, address)
        if msg.logs:
            self.logs.setdefault(wid, deque(maxlen=LOG_LINES)).extend(msg.logs)
        self.stats[wid] = {k: v for k, v in stats.items()
                           if k in STATS and isinstance(v, STATS[k])}
        for kind, start, stop, peer, nkeys, nbytes in _rows_ok(msg.events, str, NUM, NUM, str,
                                                               int, int):
            self.mark_seq += 1
            self.marks.append([self.mark_seq, address, kind, start, stop, peer, nkeys, nbytes])
            if kind == "transfer":
                self.transferred += nbytes
        if msg.output:
            now = self.clock()
            for key, stream_name, text in _rows_ok(msg.output, str, str, str):
                self.pending.append((now + PENDING, key, [funcname(key), address, key,
                                                          stream_name, text]))
        if self.pending:
            self._route_output(self.clock())

    def _add_up(self, stats: dict, address: str) -> None:
        """The worker's aggregates of the runs in this message (protocol/monitoring.py)."""
        done = stats.pop("done", None)
        if isinstance(done, dict):
            table = self.done_by_func
            for name, counts in done.items():
                if type(name) is not str or type(counts) is not list or len(counts) != 2 or not all(
                        type(n) is int and n >= 0 for n in counts):
                    continue
                ok, bad = counts
                counts = table.get(name)
                if counts is None:
                    if len(table) >= FUNCS:
                        continue
                    counts = table[name] = [0, 0]
                counts[0] += ok
                counts[1] += bad
        hist = stats.pop("hist", None)
        total = stats.pop("hist_sum", 0.0)
        if type(hist) is list and len(hist) == len(self.hist) and all(
                type(n) is int and n >= 0 for n in hist) and type(total) in NUM:
            self.hist = [a + b for a, b in zip(self.hist, hist)]
            self.hist_sum += total
        erred = stats.pop("erred", None)
        for key, stop in _rows_ok(erred if type(erred) is list else [], str, NUM):
            if key in self.failed:      # listed before its run arrived: say where it ran
                self._failed_on(key, address, stop)

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

    # -- queries (client.get_task_stream & co.) ------------------------------------------
    QUERIES = frozenset({"worker_logs", "task_stream", "edges", "tree_progress"})

    def query(self, what: str, arg: Any) -> Any:
        workers = self.state.workers
        if what == "edges":          # {child: parent} of these keys
            parent = self.edges()
            return {k: parent[k] for k in (arg or [])[:100_000] if k in parent}
        if what == "tree_progress":  # [tasks, finished] in the trees under these keys
            return self.tree_progress(list(arg or []))
        if what == "worker_logs":
            return {workers[w].address: list(lines) for w, lines in self.logs.items()
                    if w in workers}
        start = arg if isinstance(arg, (int, float)) else None
        return [{"key": r[3], "worker": r[1], "thread": r[2], "start": r[4], "stop": r[5],
                 "status": "OK" if r[6] else "error", "function": funcname(r[3])}
                for r in self.all_rows() if start is None or r[5] >= start]

    # -- reading (on demand) -----------------------------------------------------------------
    def all_rows(self) -> Iterator[list]:
        """Task stream rows, oldest first: [seq, worker, thread, key, start, stop, ok]."""
        for first, address, n, blob in list(self.batches):
            for i, (key, thread, start, stop, ok) in enumerate(unpack_runs(blob, n)):
                yield [first + i, address, thread, key, start, stop, ok]

    def rows_since(self, since: int, limit: int) -> list[list]:
        """The newest rows after ``since`` (at most ``limit``), oldest first."""
        out: list[list] = []
        for first, address, n, blob in reversed(self.batches):
            if first + n - 1 <= since or len(out) >= limit:
                break
            runs = unpack_runs(blob, n)
            for i in range(n - 1, -1, -1):
                seq = first + i
                if seq <= since or len(out) >= limit:
                    break
                key, thread, start, stop, ok = runs[i]
                out.append([seq, address, thread, key, start, stop, ok])
        out.reverse()
        return out

    @property
    def recent(self) -> dict[str, list]:
        """key -> [worker, start, stop, ok] of its last run still in the task stream
        (built when asked, kept until new rows arrive)."""
        seq, table = self._recent
        if seq != self.seq:
            table = {}
            for _first, address, n, blob in self.batches:
                for key, _thread, start, stop, ok in unpack_runs(blob, n):
                    table[key] = [address, start, stop, ok]
            self._recent = (self.seq, table)
        return table

    def edges(self) -> dict[str, str]:
        """child -> parent, with every edge received so far indexed."""
        parent, children, roots = self.parent, self.children, self.roots
        while self._spawns:
            batch = self._spawns.popleft()
            self._spawn_rows -= len(batch)
            for pair in batch:
                if len(pair) != 2:
                    continue
                p, child = pair
                if child in parent or type(p) is not str or type(child) is not str:
                    continue
                parent[child] = p
                kids = children.get(p)
                if kids is None:
                    kids = children[p] = []
                    if p not in parent:
                        roots[p] = None
                kids.append(child)
                if child in roots:
                    del roots[child]
        if len(parent) > EDGES:
            self.prune()
        return parent

    def root(self, key: str) -> str:
        parent = self.edges()
        seen = 0
        while key in parent and seen < 10_000:
            key = parent[key]
            seen += 1
        return key

    def owner(self, key: str) -> str | None:
        """The user's client that submitted the root of the key's tree, if still known."""
        tasks = self.state.tasks
        parent = self.edges()
        k: str | None = key
        seen = 0
        while k is not None and seen < 10_000:
            ts = tasks.get(k)
            if ts is not None:
                for cid in ts.who_wants:
                    if cid[:2] == "c-":
                        return cid
            k = parent.get(k)
            seen += 1
        return None

    def tree_progress(self, keys: list[str], limit: int = 200_000) -> list[int]:
        """How many tasks the trees under ``keys`` hold so far, and how many finished."""
        self.edges()
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
        for p in [p for p, kids in self.children.items()
                  if p not in tasks and not any(k in tasks for k in kids)]:
            for kid in self.children.pop(p):
                if self.parent.get(kid) == p:
                    del self.parent[kid]
            self.roots.pop(p, None)
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
                        self.roots.pop(p, None)
        for p in [p for p in self.roots if p not in self.children]:
            del self.roots[p]

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
        new = [ts for ts in erred if ts.key not in self.failed and ts.error is not None]
        recent = self.recent if new else {}
        for ts in new:
            self.failed.add(ts.key)
            run = recent.get(ts.key)
            tb = ts.error[1] or ""
            self.failures.append({
                "time": run[2] if run else self.clock(),
                "kind": "killed-worker" if ts.error[2] == "killed" else ts.error[2],
                "key": ts.key, "worker": run[0] if run else "",
                "text": (tb.strip().splitlines() or [""])[-1][:300]})
