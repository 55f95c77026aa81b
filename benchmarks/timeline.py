"""Wall-clock timeline of one round trip (``submit(inc, i).result()``), hop by hop.

    python -m benchmarks.timeline [--round-trips 300] [--scheduled]

CPU profiles (``benchmarks.breakdown``) cannot explain a latency: most of a round
trip is spent waiting for a packet, a wake-up or the GIL. So every process of a
LocalCluster (client, scheduler, worker) timestamps a few points of the path with
the machine-wide monotonic clock, and the round trips are lined up afterwards.
The marks are installed from outside (a ``sitecustomize`` on PYTHONPATH wraps
methods); tasknest itself carries no tracing code.

The report follows the critical path: the task straight from the client to a
worker (or, with ``--scheduled``, through the scheduler) and the result straight
back to the client.
"""
from __future__ import annotations

import argparse
import atexit
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ENV = "TASKNEST_TIMELINE"
_marks: list[tuple[int, str]] = []

# (module, class, method, label, when): the points of the path that are timestamped
POINTS = [
    ("tasknest.client.client", "Client", "submit", "submit", "enter"),
    ("tasknest.protocol.comm", "Comm", "send_threadsafe", "queued for the loop", "enter"),
    ("tasknest.protocol.comm", "Comm", "_drain_threadsafe", "loop took the queue", "enter"),
    ("tasknest.protocol.comm", "Comm", "_write_outbox", "frame written", "enter"),
    ("tasknest.protocol.comm", "Comm", "buffer_updated", "frame read", "enter"),
    ("tasknest.worker.server", "Worker", "execute", "task thread starts", "enter"),
    ("tasknest.worker.server", "Worker", "_finished", "task returned", "enter"),
    ("tasknest.client.future", "FutureState", "_settle", "future settled", "enter"),
    ("tasknest.client.client", "Client", "_gather_sync", "result() returns", "exit"),
]


def mark(label: str) -> None:
    _marks.append((time.perf_counter_ns(), label))


def _wrap(cls: Any, name: str, label: str, when: str) -> None:
    original = getattr(cls, name)

    if name == "_write_outbox":               # only when there is something to write
        @functools.wraps(original)
        def wrapper(self: Any, *a: Any, **k: Any) -> Any:
            if self._outbox and not self.closed:
                mark(label)
            return original(self, *a, **k)
    elif when == "enter":
        @functools.wraps(original)
        def wrapper(self: Any, *a: Any, **k: Any) -> Any:
            mark(label)
            return original(self, *a, **k)
    else:
        @functools.wraps(original)
        def wrapper(self: Any, *a: Any, **k: Any) -> Any:
            try:
                return original(self, *a, **k)
            finally:
                mark(label)
    setattr(cls, name, wrapper)


def install() -> None:
    """Called in every process (through sitecustomize) when TASKNEST_TIMELINE is set."""
    import importlib
    out = os.environ[ENV]
    for module, cls_name, method, label, when in POINTS:
        _wrap(getattr(importlib.import_module(module), cls_name), method, label, when)

    def dump() -> None:
        if _marks:
            path = Path(out) / f"{os.getpid()}.txt"
            path.write_text("".join(f"{t} {label}\n" for t, label in _marks))
    atexit.register(dump)


SITECUSTOMIZE = f"""
import os
if os.environ.get({ENV!r}):
    from benchmarks import timeline
    timeline.install()
"""


# the critical path: (name, process, event) in order; each step runs from the previous
# point to the first such event after it. A round trip of a dependency-free task goes
# straight from the client to a worker it is connected to (placed); with ``workers=``
# it goes through the scheduler.
PLACED_PATH = [
    ("client: submit() to frame written (pickle, key, encode; the user's thread writes)",
     "client", "frame written"),
    ("network: client to worker (loopback TCP, the worker's loop wakes up)", "worker",
     "frame read"),
    ("worker: frame read to task thread running (decode, queue; a thread awake takes it)",
     "worker", "task thread starts"),
    ("worker: task thread runs the task (unpickle, call)", "worker", "task returned"),
    ("worker: task returned to frame written (pickle result; the task thread writes)",
     "worker", "frame written"),
    ("network: worker to client (the result, straight; the client's loop wakes up)",
     "client", "frame read"),
    ("client: frame read to future settled (decode, settle)", "client", "future settled"),
    ("client: settled to result() returning (the user's thread, awake, sees it)",
     "client", "result() returns"),
]
SCHEDULED_PATH = [
    ("client: submit() to frame written (pickle, key, encode; the user's thread writes)",
     "client", "frame written"),
    ("network: client to scheduler (loopback TCP, reader wakes up)", "scheduler", "frame read"),
    ("scheduler: frame read to frame written (decode, state machine, encode)",
     "scheduler", "frame written"),
    ("network: scheduler to worker", "worker", "frame read"),
    ("worker: frame read to task thread running (decode, queue, thread wakes, GIL)",
     "worker", "task thread starts"),
    ("worker: task thread runs the task (unpickle, call)", "worker", "task returned"),
    ("worker: task returned to frame written (pickle result; the task thread writes)",
     "worker", "frame written"),
    ("network: worker to client (the result, straight)", "client", "frame read"),
    ("client: frame read to future settled (decode, settle)", "client", "future settled"),
    ("client: settled to result() returning (user thread wakes, GIL)",
     "client", "result() returns"),
]


