"""A worker's own small HTTP endpoint: /metrics (prometheus-client), /health, /stacks.

Served on the worker's event loop (a scrape a second costs it next to nothing) on an
ephemeral port of the worker's host; the address travels to the scheduler in the
monitor's stats, so the dashboard can link to it and fetch call stacks on demand.
The same key as the dashboard's (derived from the cluster's secret) lets a caller in.
"""
from __future__ import annotations

import hmac
import logging
import os
import sys
import traceback
from collections import Counter
from typing import TYPE_CHECKING, Any, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from .server import Worker

log = logging.getLogger("tasknest.worker")


class _Collector:
    def __init__(self, worker: "Worker") -> None:
        self.w = worker

    def collect(self) -> Iterator[Metric]:
        w = self.w
        with w.lock:
            states = Counter(t.state for t in list(w.state.tasks.values()))
            executing = len(w.state.executing)
        g = GaugeMetricFamily("tasknest_worker_tasks", "Tasks this worker holds, by state",
                              labels=["state"])
        for state in ("waiting", "ready", "executing", "memory", "fetching", "remote", "erred"):
            g.add_metric([state], states.get(state, 0))
        yield g
        t = GaugeMetricFamily("tasknest_worker_threads", "Task threads, busy and in all",
                              labels=["state"])
        t.add_metric(["busy"], min(executing, w.nthreads))
        t.add_metric(["total"], w.nthreads)
        yield t
        stats = w.monitor.stats
        yield GaugeMetricFamily("tasknest_worker_memory_bytes", "Resident memory",
                                value=stats.get("memory", 0))
        yield GaugeMetricFamily("tasknest_worker_cpu_ratio", "CPU use (1 = one core)",
                                value=stats.get("cpu", 0) / 100)
        yield GaugeMetricFamily("tasknest_worker_spilled_keys", "Results spilled to disk",
                                value=stats.get("spilled", 0))
        yield GaugeMetricFamily("tasknest_worker_keys", "Results held", value=len(w.data))
        done = CounterMetricFamily("tasknest_worker_executions", "Executions finished here, "
                                   "by outcome", labels=["outcome"])
        done.add_metric(["ok"], w.monitor.counts[0])
        done.add_metric(["error"], w.monitor.counts[1])
        yield done


def _short(path: str) -> str:
    """tasknest's files from the package on, others by their name: stacks stay readable."""
    parts = path.replace(os.sep, "/").split("/")
    if "tasknest" in parts[:-1]:
        return "/".join(parts[len(parts) - 1 - parts[::-1][1:].index("tasknest") - 1:])
    return parts[-1]


def stacks(worker: "Worker") -> dict[str, str]:
    """The call stack of every task running here, by key (innermost task per thread)."""
    frames = sys._current_frames()
    out = {}
    for ident, ctx in list(worker.contexts.items()):
        frame = frames.get(ident)
        if frame is not None:
            summary = traceback.extract_stack(frame)
            for fs in summary:
                fs.filename = _short(fs.filename)
            out[ctx.key] = "".join(summary.format())
    return out


class WorkerHTTP:
    def __init__(self, worker: "Worker", key: str | None) -> None:
        self.worker = worker
        self.key = key
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(worker))
        self.runner: web.AppRunner | None = None
        self.address = ""

    async def start(self, host: str) -> str:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/stacks", self._stacks)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                    shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.address = f"http://{host}:{port}"
        return self.address

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path != "/health" and self.key:
            given = request.query.get("key", "")
            auth = request.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                given = auth[7:]
            if not hmac.compare_digest(given.encode(), self.key.encode()):
                return web.Response(status=401, text="401: this endpoint needs the "
                                    "dashboard's key\n")
        return await handler(request)

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _stacks(self, request: web.Request) -> web.Response:
        return web.json_response({"worker": self.worker.address,
                                  "stacks": stacks(self.worker)})
