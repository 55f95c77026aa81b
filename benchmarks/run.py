"""Run the workloads on tasknest, dask.distributed and Ray; write the report.

    python -m benchmarks.run [--systems tasknest,dask,ray] [--workloads ...]
                             [--runs 3] [--quick] [--timeout 290]
                             [--output docs/benchmarks.md] [--baseline REV]

Every measurement runs in a fresh driver process (``benchmarks.driver``).  A
driver that exceeds the timeout is killed with everything it started and is
reported as "timeout"; one that crashes is reported as "failed" with the last
line of its error.  Nothing is left out of the report.

``--baseline REV`` measures tasknest as it was at git revision REV beside this
tree, in the same invocation, runs interleaved (``tasknest@REV`` is one more
system: its drivers import REV's ``src``, exported with ``git archive``), and
writes a before/after table (medians, change in percent) instead of the rivals'
report: the check that a refactoring left every workload as fast as it was.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks import report
from benchmarks.driver import RESULT_PREFIX, ROOT, with_root_on_path
from benchmarks.systems import SYSTEMS
from benchmarks.workloads import WORKLOADS, select


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """Kill a driver that has not been reaped yet, with all it started.

    Ray's workers put themselves in process groups of their own, so killing
    the driver's group is not enough: collect the descendants first, while
    the tree still hangs together (and the driver's pid is still ours).
    """
    try:
        procs = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        procs = []
    _kill_group(proc.pid)
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)
    proc.wait()


JSON_DEFAULT = "benchmarks/results/latest.json"
QUIET_CPU = 10.0       # percent of the whole machine
QUIET_WAIT = 30.0      # seconds at most


def wait_quiet(limit: float = QUIET_CPU, deadline: float = QUIET_WAIT) -> float:
    """Wait until the machine is idle, so that no measurement pays for the previous
    one's stragglers (Ray's daemons and dask's nannies take seconds to wind down).
    Returns the CPU percent last seen (above ``limit`` only if the deadline passed)."""
    end = time.monotonic() + deadline
    while True:
        busy = psutil.cpu_percent(interval=0.3)
        if busy < limit or time.monotonic() > end:
            return busy


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def run_one(system: str, workload: str, size: int, timeout: float,
            sampler: bool = True, quiet_wait: float = QUIET_WAIT,
            baselines: dict[str, str] | None = None) -> dict[str, Any]:
    """One measurement in a fresh process; always returns a result record.
    ``baselines``: system name (``tasknest@REV``) -> the ``src`` it imports."""
    env = with_root_on_path(dict(os.environ))
    if baselines and system in baselines:     # the same driver and tasks, REV's tasknest
        env["PYTHONPATH"] = os.pathsep.join([baselines[system], env["PYTHONPATH"]])
    cmd = [sys.executable, "-m", "benchmarks.driver", "--system", system.split("@")[0],
           "--workload", workload, "--size", str(size)]
    base: dict[str, Any] = {"system": system, "workload": workload, "size": size,
                            "idle_cpu_before": wait_quiet(deadline=quiet_wait)}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.TemporaryDirectory() as tmp:
        peaks_file = os.path.join(tmp, "peaks.json")
        cmd += ["--peaks-file", peaks_file] if sampler else ["--no-sampler"]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env,
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except BaseException as e:  # the timeout, or Ctrl-C: take the whole tree down
            _kill_tree(proc)
            if not isinstance(e, subprocess.TimeoutExpired):
                raise
            timed_out = True
        wall = time.perf_counter() - t0
        _kill_group(proc.pid)  # stragglers left in the driver's process group
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
        partial = json.loads(Path(peaks_file).read_text()) if os.path.exists(peaks_file) else None
    found = [ln for ln in stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if found:
        res = {**base, **json.loads(found[-1][len(RESULT_PREFIX):])}
        if timed_out:
            res["note"] = "killed at the timeout while shutting down"
    elif timed_out:
        res = {**base, "status": "timeout", "error": f"killed after {timeout:.0f} s"}
    else:
        res = {**base, "status": "failed",
               "error": f"exit code {proc.returncode}: {_last_line(stderr)}"}
    if partial is not None and "peaks" not in res:
        res["peaks"], res["peaks_partial"] = partial, True  # peaks until it was killed
    res["wall_s"] = wall
    res["system"] = system
    if baselines and system in baselines and res.get("status") == "ok" and \
            not res.get("imported_from", "").startswith(baselines[system]):
        res.update(status="failed", error=f"imported tasknest from {res.get('imported_from')}")
    return res


def export_revision(rev: str, into: str) -> str:
    """REV's ``src`` tree written under ``into`` (git archive); returns its path."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev, "src"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return os.path.join(into, "src")


def _paired(now: list[dict[str, Any]], before: list[dict[str, Any]], get: Any) -> float | None:
    """Median of run i's ratio now/before: the runs were interleaved, so each pair
    saw the same moment of the machine, and drift between pairs cancels out."""
    ratios = [a / b for x, y in zip(now, before)
              if x["status"] == y["status"] == "ok"
              and (a := get(x)) is not None and (b := get(y)) is not None and a > 0 and b > 0]
    return statistics.median(ratios) if ratios else None


def baseline_table(cells: list[dict[str, Any]], base: str) -> list[str]:
    """This tree against ``base`` (tasknest@REV), workload by workload: the medians,
    the median of the interleaved pairs, and the CPU seconds of the driver and its
    cluster (which load on the machine disturbs less than wall time)."""
    by = {(c["workload"], c["size"], c["system"]): c for c in cells}
    lines = [f"| workload | size | {base} | this tree | change | change, paired "
             "| CPU s, before → now | CPU change, paired |", "|---|---|---|---|---|---|---|---|"]
    for (wname, size, system), cell in by.items():
        if system != "tasknest":
            continue
        w, old = WORKLOADS[wname], by.get((wname, size, base))
        now, before = cell["summary"], old and old["summary"]
        if before is None or now["status"] != "ok" or before["status"] != "ok":
            lines.append(f"| {wname} | {size:,} | {before and before['status']} | "
                         f"{now['status']} | — | — | — | — |")
            continue
        m = w.primary.metric
        a, b = now["metrics"][m], before["metrics"][m]
        faster = (a / b - 1) if w.higher_is_better else (b / a - 1)
        pair = _paired(cell["runs"], old["runs"], lambda r: r["metrics"].get(m))
        if pair is not None:
            pair = (pair - 1) if w.higher_is_better else (1 / pair - 1)
        cpu = _paired(cell["runs"], old["runs"], lambda r: r.get("cpu_s"))
        cpu_change = "—" if cpu is None else f"{1 / cpu - 1:+.1%}"
        cpu_s = (f"{before['cpu_s']:.3f} → {now['cpu_s']:.3f}"
                 if "cpu_s" in now and "cpu_s" in before else "—")
        lines.append(f"| {wname} | {size:,} | {format(b, w.primary.fmt)} | "
                     f"{format(a, w.primary.fmt)} {w.primary.header} | "
                     f"{faster:+.1%} | {'—' if pair is None else f'{pair:+.1%}'} | "
                     f"{cpu_s} | {cpu_change} |")
    lines.append("")
    lines.append("A positive change is this tree faster (or using less CPU), a negative one slower.")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated")
    ap.add_argument("--workloads", default=",".join(w for w in WORKLOADS if not WORKLOADS[w].group)
                    + ",process_all",
                    help="comma-separated; process_all selects both of its variants")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="only the smallest size of each workload")
    ap.add_argument("--timeout", type=float, default=290.0, help="seconds per measurement")
    ap.add_argument("--output", default="docs/benchmarks.md")
    ap.add_argument("--json", default=JSON_DEFAULT)
    ap.add_argument("--baseline", metavar="REV", default="",
                    help="also run tasknest at git revision REV, interleaved; report the change")
    ap.add_argument("--no-sampler", action="store_true",
                    help="turn the resource sampler off (for every system alike)")
    a = ap.parse_args(argv)
    systems = [s for s in a.systems.split(",") if s]
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r}")
    workloads = select([w for w in a.workloads.split(",") if w])
    baselines: dict[str, str] = {}
    if a.baseline:
        if "tasknest" not in systems:
            ap.error("--baseline compares tasknest with itself: keep tasknest in --systems")
        tmp = tempfile.mkdtemp(prefix="tasknest-baseline-")
        atexit.register(shutil.rmtree, tmp, True)
        base = f"tasknest@{a.baseline}"
        baselines[base] = export_revision(a.baseline, tmp)
        systems = [base, *systems]

    args = argv if argv is not None else sys.argv[1:]
    meta = report.metadata(
        command=shlex.join(["python", "-m", "benchmarks.run", *args]),
        runs=a.runs, timeout=a.timeout, sampler=not a.no_sampler, systems=systems)
    json_path = Path(a.json if not a.baseline or a.json != JSON_DEFAULT
                     else "benchmarks/results/baseline.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)

    plan = [(w, size) for w in workloads for size in ((w.quick,) if a.quick else w.sizes)]
    total = len(plan) * len(systems) * a.runs
    cells: list[dict[str, Any]] = []
    done = 0
    for w, size in plan:
        by_system: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
        for i in range(a.runs):
            for s in systems:  # interleave systems so drift hits all alike
                if by_system[s] and by_system[s][0]["status"] == "n/a":
                    continue  # the system has no such feature: once is enough
                done += 1
                r = run_one(s, w.name, size, a.timeout, sampler=not a.no_sampler,
                            baselines=baselines)
                by_system[s].append(r)
                fig = r.get("metrics", {}).get(w.primary.metric)
                shown = f"{w.primary.header}={fig:{w.primary.fmt}}" if fig is not None \
                    else r.get("error", "")
                print(f"[{done}/{total}] {s:8} {w.name} {w.size_label}={size} run {i + 1}: "
                      f"{r['status']} {shown} ({r['wall_s']:.1f} s)", file=sys.stderr, flush=True)
        for s, runs in by_system.items():
            cells.append({"system": s, "workload": w.name, "size": size,
                          "summary": report.summarize(runs), "runs": runs})
        # Saved after every workload, so an interrupted session keeps what it measured.
        json_path.write_text(json.dumps({"meta": meta, "cells": cells}, indent=1) + "\n")

    if baselines:
        table = "\n".join(baseline_table(cells, next(iter(baselines))))
        print(table)
        Path(json_path.with_suffix(".md")).write_text(
            f"`{meta['command']}` ({a.runs} runs each, interleaved)\n\n{table}\n")
        print(f"wrote {json_path} and {json_path.with_suffix('.md')}", file=sys.stderr)
        return
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.render(meta, cells, out.read_text() if out.exists() else ""))
    print(f"wrote {a.output} and {a.json}", file=sys.stderr)
    try:                 # the picture is a courtesy: matplotlib comes with the bench extra
        from .plot import plot
        print(f"wrote {plot(json_path)}", file=sys.stderr)
    except ImportError as exc:
        print(f"no plot drawn ({exc}): pip install matplotlib", file=sys.stderr)


if __name__ == "__main__":
    main()
