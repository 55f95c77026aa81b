"""The dashboard: aiohttp in its own thread and event loop, beside the scheduler's.

    scheduler loop ──tick──> views.snapshot (one per tick, if anyone watches)
                   ──call_soon_threadsafe──> dashboard loop: JSON once, pushed to every
                                             viewer (SSE), kept for /api and /metrics
    a page asks for a task / a tree ──run_coroutine_threadsafe──> scheduler loop, bounded

Why a thread and not a helper process: the state lives in the scheduler's memory,
so a process would need it copied over a pipe every tick (the same encoding work on
the scheduler, plus a process); a thread reads it where it is, on the scheduler's
own loop, and does the rest (HTTP, JSON, metrics) on its own. docs/benchmarks.md
has the flat map and fib_tree with the dashboard watched and scraped against off.
"""
from __future__ import annotations

import asyncio
import errno
import hmac
import json
import logging
import os
import threading
import time
from collections import deque
from typing import Any, Callable
from urllib.parse import quote

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from ..protocol.auth import dashboard_key
from . import views
from .metrics import render as render_metrics

log = logging.getLogger("tasknest.dashboard")

STATIC = os.path.join(os.path.dirname(__file__), "static")
DEFAULT_PORT = 8787
TICK = 1.0             # seconds between snapshots while someone watches
PUSH_ROWS = 1_000      # task stream rows pushed per tick at most (the newest)
SCAN_SHARE = 0.02      # a snapshot may take this share of the scheduler's loop, at most
IDLE_AFTER = 10.0      # seconds after the last request: nobody watches, no snapshots
STREAM_KEPT = 5_000    # task stream rows a new viewer gets
PAGES = {"status": "Status", "tree": "Spawn tree", "workers": "Workers",
         "failures": "Failures"}


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"a dashboard address is HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


async def serve(scheduler: Any, address: str) -> "Dashboard":
    """Start the dashboard of this scheduler at HOST:PORT (the scheduler's
    ``dashboard_factory``)."""
    host, port = parse_address(address)
    return await Dashboard(scheduler, host, port).start()


