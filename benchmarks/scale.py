"""Scale: does tasknest's cost per task stay flat from a thousand to a million tasks?

    python -m benchmarks.scale [--sizes 1000,10000,100000,1000000] [--rounds 3]
                               [--workers 2,50,200,500] [--tasks 100000]

prints its tables in Markdown (for docs/benchmarks.md).

For each size, on 2 workers x 1 thread: ``gather(map(abs, range(n)))`` — tasks/s,
µs per task, time until ``map()`` returns, until the first task ended on its worker
(a streaming map runs its first tasks before it returns) and until the caller has
the first result (``wait`` on it once map() returned), peak RSS and
bytes per task of the scheduler, the workers and the client (sampled every 20 ms),
and RSS of each after the futures are dropped (over ``--rounds`` rounds). Then
100,000 tasks on 2 / 50 / 200 / 500 workers (``benchmarks.fleet`` instances) and the
scheduler's CPU while they idle. Last, the shapes side by side with the rivals
(``--systems``), each measurement a fresh driver of ``benchmarks.run`` killed at
``--timeout``: the flat map at every size, Fibonacci trees of every call a task
(``--fib``), one task fanning out ``--fanout`` children and a chain ``--chain`` deep.
A size is not run when the one before it took so long that it would need more than
twice the timeout (the table says so and why).
"""
from __future__ import annotations

import argparse
import gc
import threading
import time
from typing import Any

import psutil

from tasknest import Client, LocalCluster, wait
from benchmarks.fleet import start_fleet, stop_fleet
from benchmarks.run import run_one
from benchmarks.tasks import fib_calls

MIB = 2 ** 20


class Peaks(threading.Thread):
    def __init__(self, pids: dict[str, list[int]]) -> None:
        super().__init__(daemon=True)
        self.procs = {k: [psutil.Process(p) for p in v] for k, v in pids.items()}
        self.peak = {k: 0 for k in pids}
        self.done = threading.Event()

    def sample(self) -> dict[str, int]:
        return {k: sum(p.memory_info().rss for p in ps) for k, ps in self.procs.items()}

    def run(self) -> None:
        while not self.done.wait(0.02):
            for k, v in self.sample().items():
                self.peak[k] = max(self.peak[k], v)


def flat(n: int, rounds: int) -> list[dict[str, Any]]:
    rows = []
    with LocalCluster(n_workers=2, threads_per_worker=1) as cl, Client(cl) as c:
        c.submit(abs, -1, pure=False).result()
        workers = [int(w["pid"]) for w in c.scheduler_info(-1)["workers"].values()]
        pids = {"scheduler": [cl.scheduler_proc.pid], "workers": workers,
                "client": [psutil.Process().pid]}
        for r in range(rounds):
            sampler = Peaks(pids)
            before = sampler.sample()
            sampler.start()
            wall0, t0 = time.time(), time.perf_counter()
            futures = c.map(abs, range(n))
            t_map = time.perf_counter() - t0
            wait(futures[:1])
            t_first = time.perf_counter() - t0
            # the first task's end on its worker: before map() returned, when it streams
            # (the task stream keeps the last 20,000: late in a fast run, this errs high)
            stops = [r["stop"] for r in c.get_task_stream(start=wall0)]
            t_task = min(stops) - wall0 if stops else float("nan")
            values = c.gather(futures)
            dt = time.perf_counter() - t0
            assert values[-1] == n - 1
            sampler.done.set()
            sampler.join()
            del futures, values
            gc.collect()
            deadline = time.monotonic() + 30
            while any(c.has_what().values()) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(2.5)     # the scheduler and workers give memory back on their tick
            after = sampler.sample()
            rows.append({"n": n, "round": r + 1, "rate": n / dt, "us": dt / n * 1e6,
                         "map_s": t_map, "first_s": t_first, "task_s": t_task,
                         "before": before,
                         "peak": dict(sampler.peak), "after": after})
            print(_row(rows[-1]), flush=True)
    return rows


def _row(x: dict[str, Any]) -> str:
    n = x["n"]
    per = " / ".join(f"{(x['peak'][k] - x['before'][k]) / n:,.0f}"
                     for k in ("scheduler", "client", "workers"))
    rss = " / ".join(f"{x['before'][k] / MIB:.0f} → {x['peak'][k] / MIB:.0f} → "
                     f"{x['after'][k] / MIB:.0f}" for k in ("scheduler", "client", "workers"))
    return (f"| {n:,} | {x['round']} | {x['rate']:,.0f} | {x['us']:.1f} | {x['map_s']:.2f} | "
            f"{x['task_s']:.2f} | {x['first_s']:.2f} | {per} | {rss} |")


