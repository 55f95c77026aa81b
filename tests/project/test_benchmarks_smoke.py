"""Every benchmark workload at its smallest size, on tasknest only.

Each runs through the real harness (a fresh driver process, the sampler on),
so the benchmark code cannot rot.  Only correctness is asserted, never time.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the harness lives at the repository root, not in src/
    sys.path.insert(0, str(ROOT))

from benchmarks.run import run_one  # noqa: E402
from benchmarks.workloads import WORKLOADS  # noqa: E402

SMALLEST = {"latency": 5, "actor": 5, "flat": 100, "fanout": 50, "fib_tree": 6, "chain": 20, "fib_dedup": 30,
            "process_all": 50, "process_all_gathered": 50}


def test_sizes_match_quick_mode() -> None:
    assert SMALLEST == {name: w.quick for name, w in WORKLOADS.items()}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workload", sorted(SMALLEST))
def test_workload_smallest_size(workload: str) -> None:
    result = run_one("tasknest", workload, SMALLEST[workload], timeout=100, quiet_wait=2)
    assert result["status"] == "ok", result.get("error")
    assert result["metrics"]
    assert result["peaks"]["workers"] >= 1


@pytest.mark.timeout(120)
def test_round_trip_timeline() -> None:
    import subprocess
    out = subprocess.run([sys.executable, "-m", "benchmarks.timeline", "--round-trips", "30"],
                         cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "**round trip**" in out.stdout
    assert "network: worker to client" in out.stdout


@pytest.mark.timeout(60)
def test_calibration_measures_this_machine_and_the_report_shows_it() -> None:
    from benchmarks import calibrate, report
    cal = calibrate.calibrate()
    assert set(cal) == {"python_loop_ms", "process_pingpong_us", "thread_pingpong_us"}
    assert all(v > 0 for v in cal.values()), cal
    rows = report._calibration_rows(cal)
    assert len(rows) == 3 and f"{cal['python_loop_ms']:.0f} ms" in rows[0]


@pytest.mark.timeout(120)
def test_recovery_benchmark_smallest_size() -> None:
    import subprocess
    out = subprocess.run([sys.executable, "-m", "benchmarks.recovery", "--kills", "2",
                          "--held", "20", "--flat", "100", "--fanout", "50", "--rounds", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| SIGKILL → first task dispatched again |" in out.stdout
    assert "| flat | 100 |" in out.stdout and "| fanout | 50 |" in out.stdout


@pytest.mark.timeout(180)
def test_baseline_runs_an_earlier_revision_beside_this_tree(tmp_path: Path, capsys) -> None:
    """``--baseline REV``: REV's tasknest (exported from git) measured in the same
    invocation, interleaved, and a before/after table written."""
    import json
    import subprocess

    if not (ROOT / ".git").exists():
        pytest.fail("the benchmarks' --baseline needs a git checkout of the repository")
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         check=True, capture_output=True, text=True).stdout.strip()
    from benchmarks.run import main

    out = tmp_path / "baseline.json"
    main(["--baseline", rev, "--systems", "tasknest", "--workloads", "latency", "--quick",
          "--runs", "1", "--no-sampler", "--json", str(out)])
    cells = {c["system"]: c for c in json.loads(out.read_text())["cells"]}
    assert set(cells) == {f"tasknest@{rev}", "tasknest"}
    base_from = cells[f"tasknest@{rev}"]["runs"][0]["imported_from"]
    assert cells[f"tasknest@{rev}"]["summary"]["status"] == "ok", cells
    assert "tasknest-baseline-" in base_from and not base_from.startswith(str(ROOT))
    assert "tasknest-baseline-" not in cells["tasknest"]["runs"][0]["imported_from"]
    table = out.with_suffix(".md").read_text()
    assert "| latency | 5 |" in table and "%" in table


@pytest.mark.timeout(240)
def test_scale_suite_smallest_size() -> None:
    """The scale suite end to end at toy sizes: the flat rounds, a small fleet and the
    shapes (flat, tree, fan-out, chain) through the same harness as the rivals."""
    import subprocess
    out = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--sizes", "200",
                          "--rounds", "2", "--workers", "4", "--tasks", "500", "--idle", "1",
                          "--systems", "tasknest", "--fib", "6", "--fanout", "50",
                          "--chain", "20", "--timeout", "100"],
                         cwd=ROOT, capture_output=True, text=True, timeout=220)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [ln for ln in out.stdout.splitlines() if ln.startswith("| ")]
    assert any(ln.startswith("| 200 | 2 |") for ln in rows), out.stdout
    assert any(ln.startswith("| 4 | 500 |") for ln in rows), out.stdout
    for shape in ("flat | 200 | 200", "fib_tree | 6 | 25", "fanout | 50 | 50",
                  "chain | 20 | 21"):
        line = next(ln for ln in rows if ln.startswith(f"| {shape} |"))
        assert "/s," in line, line


@pytest.mark.timeout(120)
def test_instruction_counts_run_every_workload_in_one_process() -> None:
    """benchmarks.instructions counts under valgrind what its child runs: here the child
    alone (no valgrind), every workload at a small size, on this tree."""
    import os
    import subprocess
    from benchmarks.instructions import SIZES
    assert set(SIZES) == set(WORKLOADS)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    for workload in SIZES:
        out = subprocess.run([sys.executable, "-m", "benchmarks.instructions", "--child",
                              workload, str(SMALLEST[workload])], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-2000:]
        assert f"imported_from {ROOT / 'src'}" in out.stdout, out.stdout
