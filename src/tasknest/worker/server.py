"""The worker process: an asyncio shell around WorkerState, a Pool and a WorkerClient.

    scheduler ──compute/free/steal/...──> state (under lock) ──actions──> pool, peers, scheduler
    pool thread ──pop_ready──> execute(task) ──result──> data + state.finished ──> scheduler
    peers ──get-data──> data (pickled on demand)

``lock`` guards ``state`` and ``data``; Future callbacks run after it is released.
"""
from __future__ import annotations

import asyncio
import logging
import os
import pickle
import random
import threading
import time
import traceback
from collections.abc import MutableMapping
from typing import Any

import psutil
from tblib import Traceback

from ..client.future import collect_inner, describe_type, error_from
from ..errors import CallerError, ProtocolError, SchedulerLostError, SerializationError
from ..memory import tune_allocator
from ..protocol import messages as m, sharedmem
from ..protocol.calls import run_call
from ..protocol.comm import Comm, Listener, address_towards, connect, listen, parse_address
from ..protocol.peers import PeerPool
from ..registry import set_default
from ..protocol.serialize import (dumps_value, loads_call, loads_function, loads_value, nbytes,
                                  plain_nbytes, unframed)
from ..version import __version__
from .actions import Action, Done, Drop, Fetch, Ready, Send, Tell
from .client import WorkerClient
from .context import TaskContext, current_task, reset_task, set_task
from .pool import Pool, is_async
from .resume import inventory as inventory_of
from .sharing import SharedSegments
from .spill import new_store, watch_memory
from .state import WorkerState
from .retiring import replicate, retire
from .watchdog import Watchdog
from .monitor import Monitor, install as install_monitor
from .upkeep import heartbeat, report

log = logging.getLogger("tasknest.worker")

STATE_OPS = WorkerState.OPS          # what the scheduler tells the pure core
CLIENT_OPS = frozenset({"key-memory", "key-erred"})   # ... that the in-task client hears too
# what the shell handles itself: op -> Worker._on_<op>
SHELL_OPS = ("sync", "put-data", "key-cancelled", "reply", "unknown", "run-on", "welcome",
             "close", "replicate", "beat-every")

INLINE_LIMIT = 64 * 1024      # results up to this size travel with task-finished
GOODBYE_WAIT = 2.0            # seconds a leaving worker waits for the scheduler to hang up
SPIN = 0.0005                 # seconds a thread out of work waits awake for a placed task
PLACING = 0.01                # ... if a client placed one this recently


