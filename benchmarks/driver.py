"""One measurement in a fresh process.

    python -m benchmarks.driver --system dask --workload flat --size 10000

Starts the cluster (timed separately), runs one trivial task to warm it,
starts the sampler process, runs the measured region, checks the answer and
prints one line ``BENCH_RESULT {json}`` before shutting the cluster down (so a
hung shutdown cannot lose the figure).  Libraries are imported lazily: only the
system under test needs to be installed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

RESULT_PREFIX = "BENCH_RESULT "
ROOT = Path(__file__).resolve().parent.parent


def with_root_on_path(env: dict[str, str]) -> dict[str, str]:
    """Worker processes must import ``benchmarks.tasks`` by reference."""
    paths = [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**env, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


class Sampler:
    """Handle on the sampler process (see ``sampler.py``)."""

    def __init__(self, system: str, worker_pids: list[int] | None, peaks_file: str) -> None:
        cmd = [sys.executable, "-m", "benchmarks.sampler", "--root", str(os.getpid()),
               "--system", system, "--worker-pids", ",".join(map(str, worker_pids or [])),
               "--peaks-file", peaks_file]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("sampler failed to start")

    def stop(self) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=30)  # closes stdin: the signal to stop
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def other_cpu_seconds() -> dict[int, float]:
    """CPU seconds used so far by every process outside this driver's tree.

    Taken before and after the measured region (never inside it): on a shared
    2-core machine, load from elsewhere skews figures, so it is reported.
    """
    import psutil  # a runtime dependency of tasknest; imported here to keep startup lean

    tree = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
    out: dict[int, float] = {}
    for p in psutil.process_iter(["cpu_times"]):
        ct = p.info["cpu_times"]
        if p.pid not in tree and ct is not None:
            out[p.pid] = ct.user + ct.system
    return out


def tree_cpu_seconds(skip: set[int]) -> dict[str, float]:
    """CPU seconds used so far by this driver and the cluster it started, by role
    (``driver``, ``scheduler``, ``worker``, ``other``: the processes' command lines).

    Less disturbed by other load than wall time, so ``--baseline`` compares it
    too.  Read from each thread's scheduler statistics (nanoseconds; the
    process's own counters tick every 10 ms, too coarse for a region of a
    fraction of a second).  ``skip``: the sampler, which is not the system under
    test.  A thread or process that ends inside the region is missed; the
    clusters and pools measured here outlive it.
    """
    import psutil

    me = psutil.Process()
    out = {"driver": 0.0, "scheduler": 0.0, "worker": 0.0, "other": 0.0}
    for p in [me, *me.children(recursive=True)]:
        if p.pid in skip:
            continue
        try:
            tids = os.listdir(f"/proc/{p.pid}/task")
            cmd = " ".join(p.cmdline()) if p.pid != me.pid else ""
        except (OSError, psutil.Error):     # ended between the listing and the read
            continue
        role = ("driver" if p.pid == me.pid else "scheduler" if "scheduler" in cmd
                else "worker" if "worker" in cmd else "other")
        for tid in tids:
            try:
                with open(f"/proc/{p.pid}/task/{tid}/schedstat") as f:
                    out[role] += int(f.read().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                continue
    return out


def last_line(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--system", required=True)
    ap.add_argument("--workload", required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--no-sampler", action="store_true")
    ap.add_argument("--peaks-file", default="", help="where the sampler saves peaks so far")
    a = ap.parse_args()
    os.environ.update(with_root_on_path(dict(os.environ)))

    from benchmarks.systems import UNSUPPORTED, NotSupported, open_system
    from benchmarks.workloads import WORKLOADS

    res: dict[str, Any] = {"system": a.system, "workload": a.workload, "size": a.size,
                           "sampler": not a.no_sampler}
    system = None
    sampler = None
    try:
        if (a.system, a.workload) in UNSUPPORTED:
            raise NotSupported(UNSUPPORTED[a.system, a.workload])
        workload = WORKLOADS.get(a.workload)
        if workload is None:
            raise ValueError(f"unknown workload {a.workload!r}")
        t0 = time.perf_counter()
        system = open_system(a.system)
        mod = getattr(system, "mod", None)
        res["imported_from"] = os.path.dirname(getattr(mod, "__file__", "") or "")
        system.start()
        res["start_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        system.warm()
        res["warm_s"] = time.perf_counter() - t0
        if not a.no_sampler:
            sampler = Sampler(a.system, system.worker_pids(), a.peaks_file)
        before = other_cpu_seconds()
        skip = {sampler.proc.pid} if sampler is not None else set()
        cpu0 = tree_cpu_seconds(skip)
        t0 = time.perf_counter()
        try:
            res["metrics"] = workload.measure(system, a.size)
        finally:
            region = time.perf_counter() - t0
            cpu1 = tree_cpu_seconds(skip)
            res["cpu_by"] = {k: round(cpu1[k] - cpu0[k], 5) for k in cpu1}
            res["cpu_s"] = round(sum(res["cpu_by"].values()), 5)
            if sampler is not None:
                res["peaks"] = sampler.stop()
            after = other_cpu_seconds()
            # Processes that started and ended inside the region are missed: a lower bound.
            other = sum(max(0.0, v - before.get(pid, 0.0)) for pid, v in after.items())
            if region >= 1.0:  # CPU times tick every 10 ms: shorter regions say nothing
                res["other_cpu_pct"] = round(100 * other / (region * (os.cpu_count() or 1)), 1)
        res["status"] = "ok"
    except NotSupported as e:
        res.update(status="n/a", error=str(e))
    except BaseException as e:  # every failure must be reported
        res.update(status="failed", error=last_line(e))
        traceback.print_exc()
    print(RESULT_PREFIX + json.dumps(res), flush=True)
    if system is not None:
        t0 = time.perf_counter()
        system.close()
        print(f"closed in {time.perf_counter() - t0:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