class Dashboard:
    def __init__(self, scheduler: Any, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 key: str | None = None) -> None:
        self.scheduler = scheduler
        self.host = host
        self.port = port
        self.key = key or dashboard_key(scheduler.token)
        self.address = ""
        self.sched_loop: asyncio.AbstractEventLoop | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.latest: dict | None = None          # the last snapshot (read in this thread)
        self.latest_at = 0.0
        self.stream: deque[list] = deque(maxlen=STREAM_KEPT)
        self.viewers: set[asyncio.Queue] = set()
        self.last_request = 0.0
        self.loop_lag = 0.0
        self.snapshots = 0
        self._since = 0
        self._since_marks = 0
        self.marks: deque[list] = deque(maxlen=STREAM_KEPT)
        self._ticker: asyncio.Task | None = None

    @property
    def link(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self.port}/status?key={quote(self.key)}"

    # -- life cycle (called on the scheduler's loop) -------------------------------------
    async def start(self) -> "Dashboard":
        sched_loop = self.sched_loop = asyncio.get_running_loop()
        ready: "asyncio.Future[Any]" = sched_loop.create_future()

        def done(error: BaseException | None) -> None:
            if not ready.done():
                (ready.set_exception(error) if error else ready.set_result(None))

        def report(error: BaseException | None) -> None:    # (from the dashboard's thread)
            sched_loop.call_soon_threadsafe(done, error)

        self._thread = threading.Thread(target=self._run, args=(report,), daemon=True,
                                        name="tasknest-dashboard")
        self._thread.start()
        await ready
        self._ticker = asyncio.ensure_future(self._tick())
        log.info("dashboard at %s", self.link.split("?")[0])
        return self

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        loop = self.loop
        if loop is not None and self._runner is not None:
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                await asyncio.wait_for(asyncio.wrap_future(fut), 5)
            except Exception:
                pass
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5)

    async def _shutdown(self) -> None:
        for q in list(self.viewers):      # open event streams end now, not at a timeout
            q.put_nowait(None)
        runner = self._runner
        assert runner is not None           # (close() shuts down only what served)
        await runner.cleanup()

    def _run(self, report: Callable[[BaseException | None], None]) -> None:
        loop = self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            report(exc)
            loop.close()
            return
        report(None)
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._auth])
        r = app.router
        r.add_get("/", self._root)
        for page in PAGES:
            r.add_get(f"/{page}", self._page)
        r.add_get("/task/{key}", self._page)
        r.add_static("/static/", STATIC)
        r.add_get("/health", self._health)
        r.add_get("/metrics", self._metrics)
        r.add_get("/api/v1/status", self._status)
        r.add_get("/api/v1/events", self._events)
        r.add_get("/api/v1/tasks/{key}", self._task)
        r.add_get("/api/v1/tree/{key}", self._tree)
        r.add_get("/api/v1/roots", self._roots)
        r.add_get("/api/v1/workers", self._workers)
        r.add_get("/api/v1/workers/logs", self._logs)
        r.add_get("/api/v1/workers/stacks", self._stacks)
        r.add_get("/api/v1/failures", self._failures)
        r.add_get("/api/v1/task-stream", self._task_stream)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        ports = [self.port]
        if self.port == DEFAULT_PORT:       # taken: the next free one (then any)
            ports += [*range(self.port + 1, self.port + 100), 0]
        for port in ports:
            site = web.TCPSite(self._runner, self.host, port)
            try:
                await site.start()
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or port == ports[-1]:
                    raise
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        self.address = f"{self.host}:{self.port}"

    # -- the scheduler's side: one snapshot per tick, if anyone watches ------------------
    async def _tick(self) -> None:
        interval = TICK
        obs = self.scheduler.observer
        loop = self.loop
        assert loop is not None             # (ticks start once the dashboard serves)
        while True:
            before = time.monotonic()
            await asyncio.sleep(interval)
            self.loop_lag = max(0.0, time.monotonic() - before - interval)
            obs.tick()
            if not self.viewers and time.monotonic() - self.last_request > IDLE_AFTER:
                continue
            snap = self._snapshot()
            # a large state makes the scan slow: tick less often rather than slow the loop
            interval = max(TICK, snap["scan_seconds"] / SCAN_SHARE)
            loop.call_soon_threadsafe(self._publish, snap)

    def _snapshot(self) -> dict:
        snap = views.snapshot(self.scheduler.state, self.scheduler.observer, self._since,
                              self._since_marks)
        self._since, self._since_marks = snap["seq"], snap["mark_seq"]
        if len(snap["stream"]) > PUSH_ROWS:     # (a browser draws the last seconds only)
            snap["skipped"] = len(snap["stream"]) - PUSH_ROWS
            snap["stream"] = snap["stream"][-PUSH_ROWS:]
        snap["loop_lag"] = self.loop_lag
        snap["tick"] = TICK
        return snap

    # -- the dashboard's side --------------------------------------------------------------
    def _publish(self, snap: dict) -> None:
        self.snapshots += 1
        self.stream.extend(snap["stream"])
        self.marks.extend(snap["marks"])
        self.latest, self.latest_at = snap, time.monotonic()
        if not self.viewers:
            return
        data = ("data: " + json.dumps(snap, default=str) + "\n\n").encode()   # once for all
        for q in list(self.viewers):
            if q.qsize() < 8:
                q.put_nowait(data)
            else:                        # a viewer that cannot keep up: it reloads
                q.put_nowait(None)
                self.viewers.discard(q)

    async def on_scheduler(self, fn: Callable, *args: Any) -> Any:
        async def call() -> Any:
            return fn(*args)
        assert self.sched_loop is not None  # (requests come once start() ran)
        fut = asyncio.run_coroutine_threadsafe(call(), self.sched_loop)
        return await asyncio.wrap_future(fut)

    async def fresh(self, max_age: float = 0.0) -> dict:
        """The latest snapshot, made anew for this request if older than ``max_age``
        while the state is small (a scan under 5 ms); for a large one, reused for as
        long as the ticks are apart."""
        last = self.latest
        if last is None or time.monotonic() - self.latest_at >= (
                max_age if last["scan_seconds"] < 0.005 else
                max(2 * TICK, last["scan_seconds"] / SCAN_SHARE)):
            last = await self.on_scheduler(self._snapshot)
            self._publish(last)
        return last

    # -- HTTP ---------------------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/health":
            return await handler(request)
        self.last_request = time.monotonic()
        given = request.query.get("key") or request.cookies.get("tasknest_key") or ""
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[7:]
        if not hmac.compare_digest(given.encode(), self.key.encode()):
            return web.Response(status=401, text="401: this dashboard needs its key (open "
                                "client.dashboard_link)\n")
        response = await handler(request)
        if request.query.get("key") and not isinstance(response, web.FileResponse):
            response.set_cookie("tasknest_key", self.key, httponly=True, samesite="Strict")
        return response

    async def _root(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/status")

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _page(self, request: web.Request) -> web.Response:
        page = request.path.strip("/").split("/")[0]
        return web.Response(text=_html(page, request.match_info.get("key", "")),
                            content_type="text/html")

    async def _status(self, request: web.Request) -> web.Response:
        snap = dict(await self.fresh())
        snap["stream"] = list(self.stream)[-2000:]
        snap["marks"] = list(self.marks)[-500:]
        return web.json_response(snap, dumps=_dumps)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        q: asyncio.Queue = asyncio.Queue()
        self.viewers.add(q)
        try:
            await resp.write(b"retry: 2000\n\n")
            while True:
                try:
                    data = await asyncio.wait_for(q.get(), 15)
                except asyncio.TimeoutError:
                    data = b": keep-alive\n\n"
                if data is None:
                    await resp.write(b"event: resync\ndata: {}\n\n")
                    break
                await resp.write(data)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.viewers.discard(q)
        return resp

    async def _task(self, request: web.Request) -> web.Response:
        s = self.scheduler
        info = await self.on_scheduler(views.task, s.state, s.observer, request.match_info["key"])
        if info is None:
            return web.json_response({"error": "unknown task"}, status=404)
        return web.json_response(info, dumps=_dumps)

    async def _tree(self, request: web.Request) -> web.Response:
        s = self.scheduler
        try:
            depth = int(request.query.get("depth", views.TREE_DEPTH))
        except ValueError:
            return web.json_response({"error": "depth is an integer"}, status=400)
        node = await self.on_scheduler(views.tree, s.state, s.observer,
                                       request.match_info["key"], depth)
        if node is None:
            return web.json_response({"error": "unknown task"}, status=404)
        return web.json_response(node, dumps=_dumps)

    async def _roots(self, request: web.Request) -> web.Response:
        s = self.scheduler
        return web.json_response(await self.on_scheduler(views.roots, s.state, s.observer),
                                 dumps=_dumps)

    async def _workers(self, request: web.Request) -> web.Response:
        return web.json_response((await self.fresh())["workers"], dumps=_dumps)

    async def _logs(self, request: web.Request) -> web.Response:
        s = self.scheduler
        return web.json_response(await self.on_scheduler(s.observer.query, "worker_logs", None))

    async def _stacks(self, request: web.Request) -> web.Response:
        """The call stacks of a worker's running tasks, asked of the worker itself."""
        address = request.query.get("worker", "")
        workers = (await self.fresh())["workers"]
        w = next((w for w in workers if w["address"] == address), None)
        if w is None or not w.get("http"):
            return web.json_response({"error": f"no such worker (or it serves no HTTP): "
                                      f"{address!r}"}, status=404)
        try:
            async with ClientSession(timeout=ClientTimeout(total=10)) as session:
                async with session.get(w["http"] + "/stacks", headers={
                        "Authorization": f"Bearer {self.key}"}) as r:
                    return web.json_response(await r.json(), status=r.status)
        except (OSError, ClientError, asyncio.TimeoutError) as exc:
            return web.json_response({"error": f"{address} did not answer: {exc}"},
                                     status=502)

    async def _failures(self, request: web.Request) -> web.Response:
        return web.json_response((await self.fresh())["failures"], dumps=_dumps)

    async def _task_stream(self, request: web.Request) -> web.Response:
        s = self.scheduler
        rows = await self.on_scheduler(s.observer.query, "task_stream", None)
        return web.json_response(rows, dumps=_dumps)

    async def _metrics(self, request: web.Request) -> web.Response:
        snap = await self.fresh(TICK)     # (a scrape a second shares the tick's snapshot)
        body, ctype = render_metrics(snap)
        return web.Response(body=body, headers={"Content-Type": ctype})


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)


def _html(page: str, key: str) -> str:
    nav = "".join(f'<a href="/{p}" class="{"on" if p == page else ""}">{t}</a>'
                  for p, t in PAGES.items())
    title = PAGES.get(page, "Task")
    safe = json.dumps(key).replace("<", "\\u003c")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tasknest · {title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/style.css"></head>
<body><header><b>tasknest</b><nav>{nav}</nav><span id="conn">connecting…</span></header>
<main id="app" data-page="{page}"></main>
<script>window.TASK_KEY = {safe};</script>
<script src="/static/app.js"></script></body></html>
"""
