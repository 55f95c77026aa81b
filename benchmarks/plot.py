"""The benchmark run as one picture: how much longer each rival takes than tasknest.

    python -m benchmarks.plot [results.json] [out.png]

Reads the figures ``benchmarks.run`` wrote (``benchmarks/results/latest.json``) and
draws, per workload, each system's time relative to tasknest's on a log scale
(latency: the median round trip; the others: the whole run). Runs that timed out or
do not apply are marked, not dropped. matplotlib comes with the ``bench`` extra.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "latest.json"
OUT = HERE.parent / "docs" / "img" / "benchmarks.png"
COLORS = {"tasknest": "#2b7bba", "dask": "#e6883a", "ray": "#4daf4a"}
LABELS = {"latency": "latency\n(one task)", "flat": "flat map\n10k tasks",
          "fanout": "fan-out\n2k children", "fib_tree": "nested tree",
          "fib_dedup": "fib(100)\npure keys", "process_all": "process_all\n(seeds)",
          "process_all_gathered": "process_all\ngathered"}


def seconds(cell: dict) -> float | None:
    """The time a cell's run took, in seconds (latency: the median round trip)."""
    summary = cell["summary"]
    if summary.get("status") != "ok":
        return None
    metrics = summary["metrics"]
    if "median_ms" in metrics:
        return metrics["median_ms"] / 1e3
    if "elapsed_ms" in metrics:
        return metrics["elapsed_ms"] / 1e3
    return metrics.get("elapsed_s")


def plot(results: Path = RESULTS, out: Path = OUT) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(results.read_text())
    systems = data["meta"]["systems"]
    cells: dict[tuple[str, str], dict] = {}
    workloads: list[tuple[str, int]] = []
    for cell in data["cells"]:
        workload = (cell["workload"], cell["size"])
        if workload not in workloads:
            workloads.append(workload)
        cells[(f"{cell['workload']}/{cell['size']}", cell["system"])] = cell
    # one size per workload: the largest tasknest finished (the nested tree: n=18)
    chosen: dict[str, int] = {}
    for name, size in workloads:
        if seconds(cells[(f"{name}/{size}", "tasknest")]) is not None:
            chosen[name] = max(size, chosen.get(name, size))
    fig, ax = plt.subplots(figsize=(10, 4.2))
    width = 0.8 / len(systems)
    top = 1.0
    for i, (name, size) in enumerate(chosen.items()):
        base = seconds(cells[(f"{name}/{size}", "tasknest")])
        for j, system in enumerate(systems):
            cell = cells.get((f"{name}/{size}", system))
            x = i + (j - (len(systems) - 1) / 2) * width
            took = seconds(cell) if cell else None
            if took is None or not base:
                status = cell["summary"].get("status", "n/a") if cell else "n/a"
                ax.text(x, 1.05, "timed out" if status == "timeout" else "n/a",
                        rotation=90, ha="center", va="bottom", fontsize=8, color="#666")
                continue
            ratio = took / base
            top = max(top, ratio)
            ax.bar(x, ratio, width, color=COLORS.get(system, "#999"),
                   label=system if i == 0 else None)
            if system != "tasknest":
                ax.text(x, ratio * 1.08, f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.1f}x",
                        ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(0.5, top * 4)
    ax.set_xticks(range(len(chosen)))
    ax.set_xticklabels([LABELS.get(n, n) for n in chosen], fontsize=9)
    ax.set_ylabel("time relative to tasknest (log)")
    meta = data["meta"]
    ax.set_title(f"Same machine, same run ({meta['machine']['cores']} cores, "
                 f"{meta['date']}): lower is better", fontsize=10)
    ax.legend(frameon=False, ncol=len(systems), loc="upper left")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    args = [Path(a) for a in sys.argv[1:]]
    print(plot(*args))
