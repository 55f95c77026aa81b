"""What workers and the scheduler agree on for the ``monitor`` message: the buckets
of the task duration histogram, how a key names its function, and how a batch of
task stream rows travels and is kept (packed)."""
from __future__ import annotations

import json
from bisect import bisect_left
from typing import Any

import msgpack

# seconds: upper bounds of the duration histogram's buckets (one more bucket: above)
BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0)
MAX_FUNCS = 200        # function names per monitor message (the rest: "other")


def funcname(key: str) -> str:
    """Keys are ``<function>-<token>``: the function's name, for grouping."""
    i = key.rfind("-")
    return key[:i] if i > 0 else key


BAD_RUN = ["?-malformed", 0, 0.0, 0.0, False]
_NUM = (int, float)


def pack_runs(runs: list) -> bytes:
    """A batch of task stream rows ([key, thread, start, stop, ok]) as one blob. The
    scheduler keeps the last rows of a run for the dashboard; kept as decoded rows,
    a few small objects each, they would be spread over the whole heap by the time a
    large run ends and keep its memory from being given back. A blob is one
    allocation, and nothing is decoded per task on arrival."""
    return msgpack.packb(runs, use_bin_type=True)


def _run_ok(r: Any) -> bool:
    return (type(r) is list and len(r) == 5 and type(r[0]) is str and type(r[1]) is int
            and type(r[2]) in _NUM and type(r[3]) in _NUM and type(r[4]) is bool)


def unpack_runs(blob: bytes, n: int) -> list:
    """The ``n`` rows of a blob; a row of the wrong shape, or every row of a blob that
    is not ``n`` rows, reads as ``BAD_RUN`` (the numbering of the stream holds)."""
    try:
        runs = msgpack.unpackb(blob, raw=False, use_list=True)
    except Exception:        # a worker's message is checked like any input
        runs = None
    if type(runs) is not list or len(runs) != n:
        return [BAD_RUN] * n
    return [r if _run_ok(r) else BAD_RUN for r in runs]


def aggregate(runs: list) -> dict:
    """Per function [finished, erred], the duration histogram and its sum, and the erred
    runs' [key, stop]: computed by the worker, so the scheduler adds a few numbers per
    message instead of doing work per task."""
    done: dict[str, list[int]] = {}
    hist = [0] * (len(BUCKETS) + 1)
    total = 0.0
    erred = []
    for key, _thread, start, stop, ok in runs:
        i = key.rfind("-")
        name = key[:i] if i > 0 else key
        counts = done.get(name)
        if counts is None:
            if len(done) >= MAX_FUNCS:
                name = "other"
                counts = done.setdefault(name, [0, 0])
            else:
                counts = done[name] = [0, 0]
        d = stop - start
        hist[bisect_left(BUCKETS, d)] += 1
        total += d
        if ok:
            counts[0] += 1
        else:
            counts[1] += 1
            erred.append([key, stop])
    return {"done": done, "hist": hist, "hist_sum": total, "erred": erred}


def chrome_trace(rows: list[dict]) -> dict:
    """Trace Event Format (chrome://tracing, Perfetto): a process per worker, a thread
    per worker thread, a complete event per execution."""
    pids = {w: i + 1 for i, w in enumerate(sorted({r["worker"] for r in rows}))}
    events: list[dict] = [{"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                           "args": {"name": worker}} for worker, pid in pids.items()]
    for r in rows:
        events.append({"ph": "X", "name": r["function"], "cat": r["status"],
                       "pid": pids[r["worker"]], "tid": r["thread"],
                       "ts": r["start"] * 1e6, "dur": max(0.0, r["stop"] - r["start"]) * 1e6,
                       "args": {"key": r["key"]}})
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def write_chrome_trace(rows: list[dict], filename: str) -> None:
    with open(filename, "w") as f:
        json.dump(chrome_trace(rows), f)
