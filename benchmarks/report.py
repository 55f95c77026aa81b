"""Render docs/benchmarks.md from the collected results.

The section between ``<!-- breakdown:start -->`` and ``<!-- breakdown:end -->``
is written by hand and carried over from the existing file on every run.
"""

from __future__ import annotations

import datetime
import os
import platform
from importlib import metadata as importlib_metadata
from typing import Any

import psutil

from benchmarks.systems import SYSTEMS
from benchmarks.workloads import WORKLOADS, Workload

START, END = "<!-- breakdown:start -->", "<!-- breakdown:end -->"
PLACEHOLDER = "_Not written yet: where the time of one submit/result hop goes in tasknest._"
OTHER_LOAD_PCT = 5.0  # flag cells where the rest of the machine was this busy
PACKAGES = ("tasknest", "dask", "distributed", "ray", "tornado", "msgpack", "cloudpickle",
            "psutil", "uvloop", "pyinstrument")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(pkg: str) -> str:
    try:
        return importlib_metadata.version(pkg)
    except importlib_metadata.PackageNotFoundError:
        return "not installed"


def metadata(**extra: Any) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "os": platform.platform(terse=True),
        },
        "versions": {p: _version(p) for p in PACKAGES},
        **extra,
    }


def _ratio(w: Workload, tn: dict[str, Any], rival: dict[str, Any]) -> str:
    """How tasknest compares with this rival on the workload's primary figure."""
    if rival["status"] == "n/a":
        return "—"
    if tn["status"] != "ok":
        return f"tasknest {tn['status']}"
    if rival["status"] != "ok":
        return f"rival {rival['status']}"
    a, b = tn["metrics"][w.primary.metric], rival["metrics"][w.primary.metric]
    r = a / b if w.higher_is_better else b / a
    return f"{r:.1f}x faster" if r >= 1 else f"{r:.2f}x (slower)"


def _peaks(s: dict[str, Any]) -> tuple[str, str]:
    p = s.get("peaks")
    if not p:
        return "—", "—"
    at_least = "≥ " if s.get("peaks_partial") else ""  # sampled until the run was killed
    threads = f"{at_least}{p['worker_threads']:,.0f} ({p['worker_threads_max_proc']:,.0f})"
    rss = (f"{at_least}{p['worker_rss_mb']:,.0f} ({p['workers']:.0f}) / "
           f"{p['all_rss_mb']:,.0f} ({p['all_procs']:.0f})")
    return threads, rss


def _status_text(s: dict[str, Any]) -> str:
    if s["status"] == "n/a":
        return f"n/a ({'; '.join(s['errors'])})"
    err = s["errors"][0].replace("|", "\\|") if s["errors"] else ""  # keep the table intact
    return f"**{s['status']}**" + (f": {err}" if err and s["status"] == "failed" else "")


