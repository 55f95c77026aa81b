"""Instructions per task, this tree against another revision (valgrind).

    python -m benchmarks.instructions --baseline REV [--workloads flat,fanout]
                                      [--rounds 3] [--workers 1] [--json FILE]

Wall and CPU time on a shared 2-core machine swing by ±10–20% from one run to the
next, so they cannot show a change of a few percent. Instructions can. Each count
runs the workload once, on a cluster held in one process (``processes=False``: the
same client, scheduler, worker, codecs and sockets, one interpreter), under
valgrind's instruction counter. Start-up, warm-up and shut-down are the same at any
size, so the workload runs at two sizes and the difference, divided by the
difference in tasks, is the cost of one task with everything it touches.

Both trees run with this tree's workloads and task functions; only ``src`` differs
(the baseline is exported with ``git archive``, as for ``benchmarks.run``). A count
is not exact: valgrind runs one thread at a time and switches between them as it
goes, so how messages batch, and when the garbage collector runs, differ from run
to run; the spread between rounds of one tree is shown beside the change. The
cluster has one worker by default: with two, which worker claims a shared call
first or steals what changes from run to run, and the nested workloads' work per
task with it (fib_dedup by ±10–20%). Valgrind runs everything about 50 times
slower, so timers (heartbeats, ticks) fire more often per task than in a live run;
both trees see the same.

Waiting awake is turned off in both trees (``SPINS``): a thread that spins for a
result it expects within a round trip burns instructions in proportion to the time
it waits, not to the work done, and under valgrind, which runs one thread at a time,
that time is whatever the other threads take, magnified.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# workload -> (small size, large size): the difference is about a billion instructions,
# so the spread of a count's start-up and shut-down (about ±10 million) is about 1%
SIZES: dict[str, tuple[int, int]] = {
    "latency": (100, 1100), "actor": (100, 1100), "flat": (1000, 4000),
    "fanout": (500, 3000), "fib_tree": (10, 16), "chain": (100, 1100),
    "fib_dedup": (50, 550), "process_all": (500, 5000),
    "process_all_gathered": (500, 5000),
}


# module -> the constant of seconds its threads wait awake; absent names are skipped
SPINS = {"tasknest.client.placing": "SPIN", "tasknest.worker.server": "SPIN",
         "tasknest.worker.client": "CONFIRM_SPIN"}


def tasks_at(workload: str, n: int) -> int:
    """Tasks (or round trips) a workload runs at size ``n``."""
    from benchmarks import tasks
    if workload == "fib_tree":
        return int(tasks.fib_calls(n))
    if workload == "fib_dedup":
        return n + 1
    return n


def child(workload: str, n: int, workers: int) -> None:
    """Run ``workload`` at size ``n`` once on an in-process cluster of ``workers``
    one-thread workers (under valgrind)."""
    import importlib

    from benchmarks import workloads as wl
    from benchmarks.systems import FuturesSystem
    for module, name in SPINS.items():
        mod = importlib.import_module(module)
        if hasattr(mod, name):
            setattr(mod, name, 0.0)

    class InProcess(FuturesSystem):
        def start(self) -> None:
            self.cluster = self.mod.LocalCluster(n_workers=workers, threads_per_worker=1,
                                                 processes=False, dashboard=False)
            self.client = self.mod.Client(self.cluster)

    s = InProcess("tasknest")
    s.start()
    try:
        s.warm()
        if workload == "idle":           # n seconds of a cluster doing nothing
            t0 = time.perf_counter()
            time.sleep(n)
            print("elapsed", time.perf_counter() - t0, flush=True)
            print("imported_from", s.mod.__file__, flush=True)
            return
        w = wl.WORKLOADS[workload]
        old = wl.MAX_REPS
        wl.MAX_REPS = 1                  # one repetition: a count, not a time
        t0 = time.perf_counter()
        try:
            w.measure(s, n)
            print("elapsed", time.perf_counter() - t0, flush=True)
        finally:
            wl.MAX_REPS = old
        print("imported_from", s.mod.__file__, flush=True)
    finally:
        s.close()


def count(src: str, workload: str, n: int, workers: int) -> int:
    """Instructions of one child run importing tasknest from ``src``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, str(ROOT)]))
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--branch-sim=no",
           "--cachegrind-out-file=/dev/null", sys.executable, "-m", "benchmarks.instructions",
           "--child", workload, str(n), "--workers", str(workers)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{workload} {n} failed:\n{proc.stderr[-2000:]}")
    got = re.search(r"imported_from (\S+)", proc.stdout)
    if not got or not got.group(1).startswith(src):
        raise RuntimeError(f"{workload} {n} imported tasknest from elsewhere: {proc.stdout}")
    refs = re.search(r"I\s+refs:\s+([\d,]+)", proc.stderr)
    if not refs:
        raise RuntimeError(f"no instruction count for {workload} {n}:\n{proc.stderr[-2000:]}")
    return int(refs.group(1).replace(",", ""))