def many(nworkers: int, ntasks: int, idle_s: float = 10.0) -> dict[str, Any]:
    with LocalCluster(n_workers=0) as cl, Client(cl) as c:
        procs = start_fleet(cl.scheduler_address, cl.token, nworkers)
        try:
            deadline = time.monotonic() + 60
            while len(c.scheduler_info(-1)["workers"]) < nworkers:
                if time.monotonic() > deadline:
                    raise RuntimeError("workers did not join")
                time.sleep(0.1)
            sched = psutil.Process(cl.scheduler_proc.pid)
            time.sleep(2)
            a, t = sum(sched.cpu_times()[:2]), time.monotonic()
            time.sleep(idle_s)
            idle = (sum(sched.cpu_times()[:2]) - a) / (time.monotonic() - t) * 100
            t0 = time.perf_counter()
            assert c.gather(c.map(abs, range(ntasks)))[-1] == ntasks - 1
            rate = ntasks / (time.perf_counter() - t0)
        finally:
            stop_fleet(procs)
    row = {"workers": nworkers, "rate": rate, "idle_cpu": idle}
    print(f"| {nworkers} | {ntasks:,} | {rate:,.0f} | {idle:.1f} % |", flush=True)
    return row


def _tasks(workload: str, size: int) -> int:
    return fib_calls(size) if workload == "fib_tree" else size + (workload == "chain")


# Sizes a system is not run at, and why: what it took at a smaller size on this machine
# says it would take more memory than the machine has (a run that brings the machine
# down takes every other measurement with it).
TOO_BIG = {("ray", "fib_tree"): (18, "at n=18 Ray ran 270 worker processes in 22 GB "
                                     "(docs/benchmarks.md, fib_tree); this machine has 24 GB")}


def shapes(systems: list[str], plan: list[tuple[str, list[int]]],
           timeout: float) -> list[dict[str, Any]]:
    """Each (workload, sizes) on every system, smallest size first, in fresh drivers."""
    rows = []
    print("\n| workload | size | tasks | " + " | ".join(systems) + " |")
    print("|---|---|---|" + "---|" * len(systems))
    for workload, sizes in plan:
        last: dict[str, tuple[int, float]] = {}   # system -> (tasks, seconds) of its last ok run
        for size in sorted(sizes):
            n, cells = _tasks(workload, size), []
            for system in systems:
                prev = last.get(system, (0, 0.0))
                limit, reason = TOO_BIG.get((system, workload), (None, ""))
                if limit is not None and size > limit:
                    res = {"status": "not run", "why": reason}
                elif prev[0] == -1:
                    res = {"status": "not run", "why": "the smaller size did not finish"}
                elif prev[0] and prev[1] * n / prev[0] > 2 * timeout:
                    res = {"status": "not run",
                           "why": f"~{prev[1] * n / prev[0]:,.0f} s expected from the size before"}
                else:
                    res = run_one(system, workload, size, timeout=timeout, quiet_wait=30)
                if res["status"] == "ok":
                    last[system] = (n, res["metrics"]["elapsed_s"])
                elif res["status"] != "n/a":
                    last[system] = (-1, 0.0)
                rows.append({**res, "system": system, "workload": workload, "size": size,
                             "tasks": n})
                cells.append(_cell(res))
            print(f"| {workload} | {size:,} | {n:,} | " + " | ".join(cells) + " |", flush=True)
    return rows


def _cell(res: dict[str, Any]) -> str:
    if res["status"] == "ok":
        el = res["metrics"]["elapsed_s"]
        n = res["metrics"].get("tasks") or res["size"]
        rss = res.get("peaks", {}).get("all_rss_mb")
        return f"{n / el:,.0f}/s, {el:.3g} s" + (f", {rss:,.0f} MiB" if rss else "")
    if res["status"] == "not run":
        return f"not run ({res['why']})"
    why = res.get("error") or "; ".join(res.get("errors", []))
    return f"**{res['status']}**" + (f" ({why[:80]})" if why else "")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000,1000000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", default="2,50,200,500")
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--idle", type=float, default=10.0,
                    help="seconds the idle scheduler's CPU is measured over")
    ap.add_argument("--systems", default="tasknest,dask,ray",
                    help="systems for the shapes; empty: skip them")
    ap.add_argument("--fib", default="20,24,27")
    ap.add_argument("--fanout", type=int, default=100_000)
    ap.add_argument("--chain", type=int, default=10_000)
    ap.add_argument("--timeout", type=float, default=290.0, help="seconds per shape run")
    args = ap.parse_args(argv)
    print("| tasks | round | tasks/s | µs/task | map() returns s | first task done s | "
          "first result in hand s | peak bytes/task: scheduler / client / workers | "
          "RSS MiB before → peak → after: scheduler / client / workers |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",") if s):
        if args.rounds:           # (--rounds 0: the rivals' shapes alone)
            flat(n, args.rounds)
    print("\n| workers | tasks | tasks/s | scheduler CPU, idle |\n|---|---|---|---|")
    for k in (int(s) for s in args.workers.split(",") if s):
        many(k, args.tasks, args.idle)
    systems = [s for s in args.systems.split(",") if s]
    if systems:
        sizes = [int(s) for s in args.sizes.split(",") if s]
        plan = [("flat", sizes), ("fib_tree", [int(s) for s in args.fib.split(",") if s]),
                ("fanout", [args.fanout] if args.fanout else []),
                ("chain", [args.chain] if args.chain else [])]
        shapes(systems, [(w, z) for w, z in plan if z], args.timeout)


if __name__ == "__main__":
    main()