class Worker:
    def __init__(self, scheduler_address: str, nthreads: int = 1, name: str | None = None,
                 host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 security: Any = None, memory_limit: int = 0,
                 reconnect_timeout: float = 60.0, heartbeat_interval: float = 1.0,
                 validate: bool | None = None, max_frame: int | None = None,
                 resources: dict[str, float] | None = None, http: bool = True,
                 shared_memory: bool = True) -> None:
        if nthreads < 1:
            raise CallerError(f"nthreads must be at least 1, got {nthreads}")
        tune_allocator()
        self.scheduler_address = scheduler_address
        self.max_frame = max_frame            # largest frame a peer may send us
        self.nthreads = nthreads
        self.resources = dict(resources or {})   # what tasks may ask for (resources=)
        self.name = name or f"worker-{os.getpid()}"
        self.host = host
        self.port = port
        self.token = token
        self.security = security
        self.ssl_context = security.server_context() if security is not None else None
        self.peer_ssl = security.client_context() if security is not None else None
        self.memory_limit = memory_limit
        self.reconnect_timeout = reconnect_timeout
        self.heartbeat_interval = heartbeat_interval
        self._beat_every = heartbeat_interval     # (the scheduler may ask for less often)
        self.validate = bool(os.environ.get("TASKNEST_VALIDATE")) if validate is None else validate
        self.lock = threading.Lock()
        self.confirmed = threading.Condition(self.lock)   # the scheduler answered claims
        self.confirm_waiters = 0
        self._validate_pending = False
        self.state = WorkerState()
        self._handlers = {op: getattr(self, m.handler_name(op)) for op in SHELL_OPS}
        self.data: MutableMapping[str, Any] = new_store(memory_limit)   # spills under a limit
        self.paused = False               # memory above the pause fraction: start no task
        self.frames_cache: dict[str, list] = {}
        self.shared = SharedSegments(shared_memory, self.data)   # for same-host readers
        self.client_comms: dict[str, Comm] = {}   # client id -> its connection to this worker
        self.near: set[str] = set()       # clients of those that map our segments
        self._told: set[Comm] = set()             # client comms with messages from threads
        self._placed_at = -1.0            # when a client last placed a task here
        self.pool = Pool(nthreads, self.lock, lambda: not self.paused and self.state.has_ready(),
                         self._run_one, self._on_idle, name=f"tasknest-{self.name}",
                         before_wait=self._wake, spin_for=self._spin_for,
                         work_hint=lambda: bool(self.state.ready),
                         on_starved=lambda: self.watchdog.starved())
        self.contexts: dict[int, TaskContext] = {}   # pool thread -> its innermost task
        self.watchdog = Watchdog(self.pool, self.lock, self.contexts)
        self.client = WorkerClient(self)
        self.comm: Comm | None = None
        self.listener: Listener | None = None
        self.peers: PeerPool | None = None
        self.id = ""
        self.address = ""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread: int | None = None
        self.closing = False
        self.retiring = False             # asked to be retired (worker/retiring.py)
        self.finished = asyncio.Event()
        self.exit_reason = ""
        self._tasks: set[asyncio.Future] = set()   # background coroutines, to cancel at close
        self.plugins: dict[str, Any] = {}          # name -> plugin (client.register_plugin)
        self._process = psutil.Process()
        self.monitor = Monitor()           # runs, spawns, output, logs: for people to see
        self.http: Any = http              # /metrics, /stacks (worker/http.py), once started
        self._log_handler: Any = None
        self._offline: list[m.Message] = []       # errors to report once reconnected

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> "Worker":
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        self.watchdog.start(self.loop, self.loop_thread)
        scheme = "tls" if self.ssl_context is not None else "tcp"
        kwargs = {"max_frame": self.max_frame} if self.max_frame else {}
        self.listener = await listen(f"{scheme}://{self.host}:{self.port}", self._on_peer,
                                     self.token, self.ssl_context, **kwargs)
        self.address = self.listener.address
        if self.host in ("0.0.0.0", "::", ""):          # advertise an address peers can reach
            self.address = self.address.replace(
                f"//{self.host}:" if self.host else "//:", f"//{_towards(self.scheduler_address)}:")
        self.state.address = self.address
        self.peers = PeerPool(self.name, self.token, self.peer_ssl, host=self.shared.host)
        await self._connect(self.reconnect_timeout)
        self._spawn(heartbeat(self))
        self._log_handler = install_monitor(self.monitor)
        if self.http:
            await self._start_http()
        self._spawn(report(self))
        if self.memory_limit:
            self._spawn(watch_memory(self))
        return self

    async def _connect(self, timeout: float, resume: bool = False) -> None:
        comm = await connect(self.scheduler_address, self.token, timeout=timeout,
                             ssl_context=self.peer_ssl)
        welcome = self.loop.create_future()  # type: ignore[union-attr]
        self._welcome = welcome
        # a scheduler killed before it welcomed us must not leave us waiting out the timeout
        comm.fail_on_close(welcome, "the welcome")
        comm.run_handler = self._handle_run
        comm.start(self._handle)
        with self.lock:    # (no task thread reports before the registration and resume)
            held = [] if resume else self.state.held_keys()
            comm.send(m.RegisterWorker(self.name, self.address, self.nthreads, os.getpid(),
                                       self.memory_limit, held, __version__, self.resources))
            if resume:     # where we stand: what the scheduler missed, summed up
                comm.send(m.Resume(*inventory_of(self.state, list(self.client._states))))
                offline, self._offline = self._offline, []
                for report in offline:
                    comm.send(report)
            if self.paused:
                comm.send(m.Paused(True))
            self.comm = comm
        msg = await asyncio.wait_for(welcome, timeout)
        self.id = msg.id
        self._beat_at(float(msg.info.get("heartbeat", 0)))
        self.client._bind()
        set_default(self.client, only_if_unset=True)  # futures unpickled here bind to it
        comm.when_closed(self._scheduler_lost)
        log.info("worker %s (%s) connected to %s", self.address, self.name,
                 self.scheduler_address)

    async def close(self, reason: str = "closed") -> None:
        if self.closing:
            return
        self.closing = True
        self.exit_reason = reason
        for t in list(self._tasks):
            t.cancel()
        for plugin in list(self.plugins.values()):
            teardown = getattr(plugin, "teardown", None)
            if teardown is not None:
                try:
                    teardown(self)
                except Exception:
                    log.warning("plugin %r failed to tear down", plugin, exc_info=True)
        self.pool.close()
        if self._log_handler is not None:
            logging.getLogger("tasknest").removeHandler(self._log_handler)
        comm = self.comm
        if comm is not None and not comm.closed:
            # say goodbye and let the scheduler close first: closing with its messages
            # unread would reset the connection, and it would log a crash
            gone = self.loop.create_future()  # type: ignore[union-attr]
            comm.on_close.append(lambda _: gone.done() or gone.set_result(None))
            comm.send(m.Goodbye(reason[:200]))
            try:
                await asyncio.wait_for(gone, GOODBYE_WAIT)
            except asyncio.TimeoutError:
                pass
            comm.close(reason)
        if self.listener is not None:
            self.listener.close()
        if self.http:
            http, self.http = self.http, None
            try:
                await http.close()
            except asyncio.CancelledError:   # (close() may run in a task it just cancelled)
                pass
        if self.peers is not None:
            self.peers.close()
        self.shared.close()
        self.finished.set()

    def _scheduler_lost(self, comm: Comm) -> None:
        if self.closing:
            return
        if self.retiring:           # it was leaving anyway: no reconnecting
            asyncio.ensure_future(self.close(f"scheduler gone while retiring: "
                                             f"{comm.close_reason}"))
            return
        log.warning("lost the scheduler at %s (%s); carrying on and reconnecting for up to "
                    "%s s", self.scheduler_address, comm.close_reason, self.reconnect_timeout)
        # tasks run on and results stay: a scheduler that comes back hears where we stand
        self.comm = None
        error = SchedulerLostError(f"lost the scheduler at {self.scheduler_address}: "
                                   f"{comm.close_reason}")
        replies, self.client._replies = self.client._replies, {}
        for fut in replies.values():       # (requests in flight are not answered again)
            if not fut.done():
                fut.set_exception(error)
        self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        deadline = time.monotonic() + self.reconnect_timeout
        while True:
            try:
                await self._connect(max(0.1, deadline - time.monotonic()), resume=True)
                return
            except Exception as exc:
                # e.g. a dying scheduler that accepted us and then reset the handshake
                # (connect() reports that as a refused token): the token worked before
                if time.monotonic() < deadline - 0.1:
                    await asyncio.sleep(0.1)
                    continue
                msg = (f"the scheduler at {self.scheduler_address} has been unreachable for "
                       f"{self.reconnect_timeout:g} s ({exc}); worker {self.name} exits")
                log.error(msg)
                await self.close(msg)
                return

    async def retire(self, timeout: float = 60.0, reason: str = "asked to retire") -> None:
        """Leave gracefully: no new task, results handed over, running tasks drained."""
        await retire(self, timeout, reason)

    def _spawn(self, coro: Any) -> None:
        """Run a coroutine in the background (loop thread), cancelled at close."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_http(self) -> None:
        from ..protocol.auth import dashboard_key
        from .http import WorkerHTTP
        http = WorkerHTTP(self, dashboard_key(self.token) if self.token else None)
        try:
            address = await http.start(self.host)
        except OSError as exc:         # the worker works without it
            log.warning("no /metrics endpoint: %s", exc)
            self.http = None
            return
        self.http = http
        host = self.address.split("://", 1)[1].rsplit(":", 1)[0]   # (as peers reach us)
        self.monitor.stats["http"] = address.replace(f"//{self.host}:", f"//{host}:")

    # -- sending ------------------------------------------------------------------------------
    def _wake(self, here: bool = True) -> None:
        """Send what task threads queued. ``here``: this thread has nothing else to do
        (it parks, or its result is the last thing ready) and writes the frames itself."""
        told = self._told
        while told:               # clients first: they wait on these results
            try:
                told.pop().wake(here)
            except KeyError:      # another thread took the last one
                break
        comm = self.comm
        if comm is not None:
            comm.wake(here)

    def send(self, msg: m.Message, now: bool = False) -> None:
        comm = self.comm
        if comm is not None:
            _queue(comm, msg, now)
        elif msg.op == "task-erred":   # (the resume sums up all else the scheduler missed)
            self._offline.append(msg)

    # -- actions (lock held) ------------------------------------------------------------------
    def apply(self, actions: list[Action], now: bool = False) -> list:
        """Carry out state actions; returns settle records to pass to settle() unlocked.
        ``now``: a task thread that calls _wake() next writes the messages itself."""
        done = []
        fetches: dict[str, list[str]] = {}
        dropped = ready = False
        for a in actions:
            if type(a) is Send:      # (type() is one opcode; several actions a task)
                self.send(a.msg, now)
            elif type(a) is Done:
                done.append(self._settle_record(a.key))
            elif type(a) is Ready:
                ready = True
            elif type(a) is Tell:
                self._tell(a.client, a.msg, now)
            elif type(a) is Fetch:        # one request per peer for what it asks of it
                fetches.setdefault(random.choice(a.addrs), []).append(a.key)
            elif type(a) is Drop:
                self.data.pop(a.key, None)
                self.frames_cache.pop(a.key, None)
                self.shared.release(a.key)
                dropped = True
        if ready:
            self.pool.notify()
        if dropped:        # a mapping nothing uses lets go of its file: its owner may reuse it
            sharedmem.sweep()
        for address, keys in fetches.items():
            self._start_fetch(address, keys)
        if self.validate and not self._validate_pending and self.loop is not None:
            self._validate_pending = True      # once per loop tick, under the lock
            self.loop.call_soon_threadsafe(self._validate_now)
        return done

    def _validate_now(self) -> None:
        with self.lock:
            self._validate_pending = False
            try:
                self.state.validate()
            except AssertionError:
                log.critical("invariant violated: stopping", exc_info=True)
                raise SystemExit(70) from None   # loud: a test must not miss it

    def _settle_record(self, key: str) -> tuple:
        t = self.state.tasks.get(key)
        if t is not None and t.state == "memory" and key in self.data:
            return (key, "memory", self.data[key], t.nbytes)
        if t is not None and t.state == "erred":
            return (key, "erred", t.error, 0)
        return (key, "", None, 0)

    def settle_from_state(self, keys: list[str]) -> list:
        return [self._settle_record(k) for k in keys]

    def settle(self, done: list) -> None:
        """Settle the in-task client's futures (outside the lock: callbacks may run)."""
        states = self.client._states
        for key, status, payload, size in done:
            st = states.get(key)
            if st is None or st.done():
                continue
            if status == "memory":
                st.finish(describe_type(payload), size, [self.address], None, payload)
            elif status == "erred":
                exc, tb, kind = payload
                st.fail(error_from(exc, tb, kind), tb or None,
                        "cancelled" if kind == "cancelled" else "error")

    # -- messages from the scheduler (loop thread) ----------------------------------------
    def _handle(self, msg: m.Message) -> None:
        """A message from the scheduler: the pure core's (``WorkerState.handle``) or the
        shell's own (``_on_<op>``)."""
        op = msg.op
        done: list = []
        if op in STATE_OPS:
            with self.lock:
                if op == "key-memory" and isinstance(msg, m.KeyMemory) and \
                        self._arrived_inline(msg):
                    done = self._inline_arrival(msg)
                else:
                    done = self.apply(self.state.handle(msg))
                if op == "free" and isinstance(msg, m.Free):
                    done += self.client._freed(msg.keys)
            if op in CLIENT_OPS:          # (the in-task client's futures hear of it too)
                self.client._handle(msg)
        else:
            handler = self._handlers.get(op)
            if handler is None:
                log.debug("worker ignores %s", op)
            else:
                handler(msg)
        if self.confirm_waiters:      # a task waits for a claim's word: this may be it
            with self.lock:
                self.confirmed.notify_all()
        if done:
            self.settle(done)

    def _handle_run(self, msgs: list) -> None:
        """A run of computes (protocol/runs.py) is queued under one lock, with one apply;
        another run goes message by message."""
        if msgs[0].op != "compute":
            for msg in msgs:
                self._handle(msg)
            return
        handle = self.state.handle
        with self.lock:
            actions: list = []
            for msg in msgs:
                actions += handle(msg)
            done = self.apply(actions)
            if self.confirm_waiters:
                self.confirmed.notify_all()
        if done:
            self.settle(done)

    def _on_sync(self, msg: m.Sync) -> None:
        if self.monitor.pending():    # (send() puts what task threads queued first; what
            self.send(self.monitor.take())   # ran so far counts too: task stream)
        self.send(m.Synced(msg.rid))

    def _on_put_data(self, msg: m.PutData) -> None:
        self._put_data(msg.rid, msg.keys, msg.values)

    def _on_key_cancelled(self, msg: m.KeyCancelled) -> None:
        self.client._handle(msg)

    def _on_reply(self, msg: m.Reply) -> None:
        self.client._handle(msg)

    def _on_unknown(self, msg: m.Unknown) -> None:
        self.client._unknown(msg.key)

    def _on_run_on(self, msg: m.RunOn) -> None:
        self._spawn(self._run_on(msg))

    def _on_welcome(self, msg: m.Welcome) -> None:
        if not self._welcome.done():
            self._welcome.set_result(msg)

    def _on_beat_every(self, msg: m.BeatEvery) -> None:
        self._beat_at(msg.seconds)

    def _beat_at(self, seconds: float) -> None:
        """Heartbeat every ``seconds`` as the scheduler asks (from the next beat on), never
        faster than this worker was made to, never slower than a minute."""
        self._beat_every = min(max(self.heartbeat_interval, seconds), 60.0)

    def _on_close(self, msg: m.Close) -> None:
        asyncio.ensure_future(self.close(f"scheduler asked: {msg.reason}"))

    def _on_replicate(self, msg: m.Replicate) -> None:
        self._spawn(replicate(self, msg))

    async def _run_on(self, msg: m.RunOn) -> None:
        """client.run / a plugin's setup: outside any task, in a thread of its own."""
        ok, frames = await run_call(msg.call, {"dask_worker": self})
        if msg.rid:
            self.send(m.RunDone(msg.rid, ok, frames))
        elif not ok:
            log.warning("a plugin failed to set up: %s", _describe(frames))

    def _arrived_inline(self, msg: m.KeyMemory) -> bool:
        """The value came along with key-memory, and a local task waits for it: no need
        to fetch it from a peer (lock held)."""
        t = self.state.tasks.get(msg.key)
        return msg.value is not None and t is not None and t.state in (
            "remote", "fetching") and bool(t.dependents)

    def _inline_arrival(self, msg: m.KeyMemory) -> list:
        """A small dependency's value arrived with key-memory (lock held)."""
        assert msg.value is not None
        try:
            value = loads_value(msg.value)
        except SerializationError:
            return []
        self.data[msg.key] = value
        return self.apply(self.state.value_arrived(msg.key, nbytes(msg.value)))

    def _put_data(self, rid: int, put: list[str], frames_list: list) -> tuple[list, list]:
        """Scattered values stored here; the scheduler told (its scatter ``rid``)."""
        values, sizes, keys = [], [], []
        for key, frames in zip(put, frames_list):
            try:
                frames = self.shared.receive(key, frames)    # (mapped, if a reference)
                values.append(loads_value(frames))
            except (SerializationError, OSError) as exc:
                log.warning("cannot store scattered %s: %s", key, exc)
                continue
            keys.append(key)
            sizes.append(nbytes(frames))
        with self.lock:
            for k, v in zip(keys, values):
                self.data[k] = v
            done = self.apply(self.state.put_data(keys, sizes))
        self.send(m.PutDataDone(rid, keys, sizes))
        self.settle(done)
        return keys, sizes

    # -- peers --------------------------------------------------------------------------------
    def _on_peer(self, comm: Comm) -> None:
        client = ""                       # the client at the other end, once it says so
        same_host = False                 # it maps our shared-memory segments

        def handler(msg: m.Message) -> None:
            nonlocal client, same_host
            if isinstance(msg, m.Place) and client:     # (the most frequent first)
                self._placed_at = time.perf_counter()
                with self.lock:
                    done = self.apply(self.state.placing.place(
                        msg.key, msg.func, msg.args, msg.priority, msg.retries, client, msg.seq))
                if done:
                    self.settle(done)
            elif isinstance(msg, m.GetData):
                late = same_host and self.shared.unshared(msg.keys, self.state.tasks)
                if late:            # copied into shared memory first, in a thread
                    self._spawn(self._answer_shared(comm, msg, late))
                else:
                    comm.send(m.Data(msg.rid, {k: self._frames(k, same_host) for k in msg.keys}))
            elif isinstance(msg, m.ScatterData):    # a client's scatter, straight here
                keys, sizes = self._put_data(msg.id, msg.keys, msg.values)
                comm.send(m.PutDataDone(msg.rid, keys, sizes))
            elif isinstance(msg, m.PeerHost):
                same_host = bool(self.shared.host) and msg.host == self.shared.host
                comm.send(m.PeerHost(self.shared.host))      # ours, in return
                if client:
                    (self.near.add if same_host else self.near.discard)(client)
            elif isinstance(msg, m.RegisterPeer) and not client:
                name = msg.name
                if name.startswith("c-"):     # a client: results it waits for come this way
                    client = name
                    self.client_comms[name] = comm       # (its peer-host comes next)
                    comm.on_close.append(lambda c: self._client_gone(name, c))
            else:
                raise ProtocolError(f"peers may only ask for data (and clients place tasks "
                                    f"and scatter), not {msg.op!r}")
        comm.start(handler)

    async def _answer_shared(self, comm: Comm, msg: m.GetData, late: list[str]) -> None:
        await self.shared.share_held(late, self.data, self.lock)
        comm.send(m.Data(msg.rid, {k: self._frames(k, True) for k in msg.keys}))

    def _client_gone(self, cid: str, comm: Comm) -> None:
        if self.client_comms.get(cid) is comm:
            del self.client_comms[cid]
            self.near.discard(cid)

    def _tell(self, cid: str, msg: m.Message, now: bool = False) -> None:
        """A result straight to a client connected here (if it still is: if not, the
        client asks the scheduler again for everything it waits on)."""
        comm = self.client_comms.get(cid)
        if comm is not None:
            if type(msg) is m.KeyMemory and msg.value is None and cid in self.near:
                msg.value = self.shared.reference(msg.key)   # mapped there, not fetched
            _queue(comm, msg, now)
            self._told.add(comm)     # woken with the scheduler's comm when the thread waits

    def _frames(self, key: str, same_host: bool = False) -> list | None:
        if same_host:
            ref = self.shared.reference(key)
            if ref is not None and key in self.data:
                return ref
        frames = self.frames_cache.get(key)
        if frames is not None:
            return [bytes(f) if isinstance(f, memoryview) else f for f in frames]
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            return None
        return dumps_value(value)

    def _start_fetch(self, address: str, keys: list[str]) -> None:
        if threading.get_ident() == self.loop_thread:
            self._spawn(self._fetch(address, keys))
        else:
            self.loop.call_soon_threadsafe(  # type: ignore[union-attr]
                lambda: self._spawn(self._fetch(address, keys)))

    async def _fetch(self, address: str, keys: list[str]) -> None:
        got: dict[str, Any] = {}
        start = time.time()
        try:
            got = await self.peers.get_data(address, keys)  # type: ignore[union-attr]
        except Exception as exc:
            log.info("fetching %d keys from %s failed: %s", len(keys), address, exc)
        if got:
            self.monitor.transferred(address, len(got), sum(nbytes(f) for f in got.values()
                                                           if f is not None), start, time.time())
        values: dict[str, Any] = {}
        for key in keys:
            frames = got.get(key)
            if frames is not None:
                try:
                    values[key] = (loads_value(frames), nbytes(frames))
                except SerializationError as exc:
                    log.warning("cannot unpickle %s from %s: %s", key, address, exc)
        done: list = []
        with self.lock:
            for key in keys:
                if key not in values:
                    done += self.apply(self.state.fetch_failed(key, address))
                    continue
                value, size = values[key]
                t = self.state.tasks.get(key)
                if t is not None and t.state == "fetching":
                    self.data[key] = value
                done += self.apply(self.state.fetched(key, size))
        self.settle(done)

    # -- running tasks ------------------------------------------------------------------------
    def _run_one(self) -> bool:
        """Pool thread, lock held: run the best ready task, if any."""
        if self.paused:
            return False
        task = self.state.pop_ready()
        if task is None:
            return False
        self.lock.release()
        try:
            self.execute(task)
        finally:
            self.lock.acquire()
        return True

    def _spin_for(self) -> float:
        """A client placing tasks one after another sends the next within about a round
        trip of a result: a thread out of work waits awake that long before parking."""
        return SPIN if time.perf_counter() - self._placed_at < PLACING else 0.0

    def _on_idle(self) -> None:
        """Pool, lock held: a thread parks or blocks, and flushes its messages next."""
        now = threading.get_ident() != self.loop_thread
        self.apply(self.state.idle(not self.paused), now)  # paused: it would not run the work

    def execute(self, task: Any, inline: bool = False) -> None:
        """Run one task (already marked executing) on this thread and report it."""
        parent = current_task.get()
        depth = -task.priority[1] if len(task.priority) > 1 else 0
        ctx = TaskContext(self, task.key, depth, (parent.inline + 1) if inline and parent else 0)
        fbytes, abytes, ctx.attempt = task.recipe      # (a ready task's, kept until it ends)
        try:
            func = loads_function(fbytes)
            if task.deps:
                with self.lock:
                    values = {d: self.data[d] for d in task.deps}
            else:
                values = {}
            args, kwargs = loads_call(abytes, values)
        except Exception as exc:
            return self._failed(task.key, exc, "serialization",
                                f"cannot unpickle the function or arguments of {task.key}: "
                                f"{type(exc).__name__}: {exc}")
        if is_async(func):
            self.loop.call_soon_threadsafe(  # type: ignore[union-attr]
                lambda: self._spawn(self._run_async(task.key, ctx, func, args, kwargs)))
            return
        tokens = set_task(ctx)
        ident = threading.get_ident()
        contexts = self.contexts
        contexts[ident] = ctx
        start = time.time()
        ok = False
        try:
            result = func(*args, **kwargs)
            ok = True
        except BaseException as exc:  # noqa: B036 - a task's failure, whatever it is
            if isinstance(exc, (KeyboardInterrupt,)) and not inline:
                raise
            return self._failed(task.key, exc)
        finally:
            self.monitor.ran(task.key, start, time.time(), ok)
            reset_task(tokens)
            if parent is None:
                contexts.pop(ident, None)
            else:
                contexts[ident] = parent
        self._finished(task.key, result)

    async def _run_async(self, key: str, ctx: TaskContext, func: Any, args: tuple,
                         kwargs: dict) -> None:
        tokens = set_task(ctx)
        start = time.time()
        ok = False
        try:
            result = await func(*args, **kwargs)
            ok = True
        except BaseException as exc:  # noqa: B036
            if isinstance(exc, asyncio.CancelledError):
                raise
            return self._failed(key, exc)
        finally:
            self.monitor.ran(key, start, time.time(), ok)
            reset_task(tokens)
        self._finished(key, result)

    def _finished(self, key: str, result: Any) -> None:
        if self.monitor.output:       # what it printed reaches its client before its result
            self.send(self.monitor.take())
        inline = None
        inner: list[str] = []
        size = plain = plain_nbytes(result)
        if size is not None and size <= INLINE_LIMIT:
            # plain values: no futures inside, no out-of-band buffers, cannot fail
            inline = [unframed(pickle.dumps(result, protocol=5))]
            size = len(inline[0])
        elif size is None:
            # pickled now: to travel inline, to find futures inside, or to fail here,
            # where the error can still be the task's (large plain values wait until
            # a peer asks for them)
            try:
                with collect_inner() as inner:
                    frames = dumps_value(result)
            except SerializationError as exc:
                return self._failed(key, exc, "serialization",
                                    f"the result of {key} cannot be pickled: {exc}")
            size = nbytes(frames)
            if size <= INLINE_LIMIT:
                inline = [bytes(f) if isinstance(f, memoryview) else f for f in frames]
            elif self.shared.enabled:
                # one copy into shared memory now; same-host readers map it from then on
                shared = self.shared.share(key, frames)
                if shared is not None:
                    result = shared
        with self.lock:
            self.data[key] = result
            if inline is not None and plain is None:   # (a plain value pickles again
                self.frames_cache[key] = inline          # cheaply, if it is ever asked for)
            actions = self.state.finished(key, size, describe_type(result), inline,
                                          list(dict.fromkeys(inner)), self.client_comms)
            # nothing else to run: the result leaves now, written by this thread, rather
            # than batched until the thread parks or the batch's timer fires
            now = not self.state.has_ready() and threading.get_ident() != self.loop_thread
            done = self.apply(actions, now)
        self.settle(done)
        if now:
            self._wake()

    def _failed(self, key: str, exc: BaseException, kind: str = "exception",
                message: str | None = None) -> None:
        if self.monitor.output:
            self.send(self.monitor.take())
        if message is not None:
            tb = message
            frames: list = []
        else:
            remote = exc.__traceback__.tb_next if exc.__traceback__ else None  # (not ours)
            tb = "".join(traceback.format_exception(type(exc), exc, remote))
            exc.__traceback__ = None
            try:
                frames = dumps_value((exc, Traceback(remote).as_dict() if remote else None))
                loads_value(frames)   # must come back on the other side too
                frames = [bytes(f) if isinstance(f, memoryview) else f for f in frames]
            except Exception:
                frames = dumps_value(RuntimeError(f"{type(exc).__name__}: {exc}"))
        with self.lock:
            done = self.apply(self.state.erred(key, frames, tb, kind, self.client_comms))
        self.settle(done)


def _queue(comm: Comm, msg: m.Message, now: bool) -> None:
    if now:
        comm.send_threadsafe(msg, arm=False)
    else:
        comm.send_any(msg)


_MISSING = object()


def _towards(address: str) -> str:
    _, host, port = parse_address(address)
    return address_towards(host, port) or "127.0.0.1"


async def run_worker(scheduler_address: str, **kwargs: Any) -> Worker:
    worker = await Worker(scheduler_address, **kwargs).start()
    await worker.finished.wait()
    return worker


def _describe(frames: list) -> str:
    try:
        return repr(loads_value(frames))
    except Exception as exc:
        return f"(cannot unpickle the error: {exc})"