def _table(ws: list[Workload], cells: dict[tuple[str, str, int], dict[str, Any]],
           systems: list[str]) -> list[str]:
    first = ws[0]
    cols = [first.primary, *first.extra]
    variant = len(ws) > 1
    head = [*(["variant"] if variant else []), "system", first.size_label,
            *[c.header for c in cols],
            "tasknest vs this", "worker threads (max/proc)", "RSS MiB: workers (n) / all (n)",
            "cluster start s", "runs ok"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes: list[str] = []
    for w in ws:
        sizes = sorted({size for (wn, _, size) in cells if wn == w.name})
        for size in sizes:
            tn = cells.get((w.name, "tasknest", size))
            for sysname in systems:
                s = cells.get((w.name, sysname, size))
                if s is None:
                    continue
                row = ([w.name] if variant else []) + [sysname, f"{size:,}"]
                if s["status"] == "ok":
                    row += [format(s["metrics"][c.metric], c.fmt) for c in cols]
                else:
                    row += [_status_text(s)] + ["—"] * (len(cols) - 1)
                ratio = "—" if sysname == "tasknest" or tn is None else _ratio(w, tn, s)
                threads, rss = _peaks(s)
                start = f"{s['start_s']:.2f}" if "start_s" in s else "—"
                row += [ratio, threads, rss, start, f"{s['ok']}/{s['runs']}"]
                lines.append("| " + " | ".join(row) + " |")
                where = f"- {sysname}, {w.name} {w.size_label} {size:,}:"
                if s.get("peaks", {}).get("ray_workers_not_descendants"):
                    notes.append(f"{where} some Ray workers were outside the driver's process "
                                 "tree; peaks may be low")
                if s.get("other_cpu_pct", 0) >= OTHER_LOAD_PCT:
                    notes.append(f"{where} other processes on the machine used "
                                 f"{s['other_cpu_pct']:.0f}% of its CPU during the measured "
                                 "region (median of runs): figures may be pessimistic")
                if s["status"] == "ok" and s["ok"] < s["runs"]:
                    bad = ", ".join(x for x in s["statuses"] if x != "ok")
                    notes.append(f"{where} runs not counted: {bad}"
                                 + (f" ({'; '.join(s['errors'])})" if s["errors"] else ""))
    return lines + ([""] + notes if notes else [])


def _breakdown(existing: str) -> str:
    i, j = existing.find(START), existing.find(END)
    if i != -1 and j > i:
        return existing[i:j + len(END)]
    return f"{START}\n{PLACEHOLDER}\n{END}"


def render(meta: dict[str, Any], results: list[dict[str, Any]], existing: str = "") -> str:
    cells = {(c["workload"], c["system"], c["size"]): c["summary"] for c in results}
    systems = [s for s in SYSTEMS if s in meta["systems"]]
    m = meta["machine"]
    sampler = ("on (a separate process, every 50 ms, for every system alike)" if meta["sampler"]
               else "off for every system")
    out = [
        "# Benchmarks",
        "",
        f"Generated by `benchmarks/run.py` on {meta['date']}; "
        "edit only the per-hop section by hand.",
        "",
        "The same workloads on tasknest, dask.distributed and Ray, in one invocation, on one "
        "machine, with one cluster shape: 2 worker processes x 1 thread "
        "(dask: `LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`; "
        "Ray: `ray.init(num_cpus=2)`). Each measurement runs in a fresh driver process: the "
        "cluster is started (its start time is reported separately), one trivial task warms it, "
        f"and only then the measured region starts. Figures are the median of {meta['runs']} "
        f"runs. A run over {meta['timeout']:.0f} s is killed and reported as a timeout; a crash "
        f"or a wrong answer as failed. Resource sampler: {sampler}.",
        "",
        "**Rivals run under their defaults**, as a user gets them: dask's worker profiler (on by "
        "default, it walks every thread's stack every 10 ms) stays on, and dask keeps one OS "
        "thread per task blocked in `worker_client`; Ray starts one worker process per task "
        "blocked in `ray.get`. Ray has no deduplication of identical calls, so `fib_dedup` is "
        "n/a for it.",
        "",
        "Columns: *tasknest vs this* compares the first figure column (the rival's time over "
        "tasknest's, or tasknest's rate over the rival's). *worker threads*: peak of the "
        "threads summed over the worker processes, and in brackets the most in one of them. "
        "*RSS*: peak summed resident memory of the worker processes (their peak count), then "
        "of the driver and all its descendants (scheduler, Ray's daemons; their peak count). "
        "RSS counts pages shared between processes once in each of them. "
        "\"≥\" marks peaks of runs killed at the timeout, sampled until the kill. Ray's "
        "workers are not children of the driver but of the raylet that `ray.init` starts "
        "under it; the sampler finds them there and checks at the end of each run that no "
        "Ray worker on the machine escaped the walk.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {m['cpu']} |",
        f"| cores | {m['cores']} |",
        f"| RAM | {m['ram_gib']} GiB |",
        f"| Python | {m['python']} |",
        f"| OS | {m['os']} |",
        "",
        "## Versions",
        "",
        "| package | version |",
        "|---|---|",
        *[f"| {p} | {v} |" for p, v in meta["versions"].items()],
        "",
        "## Command",
        "",
        "```",
        meta["command"],
        "```",
        "",
        "## Results",
    ]
    seen_groups: set[str] = set()
    for w in WORKLOADS.values():
        key = w.group or w.name
        if key in seen_groups or not any(k[0] == w.name for k in cells):
            continue
        seen_groups.add(key)
        group = [x for x in WORKLOADS.values() if (x.group or x.name) == key
                 and any(k[0] == x.name for k in cells)]
        title = w.title if len(group) == 1 else f"{key}: in a worker vs gathered to the driver"
        out += ["", f"### {title}", ""] + _table(group, cells, systems)
    out += ["", "## Per-hop cost breakdown", "", _breakdown(existing), ""]
    return "\n".join(out)


if __name__ == "__main__":  # re-render saved results: python -m benchmarks.report IN.json OUT.md
    import json
    import sys
    from pathlib import Path

    data = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.write_text(render(data["meta"], data["cells"], out.read_text() if out.exists() else ""))
