"""What the pages and the API show, computed on the scheduler's loop (plain dicts out).

``snapshot`` runs once per tick however many people watch; ``task`` and ``tree``
run when a page asks, bounded in what they walk. The JSON encoding happens in the
dashboard's own thread, not here.
"""
from __future__ import annotations

import time
from typing import Any

from ..protocol.monitoring import BUCKETS, funcname
from ..scheduler.observer import FAILURES, LOG_LINES, MARKS, STREAM, Observer
from ..scheduler.state import SchedulerState

API_VERSION = 1
MAX_FUNCS = 200        # progress rows (the busiest functions)
TREE_CHILDREN = 25     # children shown one by one; the rest are counted by state
TREE_DEPTH = 4         # levels sent at once (deeper ones when a node is opened)
TREE_NODES = 2_000     # nodes per answer at most
LIMITS = {"stream": STREAM, "marks": MARKS, "failures": FAILURES, "worker_log_lines": LOG_LINES,
          "progress_functions": MAX_FUNCS, "tree_children": TREE_CHILDREN}


def _state_of(ts: Any) -> str:
    if ts.state == "processing" and ts.running:
        return "waiting-children"      # seceded: in worker_client, waiting on what it launched
    return ts.state


def snapshot(state: SchedulerState, obs: Observer, since: int, since_marks: int = 0) -> dict:
    """The cluster now: workers, progress per function, new task stream rows (seq > since),
    failures, the roots of the spawn tree."""
    t0 = time.perf_counter()
    progress: dict[str, dict[str, int]] = {}
    totals = {"released": 0, "waiting": 0, "processing": 0, "memory": 0, "erred": 0}
    erred = []
    held = 0
    for key, ts in state.tasks.items():
        st = ts.state
        totals[st] = totals.get(st, 0) + 1
        name = funcname(key)
        row = progress.get(name)
        if row is None:
            row = progress[name] = {"released": 0, "waiting": 0, "processing": 0,
                                    "memory": 0, "erred": 0}
        row[st] = row.get(st, 0) + 1
        if st == "memory":
            held += ts.nbytes * len(ts.who_has)
        elif st == "erred":
            erred.append(ts)
    if erred:
        obs.note_failures(erred)
    for name, (done, failed) in obs.done_by_func.items():
        row = progress.get(name)
        if row is None:
            row = progress[name] = {"released": 0, "waiting": 0, "processing": 0,
                                    "memory": 0, "erred": 0}
        row["done"] = done
        row["failed"] = failed
    rows = sorted(progress.items(), key=lambda kv: -sum(kv[1].values()))[:MAX_FUNCS]
    workers = []
    for w in state.workers.values():
        stats = obs.stats.get(w.id, {})
        workers.append({
            "id": w.id, "name": w.name, "address": w.address, "nthreads": w.nthreads,
            "busy": min(w.nthreads, max(0, len(w.processing) - w.seceded)),
            "processing": len(w.processing), "seceded": w.seceded, "keys": len(w.has_what),
            "bytes": 0, "memory": stats.get("memory", w.memory),
            "memory_limit": w.memory_limit, "cpu": stats.get("cpu", 0.0),
            "spilled": stats.get("spilled", 0), "paused": w.paused,
            "dropped": stats.get("dropped", 0), "http": stats.get("http")})
    stream = obs.rows_since(since, 2_000)
    marks = [r for r in obs.marks if r[0] > since_marks] if obs.marks and \
        obs.marks[-1][0] > since_marks else []
    root_list = roots(state, obs, index=False)
    return {
        "version": API_VERSION, "time": time.time(), "seq": obs.seq,
        "mark_seq": obs.mark_seq, "marks": marks, "bytes_transferred": obs.transferred,
        "workers": workers, "totals": totals, "ntasks": len(state.tasks),
        "bytes_held": held,
        "progress": [{"function": k, **v} for k, v in rows],
        "stream": stream, "failures": list(obs.failures)[-200:], "roots": root_list,
        "histogram": {"buckets": list(BUCKETS), "counts": list(obs.hist),
                      "sum": obs.hist_sum},
        "limits": LIMITS, "scan_seconds": time.perf_counter() - t0,
    }


