"""Resource sampler, run as its own process by the driver.

A thread inside the driver would compete with an in-process scheduler (dask
runs its scheduler in the driver), so this is a separate process.  Every
50 ms it walks the driver's descendants with psutil and keeps the peaks of:
threads summed over worker processes and the most in one of them, the number
of worker processes, their summed RSS, and the RSS summed over the driver and
all its descendants.  It prints ``ready`` after its first sample, samples until
its stdin closes, then prints one JSON line; every second it also saves the
peaks so far to ``--peaks-file``, for runs killed at the timeout.

Which processes are workers: the pids the system named (``--worker-pids``);
for Ray, the processes the raylet starts for tasks (``ray::<name>``, or
``default_worker.py`` before they retitle themselves), excluding Ray's agents;
otherwise every descendant but multiprocessing helpers and a process whose
command line names a scheduler and no worker.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time

import psutil

INTERVAL_S = 0.05
_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


class Classifier:
    def __init__(self, system: str, worker_pids: set[int]) -> None:
        self.system = system
        self.worker_pids = worker_pids
        self.cache: dict[int, bool] = {}  # a process's role does not change

    def is_worker(self, p: psutil.Process) -> bool:
        if self.worker_pids:
            return p.pid in self.worker_pids
        role = self.cache.get(p.pid)
        if role is None:
            name = p.name()
            cmd = " ".join(p.cmdline())
            if self.system == "ray":
                role = (name.startswith("ray::") and not name.endswith("Agent")) or (
                    "default_worker.py" in cmd
                )
            else:  # no pids given: name-based guess, see the module docstring
                low = cmd.lower()
                role = not any(h in cmd for h in _HELPERS) and (
                    "worker" in low or "scheduler" not in low)
            # Ray forks workers from the raylet; a process caught between fork,
            # exec and retitling may look like anything, so cache only settled ones.
            if self.system != "ray" or name.startswith("ray::"):
                self.cache[p.pid] = role
        return role


def _report(peaks: dict[str, float], samples: int, clf: Classifier,
            seen_workers: set[int]) -> dict[str, object]:
    out: dict[str, object] = {k: round(v, 1) for k, v in peaks.items()}
    out["samples"] = samples
    out["interval_ms"] = INTERVAL_S * 1e3
    if clf.system == "ray":
        out["ray_workers_not_descendants"] = _stray_ray_workers(seen_workers)
    return out


def _save(path: str, data: dict[str, object]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)  # a reader never sees half a file


def sample_forever(root_pid: int, clf: Classifier, peaks_file: str) -> dict[str, object]:
    root = psutil.Process(root_pid)
    me = os.getpid()
    peaks = dict.fromkeys(
        ("worker_threads", "worker_threads_max_proc", "workers", "worker_rss_mb",
         "all_rss_mb", "all_procs"), 0.0)
    seen_workers: set[int] = set()
    samples = 0
    stdin = sys.stdin.fileno()
    deadline = time.monotonic()
    while True:
        threads = max_threads = workers = 0
        worker_rss = all_rss = 0
        procs = [root] + [p for p in root.children(recursive=True) if p.pid != me]
        for p in procs:
            try:
                with p.oneshot():
                    rss = p.memory_info().rss
                    all_rss += rss
                    if p is not root and clf.is_worker(p):
                        n = p.num_threads()
                        threads += n
                        max_threads = max(max_threads, n)
                        workers += 1
                        worker_rss += rss
                        seen_workers.add(p.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue  # exited between the walk and the read
        for key, value in (("worker_threads", threads), ("worker_threads_max_proc", max_threads),
                           ("workers", workers), ("worker_rss_mb", worker_rss / 2**20),
                           ("all_rss_mb", all_rss / 2**20), ("all_procs", len(procs))):
            peaks[key] = max(peaks[key], value)
        samples += 1
        if samples == 1:
            print("ready", flush=True)
        if peaks_file and samples % 20 == 0:
            # Kept on disk so a run killed at the timeout still shows its peaks.
            _save(peaks_file, {k: round(v, 1) for k, v in peaks.items()})
        # Keep a 50 ms grid; if a walk overran a tick, skip the missed ticks
        # rather than sampling back to back (which would steal a core).
        now = time.monotonic()
        deadline += INTERVAL_S
        if deadline < now:
            deadline = now + INTERVAL_S
        ready, _, _ = select.select([stdin], [], [], deadline - now)
        if ready and not os.read(stdin, 4096):
            break  # stdin closed: the measured region is over
    return _report(peaks, samples, clf, seen_workers)


def _stray_ray_workers(seen: set[int]) -> int:
    """Ray workers alive on the machine that the walk never saw (should be 0)."""
    stray = 0
    for p in psutil.process_iter(["name"]):
        name = p.info["name"] or ""
        if name.startswith("ray::") and not name.endswith("Agent") and p.pid not in seen:
            stray += 1
    return stray


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=int, required=True)
    ap.add_argument("--system", required=True)
    ap.add_argument("--worker-pids", default="")
    ap.add_argument("--peaks-file", default="")
    a = ap.parse_args()
    pids = {int(x) for x in a.worker_pids.split(",") if x}
    print(json.dumps(sample_forever(a.root, Classifier(a.system, pids), a.peaks_file)), flush=True)


if __name__ == "__main__":
    main()
