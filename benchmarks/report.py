"""Render docs/benchmarks.md from the collected results.

The section between ``<!-- breakdown:start -->`` and ``<!-- breakdown:end -->``
is written by hand and carried over from the existing file on every run.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from importlib import metadata as importlib_metadata
from typing import Any

import psutil

from benchmarks.calibrate import calibrate
from benchmarks.sampler import PEAK_KEYS
from benchmarks.systems import SYSTEMS
from benchmarks.workloads import WORKLOADS, Workload

START, END = "<!-- breakdown:start -->", "<!-- breakdown:end -->"
PLACEHOLDER = "_Not written yet: where the time of one submit/result hop goes in tasknest._"
NAMES = {"tasknest": "tasknest", "dask": "dask.distributed", "ray": "Ray"}
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


def _calibration_rows(cal: dict[str, float] | None) -> list[str]:
    """What this machine's speed was measured at (``benchmarks.calibrate``): figures from
    two machines compare only as far as these agree."""
    if not cal:
        return []
    return [f"| Python speed: empty loop of 2,000,000 iterations | {cal['python_loop_ms']:.0f} ms |",
            f"| wake-up: one byte to another process and back (loopback TCP) | "
            f"{cal['process_pingpong_us']:.0f} µs |",
            f"| wake-up: a hand-off to another thread and back (Condition) | "
            f"{cal['thread_pingpong_us']:.0f} µs |"]


def metadata(**extra: Any) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "os": platform.platform(terse=True),
            "calibration": calibrate(),
        },
        "versions": {p: _version(p) for p in PACKAGES},
        **extra,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every metric and peak over the runs.

    A timeout or failure counts as the slowest possible run, so unless more
    than half the runs finished, the median run is the failure and the cell
    reports it; what the finished runs measured goes into ``ok_metrics``.
    """
    ok = [r for r in runs if r["status"] == "ok"]
    bad = [r["status"] for r in runs if r["status"] != "ok"]
    out: dict[str, Any] = {"runs": len(runs), "ok": len(ok),
                           "statuses": [r["status"] for r in runs],
                           "errors": sorted({r["error"] for r in runs if r.get("error")})}
    if len(ok) * 2 <= len(runs):
        out["status"] = max(bad, key=bad.count)
        if ok:
            out["ok_metrics"] = _medians([r["metrics"] for r in ok])
        peaks = [r["peaks"] for r in runs if r.get("peaks")]
        if peaks:  # killed runs were sampled until the kill: a lower bound
            out["peaks"] = {k: max(p.get(k, 0) for p in peaks) for k in PEAK_KEYS if k in peaks[0]}
            out["peaks_partial"] = True
        return out
    out["status"] = "ok"
    out["metrics"] = _medians([r["metrics"] for r in ok])
    out["peaks"] = _medians([r["peaks"] for r in ok if r.get("peaks")])
    out["start_s"] = statistics.median(r["start_s"] for r in ok)
    cpu = [r["cpu_s"] for r in ok if "cpu_s" in r]
    if cpu:
        out["cpu_s"] = statistics.median(cpu)
    other = [r["other_cpu_pct"] for r in ok if "other_cpu_pct" in r]
    if other:
        out["other_cpu_pct"] = statistics.median(other)
    return out


def _medians(dicts: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for d in dicts for k in d})
    return {k: statistics.median(d[k] for d in dicts if k in d) for k in keys}


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
    return f"{r:.3g}x faster" if r >= 1 else f"{r:.2g}x (slower)"


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
                if s.get("ok_metrics"):
                    fig = format(s["ok_metrics"][w.primary.metric], w.primary.fmt)
                    notes.append(f"{where} only {s['ok']} of {s['runs']} runs finished "
                                 f"(median {fig} {w.primary.header}); the others: "
                                 + ", ".join(x for x in s["statuses"] if x != "ok"))
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
        f"The same workloads on {', '.join(NAMES[s] for s in systems)}, in one invocation, on "
        "one machine, with one cluster shape: 2 worker processes x 1 thread "
        "(dask: `LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`; "
        "Ray: `ray.init(num_cpus=2)`). Each measurement runs in a fresh driver process: the "
        "cluster is started (its start time is reported separately), one trivial task warms it, "
        "and only then the measured region starts; a region shorter than 1 s (latency excepted: "
        "its 300 round trips are one region) is repeated on the same cluster until 1 s has "
        "passed (at most 5 times) and the run reports its median, "
        "so slow systems run it once and fast ones are not judged on one 0.1 s sample; "
        "each repetition starts once the workers hold no result (waited for outside the timed "
        "region), so that a repeated pure call is computed again, not found in memory. "
        "Before each measurement the runner waits "
        f"(up to 30 s) until the whole machine's CPU use is under 10 %, so that no run pays for "
        f"the previous one's winding down. Figures are the median of {meta['runs']} "
        f"runs. A run over {meta['timeout']:.0f} s is killed and reported as a timeout; a crash "
        f"or a wrong answer as failed. Resource sampler: {sampler}."
        + ("" if "tasknest" in systems else " tasknest was not part of this run."),
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
        *_calibration_rows(m.get("calibration")),
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
        "",
        "![time of dask.distributed and Ray relative to tasknest, per workload]"
        "(img/benchmarks.png)",
        "",
        "(`python -m benchmarks.plot` draws it from `benchmarks/results/latest.json`.)",
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
    i, j = existing.find("<!-- data:start -->"), existing.find("<!-- data:end -->")
    if i != -1 and j > i:       # the data suite's section (benchmarks/data.py) stays
        out += [existing[i:j + len("<!-- data:end -->")], ""]
    return "\n".join(out)


if __name__ == "__main__":  # re-render saved results: python -m benchmarks.report IN.json OUT.md
    import json
    import sys
    from pathlib import Path

    data = json.loads(Path(sys.argv[1]).read_text())
    for cell in data["cells"]:
        cell["summary"] = summarize(cell["runs"])
    out = Path(sys.argv[2])
    out.write_text(render(data["meta"], data["cells"], out.read_text() if out.exists() else ""))