def roots(state: SchedulerState, obs: Observer, index: bool = True) -> list[dict]:
    """The newest 50 roots of spawn trees. ``index=False``: from the edges indexed so
    far (the snapshot does not index them: only the tree page needs them)."""
    if index:
        obs.edges()
    found: dict[str, str] = {}
    for parent in reversed(obs.roots):
        rts = state.tasks.get(parent)
        found[parent] = _state_of(rts) if rts is not None else _ran(obs, parent)
        if len(found) >= 50:
            break
    return [{"key": k, "function": funcname(k), "state": s,
             "children": len(obs.children.get(k, ()))} for k, s in reversed(found.items())]


def _ran(obs: Observer, key: str) -> str:
    run = obs.recent.get(key)
    if run is None:
        return "released"
    return "finished" if run[3] else "failed"


def task(state: SchedulerState, obs: Observer, key: str) -> dict | None:
    obs.edges()
    ts = state.tasks.get(key)
    run = obs.recent.get(key)
    if ts is None and run is None and key not in obs.parent and key not in obs.children:
        return None
    kids = obs.children.get(key, [])
    out: dict[str, Any] = {
        "key": key, "function": funcname(key),
        "state": _state_of(ts) if ts is not None else _ran(obs, key),
        "worker": None, "start": None, "stop": None, "duration": None,
        "parent": obs.parent.get(key), "children": kids[:200], "nchildren": len(kids),
        "exception": None, "traceback": None, "who_has": [], "who_wants": [],
        "dependencies": [], "dependents": [], "nbytes": None, "type": None,
        "root": obs.root(key)}
    if run is not None:
        out.update(worker=run[0], start=run[1], stop=run[2], duration=run[2] - run[1])
    if ts is not None:
        workers = state.workers
        if ts.processing_on in workers:
            out["worker"] = workers[ts.processing_on].address
        out["who_has"] = sorted(workers[w].address for w in ts.who_has if w in workers)
        out["who_wants"] = sorted(ts.who_wants)[:50]
        out["dependencies"] = list(ts.deps)[:200]
        out["dependents"] = sorted(ts.dependents)[:200]
        if ts.state == "memory":
            out["nbytes"], out["type"] = ts.nbytes, ts.type
        if ts.error is not None:
            tb = ts.error[1] or ""
            out["exception"] = (tb.strip().splitlines() or [ts.error[2]])[-1]
            out["traceback"] = tb
    return out


def tree(state: SchedulerState, obs: Observer, key: str, depth: int = TREE_DEPTH) -> dict | None:
    """The spawn tree under ``key``: a node per task, many children rolled up by state."""
    obs.edges()
    if key not in state.tasks and key not in obs.children and key not in obs.recent:
        return None
    budget = [TREE_NODES]
    return _node(state, obs, key, max(0, min(depth, 12)), budget)


def _node(state: SchedulerState, obs: Observer, key: str, depth: int, budget: list) -> dict:
    budget[0] -= 1
    ts = state.tasks.get(key)
    run = obs.recent.get(key)
    node: dict[str, Any] = {
        "key": key, "function": funcname(key),
        "state": _state_of(ts) if ts is not None else _ran(obs, key),
        "worker": None, "duration": None}
    if ts is not None and ts.processing_on in state.workers:
        node["worker"] = state.workers[ts.processing_on].address
    elif run is not None:
        node["worker"] = run[0]
    if run is not None:
        node["duration"] = run[2] - run[1]
    kids = obs.children.get(key, [])
    node["nchildren"] = len(kids)
    if kids and depth > 0 and budget[0] > 0:
        shown = kids[:TREE_CHILDREN]
        node["children"] = [_node(state, obs, k, depth - 1, budget) for k in shown
                            if budget[0] > 0]
        rest: dict[str, int] = {}
        for k in kids[len(node["children"]):]:
            t = state.tasks.get(k)
            s = _state_of(t) if t is not None else _ran(obs, k)
            rest[s] = rest.get(s, 0) + 1
        node["rolled_up"] = rest
    return node