def render(results: dict[str, Any], base: str) -> str:
    lines = [f"| workload | sizes | {base}, instructions/task | this tree | change |",
             "|---|---|---|---|---|"]
    for w, by in results.items():
        before, now = by[base], by["this tree"]
        mb, mn = statistics.median(before), statistics.median(now)

        def show(xs: list[float]) -> str:
            return f"{statistics.median(xs):,.0f}" + (
                f" ({min(xs):,.0f}–{max(xs):,.0f})" if len(xs) > 1 else "")
        lo, hi = SIZES[w]
        lines.append(f"| {w} | {lo} → {hi} | {show(before)} | {show(now)} | "
                     f"{100 * (mn - mb) / mb:+.1f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", metavar="REV", required=False, default="")
    ap.add_argument("--workloads", default=",".join(SIZES))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="counts run at once (valgrind runs one thread at a time)")
    ap.add_argument("--workers", type=int, default=1,
                    help="one-thread workers of the cluster (default 1: with two, which "
                         "worker claims or steals what varies from run to run, and with it "
                         "the work per task by ±10%% on the nested workloads)")
    ap.add_argument("--json", default="benchmarks/results/instructions.json")
    ap.add_argument("--child", nargs=2, metavar=("WORKLOAD", "N"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(a.child[0], int(a.child[1]), a.workers)
        sys.stdout.flush()
        # the count is complete: skip the interpreter's finalization, where a thread
        # state made under valgrind for a late thread now and then dereferences NULL
        os._exit(0)
    if not a.baseline:
        ap.error("--baseline REV is required")
    names = [w for w in a.workloads.split(",") if w]
    unknown = [w for w in names if w not in SIZES]
    if unknown:
        ap.error(f"unknown workloads {unknown}; choose from {', '.join(SIZES)}")
    from benchmarks.run import export_revision
    tmp = tempfile.mkdtemp(prefix="tasknest-baseline-")
    base = f"tasknest@{a.baseline}"
    trees = {base: export_revision(a.baseline, tmp), "this tree": str(ROOT / "src")}
    results: dict[str, dict[str, list[float]]] = {w: {t: [] for t in trees} for w in names}
    jobs = [(r, w, t, n) for r in range(a.rounds) for w in names for t in trees
            for n in SIZES[w]]
    t0 = time.monotonic()

    def one(job: tuple) -> int:       # counts do not depend on what else runs
        r, w, t, n = job
        got = count(trees[t], w, n, a.workers)
        print(f"[{time.monotonic() - t0:6.0f} s] round {r + 1} {w} {t} at {n}: "
              f"{got:,} instructions", flush=True)
        return got
    with ThreadPoolExecutor(a.jobs) as pool:
        counts = dict(zip(jobs, pool.map(one, jobs)))
    for r in range(a.rounds):
        for w in names:
            small, big = SIZES[w]
            for t in trees:
                results[w][t].append((counts[r, w, t, big] - counts[r, w, t, small])
                                     / (tasks_at(w, big) - tasks_at(w, small)))
    table = render(results, base)
    print(table)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps({"baseline": a.baseline, "workers": a.workers,
                                        "results": results,
                                        "sizes": {w: SIZES[w] for w in names}}, indent=1))
    return results


if __name__ == "__main__":
    main()
