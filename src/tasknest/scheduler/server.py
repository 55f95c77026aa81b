"""The scheduler process: an asyncio shell around SchedulerState.

    comm ──register──> role (client / worker) ──msg──> state.handle ──actions──> comms
    heartbeat check ──> state.tick ──> remove_worker

The shell only decodes, routes and sends; every decision is in state.py.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from typing import Any

from ..errors import ProtocolError
from ..memory import give_back, tune_allocator
from ..protocol import messages as m
from ..protocol.calls import run_call
from ..protocol.comm import Comm, Listener, listen
from ..version import __version__
from .observer import Observer
from .operations import SCHEDULER
from .persist import Persistence
from .recovery import Recovery
from .state import SchedulerState

log = logging.getLogger("tasknest.scheduler")

CLIENT_OPS = frozenset({"submit", "want", "release", "cancel", "retry", "fire-and-forget",
                        "scatter", "scatter-plan", "scatter-via", "query", "remind", "placed",
                        "lane-lost", "coord", "run", "restart", "retire", "holding",
                        "missing-data"})
WORKER_OPS = (CLIENT_OPS - {"placed", "lane-lost", "holding"}) | {"resume", "task-finished", "task-erred", "claim", "secede", "rejoin", "idle",
                           "steal-reply", "add-keys", "missing-data", "put-data-done",
                           "heartbeat", "goodbye", "paused", "synced", "not-here",
                           "run-done", "replicated", "monitor"}


HEARTBEATS_PER_S = 100


class Scheduler:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 ssl_context: Any = None, heartbeat_timeout: float = 30.0,
                 allowed_failures: int = 3, validate: bool | None = None,
                 max_frame: int | None = None,
                 dashboard_address: str | None = None,
                 dashboard_factory: Any = None, state_dir: str | None = None,
                 recovery_wait: float = 10.0, fsync: bool = False) -> None:
        tune_allocator()
        self.host = host
        self.port = port
        self.token = token
        self.ssl_context = ssl_context
        self.heartbeat_timeout = heartbeat_timeout
        self.max_frame = max_frame
        self.state = SchedulerState(allowed_failures=allowed_failures)
        self.observer = Observer(self.state, time.time)   # what people see (dashboard/)
        self.dashboard_address = dashboard_address        # HOST:PORT, or None: no dashboard
        # (async (scheduler, address) -> dashboard: given by the deploy layer, since the
        # dashboard reads this package and sits above it)
        self.dashboard_factory = dashboard_factory
        self.dashboard: Any = None
        self.dashboard_started: asyncio.Future | None = None   # done once it is up (or not)
        self.recovery = Recovery(self.state)     # workers and clients that come back
        # the state dir: a journal of intents, replayed when the scheduler comes back
        self.persist = None if state_dir is None else Persistence(
            self, self.recovery, state_dir, fsync, recovery_wait)
        if state_dir is None:     # compute numbers above those of an earlier scheduler's
            self.state._attempts = int(time.time() * 1000) << 12
        self.started = time.time()
        self.comms: dict[str, Comm] = {}
        self._told_every = 1.0             # the heartbeat interval every worker was told
        self._give_back_due = False        # tables shrank: give memory back once quiet
        self.listener: Listener | None = None
        self.validate = bool(os.environ.get("TASKNEST_VALIDATE")) if validate is None else validate
        self._ticker: asyncio.Task | None = None
        self._validate_pending = False
        self._leaving: dict[str, str] = {}     # worker id -> the reason it gave for leaving
        self.closed = asyncio.Event()
        self.address = ""

    async def start(self) -> "Scheduler":
        if self.persist is not None:
            self.persist.open()
        scheme = "tls" if self.ssl_context is not None else "tcp"
        kwargs = {"max_frame": self.max_frame} if self.max_frame else {}
        self.listener = await listen(f"{scheme}://{self.host}:{self.port}", self._on_comm,
                                     self.token, self.ssl_context, **kwargs)
        self.address = self.listener.address
        if self.persist is not None:
            self.persist.listening(self.address)
        self._ticker = asyncio.ensure_future(self._tick())
        log.info("scheduler at %s", self.address)
        if self.dashboard_address:
            start = asyncio.ensure_future(self._start_dashboard(self.dashboard_address))
            self.dashboard_started = start
            if self.persist is None or self.persist.held is None:
                await start
            else:
                start.add_done_callback(_log_failure)
            # else recovering: workers and clients are reconnecting right now, and the
            # dashboard (aiohttp's import alone is a large part of a restart) comes up
            # beside them, not before them
        return self

    async def _start_dashboard(self, address: str) -> None:
        if self.dashboard_factory is None:
            return
        try:
            self.dashboard = await self.dashboard_factory(self, address)
        except OSError as exc:      # the cluster works without it
            log.warning("no dashboard: cannot listen on %s: %s", address, exc)

    async def close(self) -> None:
        self.closed.set()
        if self.listener is not None:
            self.listener.close()
        if self._ticker is not None:
            self._ticker.cancel()
        if self.dashboard_started is not None and not self.dashboard_started.done():
            await asyncio.wait([self.dashboard_started], timeout=10)   # (then closed)
        if self.dashboard is not None:
            await self.dashboard.close()
        for comm in list(self.comms.values()):
            comm.send(m.Close("scheduler closing"))
            comm.close("scheduler closing")
        if self.persist is not None:
            self.persist.close()

    async def _tick(self) -> None:
        while True:
            # (a retirement in progress is looked at more often: its drain ends promptly)
            await asyncio.sleep(0.1 if self.state.retirement.active
                                else min(1.0, self.heartbeat_timeout / 4))
            self._do(self.state.retirement.tick(time.monotonic()))
            self.observer.tick()              # output that waited for its task's tree
            self._do(self.state._flush())
            for wid in self.state.tick(time.monotonic(), self.heartbeat_timeout):
                log.warning("worker %s missed heartbeats for %s s: removing it", wid,
                            self.heartbeat_timeout)
                comm = self.comms.get(wid)
                if comm is not None:
                    comm.close("heartbeats missed")
                else:
                    self._do(self.state.remove_worker(wid, "heartbeats missed"))
            # a large run ended: its memory goes back, once no task runs (a full collection
            # mid-run, as a worker's queue shrank, took ~0.4 s at 300,000 tasks held)
            self._give_back_due = self.state.compact() or self._give_back_due
            if self._give_back_due and not any(ws.processing
                                               for ws in self.state.workers.values()):
                self._give_back_due = False
                give_back()

    # -- connections -------------------------------------------------------------------
    def _on_comm(self, comm: Comm) -> None:
        comm.start(lambda msg: self._register(comm, msg))

    def _register(self, comm: Comm, msg: m.Message) -> None:
        if self.persist is not None:
            self.persist.connected(comm)
        if isinstance(msg, m.RegisterClient):
            cid = msg.client_id
            if not cid.startswith("c-") or cid in self.comms:
                comm.send(m.Refused(f"client id {cid!r} is invalid or already in use"))
                comm.close("refused")
                return
            self.comms[cid] = comm
            comm.handler = lambda msg: self._dispatch(cid, msg, CLIENT_OPS)
            comm.run_handler = lambda msgs: self._dispatch_run(cid, msgs, CLIENT_OPS)
            comm.on_close.append(lambda _: self._client_gone(cid))
            self._do(self.state.add_client(cid))
            comm.send(m.Welcome(cid, {"version": __version__, "started": self.started,
                                      "address": self.address,
                                      "dashboard": self.dashboard and self.dashboard.link}))
        elif isinstance(msg, m.RegisterWorker):
            wid = f"w-{uuid.uuid4().hex[:12]}"
            self.comms[wid] = comm
            comm.handler = lambda msg: self._dispatch(wid, msg, WORKER_OPS)
            comm.run_handler = lambda msgs: self._dispatch_run(wid, msgs, WORKER_OPS)
            comm.on_close.append(lambda c: self._worker_gone(wid, c.close_reason))
            # ~100 heartbeats a second in all, however many workers: 500 idle ones
            # must not keep the scheduler busy (each is a wake-up and a frame)
            every = self._beat_every(len(self.state.workers) + 1)
            comm.send(m.Welcome(wid, {"version": __version__, "heartbeat": every}))
            self._do(self.state.add_worker(
                wid, msg.address, msg.name, max(1, msg.nthreads), msg.pid,
                msg.memory_limit, msg.keys, time.monotonic(), msg.resources))
            if self.persist is not None:
                self.persist.worker_joined(wid, msg.address)
            log.info("worker %s joined from %s", msg.address, comm.peer)
        else:
            raise ProtocolError(f"expected a registration, got {msg.op!r}")
        self._check()

    def _beat_every(self, n_workers: int) -> float:
        """Seconds between a worker's heartbeats: ~HEARTBEATS_PER_S in all, however many
        workers (500 idle ones must not keep the scheduler busy: each beat is a wake-up
        and a frame). The workers already here are told when the interval has grown by
        half: those that joined first would otherwise go on at the pace of a small
        cluster (with 500, 100 at 1 s and the rest slower made ~260 beats a second)."""
        every = min(max(1.0, n_workers / HEARTBEATS_PER_S), self.heartbeat_timeout / 5)
        if every >= 1.5 * self._told_every:
            self._told_every = every
            beat = m.BeatEvery(float(every))
            for wid in self.state.workers:
                comm = self.comms.get(wid)
                if comm is not None:
                    comm.send(beat)
        return every

    def _client_gone(self, cid: str) -> None:
        self.comms.pop(cid, None)
        if self.persist is not None:
            self.persist.gone(cid)
        self._do(self.state.remove_client(cid))
        self._check()

    def _worker_gone(self, wid: str, reason: str) -> None:
        self.comms.pop(wid, None)
        ws = self.state.workers.get(wid)
        said = self._leaving.pop(wid, None)
        if ws is not None:
            (log.info if self.closed.is_set() or said is not None or "closing" in reason
             else log.warning)("worker %s left: %s", ws.address, said or reason)
        if self.persist is not None:
            self.persist.gone(wid)
        self._do(self.state.remove_worker(wid, reason))
        self._check()

    # -- events -------------------------------------------------------------------------------
    def _dispatch(self, source: str, msg: m.Message, allowed: frozenset) -> None:
        op = msg.op
        if op not in allowed:
            raise ProtocolError(f"{op!r} is not allowed on this connection")
        if op == "heartbeat" and isinstance(msg, m.Heartbeat):   # (the op first: cheaper)
            self.state.heartbeat(source, time.monotonic(), msg.memory)
            return
        if op == "goodbye" and isinstance(msg, m.Goodbye):
            # leaving on purpose: we close, so no reset races
            self._leaving[source] = msg.reason                              # its words
            comm = self.comms.get(source)
            if comm is not None:
                comm.close(f"worker left: {msg.reason}")
            return
        ws = self.state.workers.get(source)
        if ws is not None:
            ws.last_seen = time.monotonic()
        persist = self.persist
        if persist is not None and persist.held is not None and persist.hold(source, msg):
            return               # recovering: handled once every worker is back
        self._handle(source, (msg,))
        if op == "resume" and persist is not None:
            persist.resumed(source)

    def _dispatch_run(self, source: str, msgs: list, allowed: frozenset) -> None:
        """A run (protocol/runs.py: submits, task-finished): one op, checked once, its
        messages handled in one loop and their actions sent together."""
        persist = self.persist
        if msgs[0].op not in allowed or persist is not None and persist.held is not None:
            for msg in msgs:        # (refused as one message would be; held while recovering)
                self._dispatch(source, msg, allowed)
            return
        ws = self.state.workers.get(source)
        if ws is not None:
            ws.last_seen = time.monotonic()
        self._handle(source, msgs)

    def _handle(self, source: str, msgs: Any) -> None:
        """Messages of one op: journalled (recorders never read the state), handled, and
        their actions carried out."""
        persist = self.persist
        if persist is not None:
            record = persist.recorders.get(msgs[0].op)    # (persist.record(), a call less)
            if record is not None:
                for msg in msgs:
                    record(source, msg, self.state)
        self._do(self.state.handle_run(source, msgs))
        self._check()

    def _do(self, actions: list) -> None:
        comms = self.comms
        for target, msg in actions:
            comm = comms.get(target)
            if comm is not None:
                comm.send(msg)
            elif target == SCHEDULER:
                asyncio.ensure_future(self._run_here(msg))

    async def _run_here(self, msg: m.RunOn) -> None:
        """client.run_on_scheduler: the function runs in a thread of this process."""
        ok, frames = await run_call(msg.call, {"dask_scheduler": self})
        self._do(self.state.handle(SCHEDULER, m.RunDone(msg.rid, ok, frames)))
        self._check()

    def _check(self) -> None:
        """With validation on, check the invariants once per loop tick (after a frame):
        checking after every message would make large graphs quadratic."""
        if self.validate and not self._validate_pending:
            self._validate_pending = True
            asyncio.get_running_loop().call_soon(self._validate_now)

    def _validate_now(self) -> None:
        self._validate_pending = False
        try:
            self.state.validate()
        except AssertionError:
            log.critical("invariant violated: stopping", exc_info=True)
            raise SystemExit(70) from None   # loud: a test must not miss it


def _log_failure(start: asyncio.Future) -> None:
    if not start.cancelled() and start.exception() is not None:
        log.warning("no dashboard: %s", start.exception())


async def run_scheduler(host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                        ssl_context: Any = None, ready: Any = None, **kwargs: Any) -> None:
    """Run a scheduler until closed (used by the CLI and LocalCluster)."""
    sched = await Scheduler(host, port, token, ssl_context, **kwargs).start()
    if ready is not None:
        ready(sched)
    await sched.closed.wait()