def _walk(seg: list[tuple[int, str, str]], path: list) -> list[float] | None:
    """Times of each step of ``path`` in one round trip, or None if it took another."""
    t = next((x[0] for x in seg if x[1:] == ("client", "submit")), None)
    if t is None:
        return None
    out = []
    for _, proc, event in path:
        nxt = next((x[0] for x in seg if x[0] >= t and x[1] == proc and x[2] == event), None)
        if nxt is None:
            return None
        out.append((nxt - t) / 1e3)
        t = nxt
    return out


def analyse(directory: str, client_pid: int, starts: list[int],
            path: list = PLACED_PATH) -> dict[str, Any]:
    events: list[tuple[int, str, str]] = []
    for f in Path(directory).glob("*.txt"):
        pid = f.stem
        for line in f.read_text().splitlines():
            t, label = line.split(" ", 1)
            events.append((int(t), pid, label))
    events.sort()
    # name the processes: the client is this one, the worker is where tasks start
    roles = {pid: "worker" for _, pid, label in events if label == "task thread starts"}
    roles[str(client_pid)] = "client"
    bounds = starts + [sys.maxsize]
    segments: list[list[tuple[int, str, str]]] = [[] for _ in starts]
    i = 0
    for t, pid, label in events:
        if t < starts[0]:
            continue
        while t >= bounds[i + 1]:
            i += 1
        segments[i].append((t, roles.get(pid, "scheduler"), label))
    walks = [w for w in (_walk(seg, path) for seg in segments) if w is not None]
    if not walks:
        raise RuntimeError("no round trip followed the expected path: has the code moved "
                           "away from the points in POINTS?")
    steps = [{"step": name, "us": statistics.median(w[k] for w in walks)}
             for k, (name, _, _) in enumerate(path)]
    return {"round_trips": len(segments), "followed": len(walks), "steps": steps,
            "total_us": statistics.median(sum(w) for w in walks)}


def run(round_trips: int, warm: int = 200, workers: int = 1,
        scheduled: bool = False) -> dict[str, Any]:
    here = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as marks, tempfile.TemporaryDirectory() as site:
        Path(site, "sitecustomize.py").write_text(SITECUSTOMIZE)
        os.environ[ENV] = marks
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [site, str(here)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
        install()                                   # this process too
        from tasknest import Client, LocalCluster

        from benchmarks import tasks
        with LocalCluster(n_workers=workers, threads_per_worker=1) as cluster, \
                Client(cluster) as client:
            # through the scheduler: restricted to the workers (all of them)
            where = [w["address"] for w in list(client.scheduler_info(-1)["workers"].values())] if scheduled else None
            for i in range(warm):                    # warm up
                client.submit(tasks.inc, i, workers=where).result()
            _marks.clear()
            starts = []
            for i in range(round_trips):
                starts.append(time.perf_counter_ns())
                mark("start")
                assert client.submit(tasks.inc, i, workers=where).result() == i + 1
        # the cluster's processes wrote their marks as they exited
        Path(marks, f"{os.getpid()}.txt").write_text(
            "".join(f"{t} {label}\n" for t, label in _marks))
        _marks.clear()
        return analyse(marks, os.getpid(), starts, SCHEDULED_PATH if scheduled else PLACED_PATH)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--round-trips", type=int, default=300)
    p.add_argument("--warm", type=int, default=200, help="round trips before measuring")
    p.add_argument("--workers", type=int, default=1, help="worker processes (1 thread each)")
    p.add_argument("--scheduled", action="store_true",
                   help="through the scheduler (workers= given) instead of placed")
    a = p.parse_args()
    res = run(a.round_trips, a.warm, a.workers, a.scheduled)
    print(f"{res['followed']} of {res['round_trips']} round trips "
          f"({'through the scheduler' if a.scheduled else 'placed on a worker'}) on "
          f"{a.workers} worker process(es) after {a.warm} to warm up; "
          "median microseconds per step:\n")
    print("| step | µs |")
    print("|---|---:|")
    for s in res["steps"]:
        print(f"| {s['step']} | {s['us']:.0f} |")
    print(f"| **round trip** (median of the sums) | **{res['total_us']:.0f}** |")


if __name__ == "__main__":
    main()
