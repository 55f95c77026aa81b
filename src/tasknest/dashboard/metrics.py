"""/metrics in Prometheus' text format, with prometheus-client, from a snapshot.

Names are ``tasknest_*`` in base units (seconds, bytes). Tasks are counted by state
and by function name, never by key (a label per key would grow without bound).
"""
from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class _Snapshot:
    def __init__(self, snap: dict) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        s = self.snap
        g = GaugeMetricFamily("tasknest_tasks", "Tasks the scheduler knows, by state",
                              labels=["state"])
        for state, n in s["totals"].items():
            g.add_metric([state], n)
        yield g
        g = GaugeMetricFamily("tasknest_function_tasks",
                              "Tasks the scheduler knows, by function name and state",
                              labels=["function", "state"])
        done = CounterMetricFamily("tasknest_tasks_finished", "Executions that finished, "
                                   "by function name and outcome", labels=["function", "outcome"])
        for row in s["progress"]:
            for state in ("waiting", "processing", "memory", "erred", "released"):
                g.add_metric([row["function"], state], row.get(state, 0))
            done.add_metric([row["function"], "ok"], row.get("done", 0))
            done.add_metric([row["function"], "error"], row.get("failed", 0))
        yield g
        yield done
        h = s["histogram"]
        buckets, cum = [], 0
        for bound, n in zip(h["buckets"] + ["+Inf"], h["counts"]):
            cum += n
            buckets.append((str(bound) if bound == "+Inf" else repr(float(bound)), cum))
        yield HistogramMetricFamily("tasknest_task_duration_seconds",
                                    "How long executions took", buckets=buckets,
                                    sum_value=h["sum"])
        workers = s["workers"]
        yield GaugeMetricFamily("tasknest_workers", "Workers connected", value=len(workers))
        g = GaugeMetricFamily("tasknest_threads", "Worker threads, busy and in all",
                              labels=["state"])
        g.add_metric(["busy"], sum(w["busy"] for w in workers))
        g.add_metric(["total"], sum(w["nthreads"] for w in workers))
        yield g
        mem = GaugeMetricFamily("tasknest_worker_memory_bytes", "Resident memory of each "
                                "worker process", labels=["worker"])
        cpu = GaugeMetricFamily("tasknest_worker_cpu_ratio", "CPU use of each worker process "
                                "(1 = one core)", labels=["worker"])
        spilled = GaugeMetricFamily("tasknest_worker_spilled_keys", "Results spilled to disk",
                                    labels=["worker"])
        for w in workers:
            mem.add_metric([w["address"]], w["memory"])
            cpu.add_metric([w["address"]], (w["cpu"] or 0) / 100)
            spilled.add_metric([w["address"]], w["spilled"])
        yield mem
        yield cpu
        yield spilled
        yield GaugeMetricFamily("tasknest_bytes_held", "Bytes of results held on workers "
                                "(replicas counted)", value=s["bytes_held"])
        yield CounterMetricFamily("tasknest_transferred_bytes", "Bytes workers fetched from "
                                  "other workers", value=s.get("bytes_transferred", 0))
        yield GaugeMetricFamily("tasknest_event_loop_lag_seconds", "How late the scheduler's "
                                "event loop woke for its last tick", value=s.get("loop_lag", 0))
        yield GaugeMetricFamily("tasknest_dashboard_scan_seconds", "How long the last "
                                "snapshot of the state took", value=s["scan_seconds"])


def render(snap: dict) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(snap))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def parse(text: str) -> dict[str, Any]:
    """{sample name: {labels tuple: value}} (for tests and `tasknest status`)."""
    from prometheus_client.parser import text_string_to_metric_families
    out: dict[str, Any] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out
