"""Recovery: what surviving a scheduler's death costs, in time and in throughput.

    python -m benchmarks.recovery [--kills 20] [--held 10000] [--flat 10000]
                                  [--fanout 5000] [--rounds 5] [--no-dashboard]

prints its tables in Markdown (for docs/benchmarks.md and docs/resilience.md);
``--kills 0`` measures the journal's cost alone.

1. Recovery time. On a LocalCluster (2 workers x 1 thread, the state dir and the
   dashboard on, as by default) holding ``--held`` results, the scheduler is SIGKILLed
   ``--kills`` times. Right after each kill the client submits a task (with an
   input, so it goes through the scheduler) that returns the time it started; SIGKILL → that start is the recovery time (it covers the
   restart of the process, the journal's replay, every worker's resume, the
   client's reconnection and the dispatch). Also SIGKILL → the new process listening
   (LocalCluster read its address). p50 and p99 (the nearest rank).
2. The journal's cost. Two clusters side by side, state dir on and off, the same
   rounds interleaved (the order alternates) so that the machine's load falls on both:
   ``flat`` (``gather(map(inc, range(n)))`` from the client) and ``fanout`` (one task
   maps ``inc`` over n numbers from inside its worker, run as many times as it takes
   to make as many tasks as flat), median tasks/s of each, and the scheduler's CPU
   time per task (user + system), which a loaded machine disturbs less. Each fanout
   maps numbers no earlier one did, so that every child is a claim the scheduler
   journals: with the same numbers, a repetition found most of the previous one's
   results still held (their release on its way) and claimed a quarter to a third of
   its children, at a rate that swung by 3x with that race.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import time
from typing import Any

import psutil

from tasknest import Client, LocalCluster
from benchmarks import tasks


def started_at(_: Any) -> float:
    return time.time()


def _dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered))) - 1))]


def recovery_times(kills: int, held: int, dashboard: bool = True,
                   timeout: float = 120) -> dict[str, Any]:
    """SIGKILL → first task dispatched again, and SIGKILL → listening, over ``kills``."""
    dispatched: list[float] = []
    listening: list[float] = []
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard=dashboard,
                      dashboard_address="127.0.0.1:0") as cl, Client(cl) as c:
        kept = c.map(tasks.inc, range(held))          # results held through every kill
        c.gather(kept)
        for _ in range(kills):
            before = cl.scheduler_restarts
            pid = cl.scheduler_proc.pid
            t0 = time.time()
            os.kill(pid, signal.SIGKILL)
            while not _dead(pid):
                time.sleep(0.0005)
            # a task with an input goes through the scheduler (one without may go
            # straight to a worker): the client keeps it until it has reconnected
            future = c.submit(started_at, kept[len(dispatched) % held], pure=False)
            deadline = time.monotonic() + timeout
            while cl.scheduler_restarts == before:       # (for the listening figure)
                if time.monotonic() > deadline:
                    raise RuntimeError("the scheduler was not restarted")
                time.sleep(0.001)
            listening.append(time.time() - t0)
            dispatched.append(future.result(timeout=timeout) - t0)
            del future
        assert c.gather(kept) == list(range(1, held + 1)), "a held result changed"
    return {"kills": kills, "held": held, "dispatched": dispatched, "listening": listening}


def journal_cost(flat_n: int, fanout_n: int, rounds: int) -> dict[str, Any]:
    """Median tasks/s of flat and fanout with the state dir on and off (interleaved)."""
    rates: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}     # the scheduler's CPU µs per task
    clusters = {"on": LocalCluster(n_workers=2, threads_per_worker=1, dashboard=False,
                                   state_dir=True),
                "off": LocalCluster(n_workers=2, threads_per_worker=1, dashboard=False,
                                    state_dir=None)}
    try:
        clients = {k: Client(cl, set_as_default=False) for k, cl in clusters.items()}
        scheds = {k: psutil.Process(cl.scheduler_proc.pid) for k, cl in clusters.items()}

        def used(mode: str) -> float:
            t = scheds[mode].cpu_times()
            return t.user + t.system
        # fanout's next numbers (see above), above flat's (inc(i) is one key in both)
        start = {mode: flat_n for mode in clusters}

        def fanout(mode: str, n: int) -> None:
            first = start[mode]
            start[mode] += n
            total = clients[mode].submit(tasks.fanout, n, "tasknest", first, pure=False).result()
            assert total == n * (2 * first + n + 1) // 2
        for mode, c in clients.items():                  # warm-up
            c.gather(c.map(tasks.inc, range(min(flat_n, 1000))))
            fanout(mode, min(fanout_n, 500))
        for r in range(rounds):
            for mode in (("on", "off") if r % 2 == 0 else ("off", "on")):
                c = clients[mode]
                c0, t0 = used(mode), time.perf_counter()
                assert c.gather(c.map(tasks.inc, range(flat_n)))[-1] == flat_n
                rates.setdefault(("flat", mode), []).append(flat_n / (time.perf_counter() - t0))
                cpu.setdefault(("flat", mode), []).append((used(mode) - c0) / flat_n * 1e6)
                reps = max(1, flat_n // fanout_n)      # (as many tasks as flat's)
                c0, t0 = used(mode), time.perf_counter()
                for _ in range(reps):
                    fanout(mode, fanout_n)
                rates.setdefault(("fanout", mode), []).append(
                    reps * fanout_n / (time.perf_counter() - t0))
                cpu.setdefault(("fanout", mode), []).append(
                    (used(mode) - c0) / (reps * fanout_n) * 1e6)
        for c in clients.values():
            c.close()
    finally:
        for cl in clusters.values():
            cl.close()
    return {"flat": flat_n, "fanout": fanout_n, "rounds": rounds, "rates": rates, "cpu": cpu}


def report_recovery(res: dict[str, Any]) -> str:
    d, li = res["dispatched"], res["listening"]
    return ("| measure | p50 s | p99 s | min s | max s |\n|---|---|---|---|---|\n"
            + "".join(f"| SIGKILL → {name} | {_nearest_rank(v, 50):.3f} | "
                      f"{_nearest_rank(v, 99):.3f} | {min(v):.3f} | {max(v):.3f} |\n"
                      for name, v in (("first task dispatched again", d),
                                      ("restarted scheduler listening", li)))
            + f"\n({res['kills']} kills, {res['held']:,} results held)")


def report_cost(res: dict[str, Any]) -> str:
    out = ["| workload | n | state dir on, tasks/s | off, tasks/s | on vs off | "
           "scheduler CPU µs/task, on | off | on vs off |",
           "|---|---|---|---|---|---|---|---|"]
    for w in ("flat", "fanout"):
        on = statistics.median(res["rates"][(w, "on")])
        off = statistics.median(res["rates"][(w, "off")])
        con = statistics.median(res["cpu"][(w, "on")])
        coff = statistics.median(res["cpu"][(w, "off")])
        out.append(f"| {w} | {res[w]:,} | {on:,.0f} | {off:,.0f} | "
                   f"{(on / off - 1) * 100:+.1f}% | {con:.1f} | {coff:.1f} | "
                   + (f"{(con / coff - 1) * 100:+.1f}% |" if coff else "– |"))
    out.append(f"\n(medians of {res['rounds']} interleaved rounds)")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--held", type=int, default=10_000)
    ap.add_argument("--flat", type=int, default=10_000)
    ap.add_argument("--fanout", type=int, default=5_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-dashboard", action="store_true")
    args = ap.parse_args(argv)
    if args.kills:            # (--kills 0: the journal's cost alone)
        print(report_recovery(recovery_times(args.kills, args.held, not args.no_dashboard)),
              flush=True)
        print()
    print(report_cost(journal_cost(args.flat, args.fanout, args.rounds)), flush=True)


if __name__ == "__main__":
    main()
