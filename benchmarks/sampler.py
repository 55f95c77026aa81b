"""Resource sampler, run as its own process by the driver.

A thread inside the driver would compete with an in-process scheduler (dask
runs its scheduler in the driver), so this is a separate process.  Every
50 ms it walks the driver's descendants and keeps the peaks of: threads
summed over worker processes and the most in one of them, the number of
worker processes, their summed RSS, and the RSS summed over the driver and
all its descendants.  It prints ``ready`` after its first sample, samples until
its stdin closes, then prints one JSON line; every second it also saves the
peaks so far to ``--peaks-file``, for runs killed at the timeout.

On Linux one tick reads each ``/proc/PID/stat`` once (parent, threads and RSS
are all there): psutil's per-process calls cost about 15x more, which with
Ray's hundred-odd processes would keep a whole core busy.  psutil serves the
other platforms and reads command lines.

Which processes are workers: the pids the system named (``--worker-pids``);
for Ray, the processes the raylet starts for tasks (``ray::<name>``, or
``default_worker.py`` before they retitle themselves), excluding Ray's agents;
otherwise every descendant but multiprocessing helpers and a process whose
command line names a scheduler and no worker.  A would-be worker with a
would-be worker child is a supervisor (a nanny) and is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time
from typing import NamedTuple

import psutil

INTERVAL_S = 0.05
_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_PROC = os.path.isdir("/proc/self/task")


class Stat(NamedTuple):
    ppid: int
    name: str
    threads: int
    rss: int


def _read_all() -> dict[int, Stat]:
    """Parent, name, threads and RSS of every process on the machine."""
    out: dict[int, Stat] = {}
    if not _PROC:
        for p in psutil.process_iter(["ppid", "name", "num_threads", "memory_info"]):
            i = p.info
            if i["memory_info"] is not None:
                out[p.pid] = Stat(i["ppid"], i["name"] or "", i["num_threads"] or 0,
                                  i["memory_info"].rss)
        return out
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue  # exited since the listing
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        lp, rp = data.index(b"("), data.rindex(b")")
        rest = data[rp + 2:].split()
        out[int(entry)] = Stat(int(rest[1]), data[lp + 1:rp].decode(errors="replace"),
                               int(rest[17]), int(rest[21]) * _PAGE)
    return out


def _children(stats: dict[int, Stat]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, st in stats.items():
        children.setdefault(st.ppid, []).append(pid)
    return children


def _descendants(root: int, children: dict[int, list[int]]) -> list[int]:
    out, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


class Classifier:
    def __init__(self, system: str, worker_pids: set[int]) -> None:
        self.system = system
        self.worker_pids = worker_pids
        self.cache: dict[int, bool] = {}  # a settled process's role does not change

    def is_worker(self, pid: int, name: str) -> bool:
        if self.worker_pids:
            return pid in self.worker_pids
        role = self.cache.get(pid)
        if role is not None:
            return role
        if self.system == "ray":
            if name.startswith("ray::"):
                role = not name.endswith("Agent")
                self.cache[pid] = role
            else:
                # The raylet forks workers; one caught between fork, exec and
                # retitling may look like anything, so this is not cached.
                role = name == "python" and "default_worker.py" in _cmdline(pid)
            return role
        low = _cmdline(pid).lower()  # name-based guess, see the module docstring
        role = not any(h in low for h in _HELPERS) and ("worker" in low or "scheduler" not in low)
        self.cache[pid] = role
        return role


PEAK_KEYS = ("worker_threads", "worker_threads_max_proc", "workers", "worker_rss_mb",
             "all_rss_mb", "all_procs")


def _save(path: str, data: dict[str, object]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)  # a reader never sees half a file


def sample_until_stdin_closes(root: int, clf: Classifier, peaks_file: str) -> dict[str, object]:
    me = os.getpid()
    peaks = dict.fromkeys(PEAK_KEYS, 0.0)
    seen_workers: set[int] = set()
    samples = 0
    stdin = sys.stdin.fileno()
    deadline = time.monotonic()
    while True:
        stats = _read_all()
        children = _children(stats)
        tree = [p for p in [root, *_descendants(root, children)] if p != me and p in stats]
        found = {p for p in tree[1:] if clf.is_worker(p, stats[p].name)}
        # A supervisor (nanny) that looks like a worker is not one: keep the leaves.
        found = {p for p in found if not any(c in found for c in children.get(p, ()))}
        seen_workers |= found
        threads = max_threads = worker_rss = 0
        for pid in found:
            threads += stats[pid].threads
            max_threads = max(max_threads, stats[pid].threads)
            worker_rss += stats[pid].rss
        all_rss = sum(stats[p].rss for p in tree)
        workers = len(found)
        now_values = (threads, max_threads, workers, worker_rss / 2**20, all_rss / 2**20, len(tree))
        for key, value in zip(PEAK_KEYS, now_values, strict=True):
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
    out: dict[str, object] = {k: round(v, 1) for k, v in peaks.items()}
    out.update(samples=samples, interval_ms=INTERVAL_S * 1e3)
    if clf.system == "ray":
        out["ray_workers_not_descendants"] = _stray_ray_workers(seen_workers)
    return out


def _stray_ray_workers(seen: set[int]) -> int:
    """Ray workers alive on the machine that the walk never saw (should be 0)."""
    return sum(1 for pid, st in _read_all().items()
               if st.name.startswith("ray::") and not st.name.endswith("Agent")
               and pid not in seen)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=int, required=True)
    ap.add_argument("--system", required=True)
    ap.add_argument("--worker-pids", default="")
    ap.add_argument("--peaks-file", default="")
    a = ap.parse_args()
    pids = {int(x) for x in a.worker_pids.split(",") if x}
    result = sample_until_stdin_closes(a.root, Classifier(a.system, pids), a.peaks_file)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
