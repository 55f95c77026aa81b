"""After the fact: the task stream as a Chrome trace, and performance_report's HTML file."""
from __future__ import annotations

import html
import json
import time
from typing import Any

from ..protocol.monitoring import chrome_trace, funcname, write_chrome_trace  # noqa: F401


def _colour(name: str) -> str:
    h = 0
    for ch in name:
        h = (h * 31 + ord(ch)) & 0xFFFFFFFF
    return f"hsl({h % 360},60%,55%)"


def report_html(rows: list[dict], tree: list[dict], started: float, stopped: float) -> str:
    """One standalone page (inline SVG, no script): the task stream, progress per function
    and the spawn tree of what ran between ``started`` and ``stopped``."""
    lanes = sorted({(r["worker"], r["thread"]) for r in rows})
    lane = {k: i for i, k in enumerate(lanes)}
    span = max(stopped - started, 1e-6)
    width, row_h = 1000, 14
    bars = []
    for r in rows:
        x = (r["start"] - started) / span * width
        w = max(0.5, (r["stop"] - r["start"]) / span * width)
        y = lane[(r["worker"], r["thread"])] * row_h
        bars.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 2}" '
                    f'fill="{_colour(r["function"])}"><title>{html.escape(r["key"])} '
                    f'{(r["stop"] - r["start"]) * 1e3:.2f} ms</title></rect>')
    labels = "".join(f'<div style="height:{row_h}px">{html.escape(w)} #{t}</div>'
                     for w, t in lanes)
    per: dict[str, list] = {}
    for r in rows:
        c = per.setdefault(r["function"], [0, 0, 0.0])
        c[0 if r["status"] == "OK" else 1] += 1
        c[2] += r["stop"] - r["start"]
    table = "".join(f"<tr><td>{html.escape(f)}</td><td>{ok}</td><td>{bad}</td>"
                    f"<td>{t:.3f}</td></tr>" for f, (ok, bad, t) in sorted(per.items()))

    def node(n: dict) -> str:
        kids = "".join(node(k) for k in n.get("children", []))
        more = n.get("more", 0)
        extra = f"<li>… {more} more</li>" if more else ""
        return (f"<li><b>{html.escape(n['function'])}</b> <code>{html.escape(n['key'])}</code>"
                f"{'<ul>' + kids + extra + '</ul>' if kids or extra else ''}</li>")
    trees = "".join(node(t) for t in tree)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>tasknest performance report</title><style>
body{{font:13px sans-serif;margin:1em}} td,th{{padding:2px 8px;text-align:left}}
.lanes{{display:flex}} .lab{{font-size:10px;line-height:1;white-space:nowrap;margin-right:6px}}
</style></head><body><h1>tasknest performance report</h1>
<p>{len(rows)} executions in {span:.3f} s, from {time.ctime(started)}.</p>
<h2>Task stream</h2><div class="lanes"><div class="lab">{labels}</div>
<svg width="{width}" height="{max(1, len(lanes)) * row_h}" role="img">{''.join(bars)}</svg></div>
<h2>Progress by function</h2><table><tr><th>function</th><th>finished</th><th>erred</th>
<th>seconds</th></tr>{table}</table>
<h2>Spawn tree</h2><ul>{trees}</ul></body></html>
"""


def build_tree(rows: list[dict], edges: dict[str, str], limit: int = 25) -> list[dict]:
    """Nest the keys that ran by their parents (at most ``limit`` children shown each)."""
    ran = {r["key"] for r in rows}
    kids: dict[str, list[str]] = {}
    for child, parent in edges.items():
        if child in ran:
            kids.setdefault(parent, []).append(child)

    def make(key: str, depth: int) -> dict:
        ch = kids.get(key, [])
        out: dict[str, Any] = {"key": key, "function": funcname(key)}
        if depth < 30:
            out["children"] = [make(k, depth + 1) for k in ch[:limit]]
            out["more"] = max(0, len(ch) - limit)
        return out
    roots = [k for k in ran if k not in edges]
    return [make(k, 0) for k in roots[:200]]


class performance_report:
    """``with tasknest.performance_report("report.html"):`` writes one standalone HTML
    file (task stream, progress by function, spawn tree) of what ran in the block."""

    def __init__(self, filename: str = "tasknest-report.html", client: Any = None) -> None:
        self.filename = filename
        self.client = client
        self.start = 0.0

    def __enter__(self) -> "performance_report":
        self.start = time.time()
        return self

    def __exit__(self, *exc: Any) -> None:
        from ..registry import default_client
        client = self.client or default_client()
        stop = time.time()
        # (the task stream query syncs with the workers: what they ran has arrived)
        rows = [r for r in client.get_task_stream(self.start) if r["start"] <= stop]
        edges = client._query("edges", [r["key"] for r in rows])
        with open(self.filename, "w") as f:
            f.write(report_html(rows, build_tree(rows, edges), self.start, stop))
