"""Client: submit functions to the cluster, get Futures back.

    user thread ──submit/map/scatter──> comm (thread-safe queue) ──> scheduler
    io thread   <──key-memory/key-erred── scheduler: settles FutureStates
    gather ──> inline values, or get-data straight from the workers that hold them

A synchronous client runs its connection on one shared background loop thread;
``asynchronous=True`` runs it on the caller's loop. With no address it starts an
embedded LocalCluster and stops it on ``close()``.
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import threading
import uuid
from typing import Any, Callable, Iterable, Sequence

from ..memory import give_back, sparse, tune_allocator
from ..errors import (CallerError, ClosedClientError, CommClosedError, FutureCancelledError,
                      RemoteError)
from ..protocol import messages as m
from ..protocol.comm import Comm, connect
from ..protocol.peers import PeerPool
from ..protocol import sharedmem
from ..protocol.serialize import dumps_call, dumps_function
from ..names import content_key, funcname as _funcname, hasher, unique_token
from ..registry import clients as _clients, set_default
from ..timeouts import parse_timeout
from ..tls import client_ssl_context
from ..version import __version__
from .future import Future, FutureState, error_from
from .loop import get_runner
from . import cancelling, coordination, gathering, operations, queries, scattering
from .operations import resources_arg
from .placing import Placing
from .output import OutputPrinter
from .reconnect import RESENT, Reconnection
from .streaming import CHUNK, MapCall, stream_map

log = logging.getLogger("tasknest.client")

_seq = itertools.count()


def _unsupported(**options: Any) -> None:
    for name, value in options.items():
        if value:
            raise CallerError(f"{name}= is not supported by this version of tasknest")


class Client:
    """A connection to a tasknest cluster. ``Executor`` is the same class."""

    _worker_side = False

    def __init__(self, address: Any = None, timeout: float | str | None = None,
                 asynchronous: bool = False, token: str | None = None, security: Any = None,
                 name: str | None = None, set_as_default: bool = True,
                 forward_output: bool = True,
                 reconnect_timeout: float | str | None = None,
                 **cluster_kwargs: Any) -> None:
        tune_allocator()    # (this process gives memory back after large runs)
        seconds = parse_timeout(timeout)
        if seconds is None:        # (the configuration's client.timeout, 10 s by default)
            from ..config import get
            seconds = float(get("client.timeout"))
        timeout = seconds
        again = parse_timeout(reconnect_timeout)
        if again is None:          # (the configuration's client.reconnect-timeout, 60 s)
            from ..config import get
            again = float(get("client.reconnect-timeout"))
        self.reconnect_timeout = again    # how long a lost scheduler may take to come back
        self.id = f"c-{name or 'client'}-{uuid.uuid4().hex[:12]}"
        self.asynchronous = asynchronous
        self.timeout = timeout
        self.status = "new"
        self._lock = threading.RLock()     # RLock: a Future.__del__ may run while it is held
        self._states: dict[str, FutureState] = {}
        self._replies: dict[int, asyncio.Future] = {}
        self._rid = 0
        self._comm: Comm | None = None
        self._cluster: Any = None          # a LocalCluster, or what gave the address
        self._owns_cluster = False
        self._security = security
        self._token = token
        self._set_as_default = set_as_default
        self._address = address
        self._cluster_kwargs = cluster_kwargs
        self._peers: PeerPool | None = None
        self._sender: Any = None                  # streaming.Sender, once map() streams
        self._placing = Placing(self)             # tasks placed straight on workers
        self._reconnection = Reconnection(self)   # a lost scheduler: the way back
        self._requests: dict[int, m.Message] = {}  # rid -> request, until its reply
        self._scattering: dict[int, list] = {}     # scatter-plan rid -> its values' frames
        self._scatter_sends: set[asyncio.Future] = set()   # parts on their way to workers
        self._info: dict = {}                       # what the scheduler said at welcome
        self.forward_output = forward_output        # print what our tasks print
        self._output = OutputPrinter()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        if cluster_kwargs and address is not None:
            raise CallerError(f"unexpected arguments {sorted(cluster_kwargs)} "
                              "(cluster options apply only when no address is given)")
        if not asynchronous:
            self._start_sync()

    # -- starting and stopping ---------------------------------------------------------
    def _resolve_address(self) -> None:
        address = self._address
        if address is None and not self._cluster_kwargs:    # (python -m tasknest.run sets it)
            import os
            address = os.environ.get("TASKNEST_SCHEDULER_ADDRESS") or None
        if address is None:
            # layer exception: with no address, Client() starts (and owns) a LocalCluster
            from ..deploy.local import LocalCluster
            self._cluster = LocalCluster(**self._cluster_kwargs)
            self._owns_cluster = True
            address = self._cluster
        if hasattr(address, "scheduler_address"):
            self._cluster = address if self._cluster is None else self._cluster
            self._token = self._token or address.token
            self._security = self._security or getattr(address, "security", None)
            address = address.scheduler_address
        if not isinstance(address, str):
            raise CallerError(f"address must be a 'tcp://host:port' string, a LocalCluster "
                              f"or None, got {address!r}")
        if self._token is None:
            import os
            self._token = os.environ.get("TASKNEST_TOKEN")
        self.scheduler_address = address

    def _start_sync(self) -> None:
        self._resolve_address()
        runner = get_runner()
        self.loop = runner.loop
        self._loop_thread = runner.thread.ident
        try:
            runner.run(self._connect(), timeout=self.timeout + 5)
        except BaseException:
            if self._owns_cluster and self._cluster is not None:
                self._cluster.close()
            raise
        self._started()

    async def _start_async(self) -> "Client":
        if self.status == "running":
            return self
        loop = asyncio.get_running_loop()
        if self._address is None:
            await loop.run_in_executor(None, self._resolve_address)
        else:
            self._resolve_address()
        self.loop = loop
        self._loop_thread = threading.get_ident()
        await self._connect()
        self._started()
        return self

    def _started(self) -> None:
        self.status = "running"
        _clients.add(self)
        if self._set_as_default:
            set_default(self)

    async def _connect(self) -> None:
        ssl_ctx = client_ssl_context(self._security, self.scheduler_address)
        # threadsafe: the user's thread writes its submits itself (no wait for the loop)
        comm = await connect(self.scheduler_address, self._token, timeout=self.timeout,
                             ssl_context=ssl_ctx, threadsafe=not self.asynchronous)
        self._peers = PeerPool(self.id, self._token, ssl_ctx, timeout=self.timeout,
                               on_push=self._handle, on_lost=self._stream_lost,
                               host=sharedmem.host_id() if sharedmem.available() else "")
        await self._open(comm)

    async def _open(self, comm: Comm | None = None) -> None:
        """Connect to the scheduler (again) under this client's id."""
        if comm is None:
            comm = await connect(self.scheduler_address, self._token, timeout=self.timeout,
                                 ssl_context=client_ssl_context(self._security,
                                                                self.scheduler_address),
                                 threadsafe=not self.asynchronous)
        welcome = asyncio.get_running_loop().create_future()
        self._welcome = welcome
        comm.start(self._handle)
        # (a scheduler killed before it welcomed us: try again at once, not after the timeout)
        comm.fail_on_close(welcome, "the welcome")
        comm.when_closed(self._on_comm_closed)
        comm.send(m.RegisterClient(self.id, __version__))
        self._comm = comm
        try:
            await asyncio.wait_for(welcome, self.timeout)
        except asyncio.TimeoutError:
            comm.close("no welcome")
            raise CommClosedError(f"scheduler at {self.scheduler_address} did not answer "
                                  f"within {self.timeout} s") from None

    def __await__(self) -> Any:
        return self._start_async().__await__()

    async def __aenter__(self) -> "Client":
        return await self._start_async()

    async def __aexit__(self, *exc: Any) -> None:
        await self._close_async()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self, timeout: float | None = None) -> Any:
        """Disconnect; stop the embedded cluster if this client started it.

        Futures still pending fail with ClosedClientError. Closing twice is harmless.

        Args:
            timeout: accepted for dask compatibility.

        Returns:
            None; with ``asynchronous=True`` an awaitable that closes.
        """
        if self.asynchronous:
            return self._close_async()
        if self.status == "closed":
            return None
        self.status = "closed"
        if self.loop is not None and self._comm is not None:
            try:
                get_runner().run(self._close_comm(), timeout=5)
            except Exception:
                pass
        self._fail_pending(ClosedClientError("the client was closed"))
        if self._owns_cluster and self._cluster is not None:
            self._cluster.close()
        return None

    async def _close_async(self) -> None:
        if self.status == "closed":
            return
        self.status = "closed"
        await self._close_comm()
        self._fail_pending(ClosedClientError("the client was closed"))
        if self._owns_cluster and self._cluster is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._cluster.close)

    async def _close_comm(self) -> None:
        output = getattr(self, "_output", None)
        if output is not None:
            output.close()           # (a count of repeated lines still to show)
        if self._comm is not None:
            self._comm.flush()
            self._comm.close("client closed")
        if self._peers is not None:
            self._peers.close()

    def _fail_pending(self, error: BaseException) -> None:
        with self._lock:
            states = [st for st in self._states.values() if not st.done()]
            replies, self._replies = self._replies, {}
        for st in states:
            st.fail(error, None)
        def fail(f: asyncio.Future) -> None:
            if not f.done():
                f.set_exception(error)
        for fut in replies.values():
            if not fut.done():
                fut.get_loop().call_soon_threadsafe(fail, fut)

    def _stream_lost(self, address: str) -> None:
        """A worker connection closed: a result it was to push may be lost with it, so
        ask the scheduler again for everything still awaited (it then tells us itself),
        and have it send what we placed there the usual way."""
        if self.status != "running" or self._comm is None:
            return
        with self._lock:
            pending = [k for k, st in self._states.items() if not st.done()]
            self._placing.lane_lost(address)
        self._comm.send(m.LaneLost(address))
        if pending:
            self._comm.send(m.Remind(pending))

    def _on_comm_closed(self, comm: Comm) -> None:
        self._reconnection.lost(comm)      # (reconnect.py: wait for it to come back)

    def _check(self) -> None:
        if self.status != "running" and self.status != "reconnecting":
            if self.status == "new":
                raise ClosedClientError("the client is not started: use `await Client(...)` "
                                        "or `async with Client(...)` in async code")
            raise ClosedClientError("the client is closed")

    # -- messages from the scheduler (loop thread) ----------------------------------------
    def _handle(self, msg: m.Message) -> None:
        """A message from the scheduler (or a worker's result, straight): dispatched to
        ``_on_<op>``."""
        handler = _HANDLERS.get(msg.op)
        if handler is None:
            log.debug("client ignores %s", msg.op)
            return
        if isinstance(msg, (m.KeyMemory, m.KeyErred, m.KeyCancelled)):
            if self._placing.placed:
                self._placing.done(msg)
        getattr(self, handler)(msg)

    def _on_key_memory(self, msg: m.KeyMemory) -> None:
        st = self._states.get(msg.key)
        if st is not None:
            st.finish(msg.type, msg.nbytes, msg.who_has, sharedmem.mapped(msg.value))
        peers = self._peers
        if msg.who_has and not self._worker_side and peers is not None:
            # results from that worker will come straight from it from now on
            peers.ensure(msg.who_has[0])

    def _on_key_erred(self, msg: m.KeyErred) -> None:
        st = self._states.get(msg.key)
        if st is not None:
            st.fail(error_from(msg.exception, msg.traceback, msg.kind), msg.traceback or None,
                    "cancelled" if msg.kind == "cancelled" else
                    "lost" if msg.kind == "lost" else "error")

    def _on_key_cancelled(self, msg: m.KeyCancelled) -> None:
        st = self._states.get(msg.key)
        if st is not None:
            key, reason = msg.key, msg.reason
            text = reason if reason.startswith(key) else f"{key} was cancelled: {reason}"
            st.fail(FutureCancelledError(text), None, "cancelled")

    def _on_reply(self, msg: m.Reply) -> None:
        self._requests.pop(msg.rid, None)
        fut = self._replies.pop(msg.rid, None)
        if fut is not None and not fut.done():
            if msg.error:
                fut.set_exception(RemoteError(msg.error))
            else:
                fut.set_result(msg.value)

    def _on_warn(self, msg: m.Warn) -> None:
        log.warning("%s", msg.text)

    def _on_output(self, msg: m.Output) -> None:
        if self.forward_output:
            self._output.show(msg.lines)

    def _on_welcome(self, msg: m.Welcome) -> None:
        self._info = msg.info
        if not self._welcome.done():
            self._welcome.set_result(msg)

    def _on_refused(self, msg: m.Refused) -> None:
        if not self._welcome.done():
            self._welcome.set_exception(CallerError(msg.reason))

    # -- reference counting ---------------------------------------------------------------
    def _send(self, msg: m.Message) -> None:
        comm = self._comm
        if comm is None:
            raise ClosedClientError("the client is not connected")
        if self.status == "reconnecting":
            return          # (what is still needed is said again once reconnected)
        comm.send_any(msg)

    def _acquire(self, key: str, inform: bool = True) -> FutureState:
        with self._lock:
            st = self._states.get(key)
            if st is None:
                st = self._states[key] = FutureState()
                new = True
            else:
                st.refs += 1
                new = False
        if new and inform and self.status == "running":
            self._send(m.Want([key]))
        return st

    def _release(self, key: str, state: FutureState | None = None) -> None:
        with self._lock:
            st = self._states.get(key)
            if state is not None and st is not state:
                return          # a future of an earlier life of the key (cancelled)
            if st is not None and st.refs > 1:
                st.refs -= 1
                return
            self._states.pop(key, None)
            if st is not None and st.recipe is not None:
                st.drop()
            self._placing.placed.pop(key, None)
            emptied = not self._states and sparse(self._states)
        if emptied and not self._worker_side:    # the last future of a large run went
            self._give_back_soon()
        # (its value may have been the last over a file; one it scattered is let go)
        sharedmem.sweep_soon(self.loop, self._peers.lent.pop(key, ("",))[0] if self._peers else "")
        if self.status == "running":
            # always through the thread-safe queue: this may run inside a garbage
            # collection that interrupted a send on the loop thread
            comm = self._comm
            if comm is not None:
                comm.send_threadsafe(m.Release([key]))

    def compact(self) -> bool:
        """Right-size the future tables a large run left mostly empty; True if any was."""
        with self._lock:
            shrank = sparse(self._states)
            if shrank:
                self._states = dict(self._states)
            self._placing.compact()
        return shrank

    def _give_back_soon(self) -> None:
        """Once, on the loop thread (not inside the garbage collection or the user's
        ``del`` that dropped the futures): shrink the tables, return the memory."""
        def run() -> None:
            self._give_back_pending = False
            if self.compact():
                give_back()
        if self.loop is None or getattr(self, "_give_back_pending", False):
            return
        self._give_back_pending = True
        try:
            self.loop.call_soon_threadsafe(run)
        except RuntimeError:     # the loop is closed: nothing left to give back
            pass

    def _new_future(self, key: str, recipe: tuple | None = None) -> tuple[Future, bool]:
        """A future of ``key``; True if the key is new here (then its state keeps
        ``recipe``, to send it again if the scheduler restarts before the result)."""
        with self._lock:
            st = self._states.get(key)
            new = st is None
            if st is None:
                st = self._states[key] = FutureState(recipe)
                if recipe is not None and type(recipe[0]) is MapCall:
                    recipe[0].sent += 1          # (its window of tasks in flight)
            else:
                st.refs += 1
        fut = Future.__new__(Future)
        fut.key, fut.client, fut._state, fut._held = key, self, st, True
        return fut, new

    # -- submitting -------------------------------------------------------------------------
    def _depth(self) -> int:
        return 0

    def submit(self, func: Callable, *args: Any, key: str | None = None,
               workers: Any = None, resources: dict | None = None, retries: int | None = 0,
               priority: int = 0, fifo_timeout: Any = "100 ms",
               allow_other_workers: bool = False, actor: bool = False, actors: bool = False,
               pure: bool = True, **kwargs: Any) -> Future:
        """Run ``func(*args, **kwargs)`` on the cluster.

        Args:
            func: any picklable callable (cloudpickle pickles lambdas and closures).
            *args, **kwargs: its arguments; futures among them are waited for and
                replaced by their values on the worker.
            key: the task's name; by default ``funcname-<hash of the call>`` when
                ``pure``, so equal calls share one task, else a fresh one.
            workers: an address, a name or a list of them the task must run on.
            retries: times to rerun the task if it raises.
            priority: higher runs first among tasks ready at once.
            pure: False gives every call its own task.
            resources: e.g. ``{"GPU": 1}``: only where that much is free, held while
                it runs.
            allow_other_workers: ``workers=`` is a wish (anywhere if none is there).
            actor: ``func`` is a class; the future's result is an Actor proxy.
            fifo_timeout, actors: dask's names, taken so that they never reach
                ``func`` as keywords.

        Returns:
            a Future.

        Raises:
            CallerError: bad arguments; FutureCancelledError: an argument is a
            cancelled future; ClosedClientError: the client is closed.
        """
        self._check()
        if not callable(func):
            raise CallerError(f"submit() needs a callable as its first argument, got "
                              f"{type(func).__name__} {func!r:.60}")
        if actor:
            from .actor import submit_actor
            return submit_actor(self, func, args, kwargs, key, workers, resources,
                                allow_other_workers)
        if key is not None and (not isinstance(key, str) or not key):
            raise CallerError(f"key must be a non-empty string, got {key!r}")
        retries = _checked_options(retries, priority, actors)
        fbytes = dumps_function(func)
        abytes, deps, futures = dumps_call(args, kwargs, Future)
        if futures:
            self._check_own(futures, "submit()")
        fresh = key is None and not pure     # a key nobody else can be submitting
        if key is None:
            if pure:
                key = content_key(_funcname(func), hasher(fbytes, abytes))
            else:
                key = self._impure_key(func, fbytes, abytes)
        return self._submit_key(key, fbytes, abytes, deps,
                                [priority, self._depth(), next(_seq)], retries,
                                self._workers_arg(workers), resources_arg(resources),
                                bool(allow_other_workers), fresh)

    def _impure_key(self, func: Callable, fbytes: bytes, abytes: bytes) -> str:
        """A fresh key for a ``pure=False`` call."""
        return f"{_funcname(func)}-{unique_token()}"

    @staticmethod
    def _workers_arg(workers: Any) -> list | None:
        if workers is None:
            return None
        if isinstance(workers, str):
            return [workers]
        try:
            out = list(workers)
        except TypeError:
            raise CallerError(f"workers must be an address, a name or a list of them, "
                              f"got {workers!r}") from None
        if not all(isinstance(w, str) for w in out):
            raise CallerError(f"workers must be addresses or names (strings), got {workers!r}")
        return out

    def _submit_key(self, key: str, fbytes: bytes, abytes: bytes, deps: list[str],
                    priority: list, retries: int, workers: list | None,
                    resources: dict | None = None, loose: bool = False,
                    fresh: bool = False, recipe: tuple | None = None) -> Future:
        """``recipe``: what to keep to send it again, if not the arguments themselves
        (a map's item keeps (its map, args[, deps]): streaming.full_recipe)."""
        fut, new = self._new_future(key, recipe if recipe is not None else (
            fbytes, abytes, deps, priority, retries, workers, resources, loose))
        if new:
            placing = self._placing
            lane = None if deps or resources else placing.lane() if workers is None \
                else placing.lane_to(workers[0][1:]) if len(workers) == 1 and \
                workers[0][:1] == "!" else None
            if lane is None:
                self._send(m.Submit(key, fbytes, abytes, deps, priority, retries, workers,
                                    resources, loose))
            else:
                placing.place(key, fbytes, abytes, priority, retries, *lane,
                            pinned=workers is not None)
        return fut

    def map(self, func: Callable, *iterables: Iterable, key: Any = None,
            workers: Any = None, resources: dict | None = None, retries: int | None = 0,
            priority: int = 0, fifo_timeout: Any = "100 ms", allow_other_workers: bool = False,
            actor: bool = False, actors: bool = False, pure: bool = True,
            batch_size: int | None = None, **kwargs: Any) -> list[Future]:
        """submit() for each element of the iterables (zipped, like the built-in map).

        Args:
            key: a list of keys, one per element, or a string prefix: keys are then
                ``prefix-<hash>`` (``prefix-<fresh token>`` when not ``pure``).
            func, *iterables: the function, and the iterables whose elements are its
                positional arguments.
            batch_size: send the tasks this many at a time (by default 1,000).
            workers, resources, retries, priority, fifo_timeout, allow_other_workers,
            actor, actors, pure: as for submit().
            **kwargs: keyword arguments of every call.

        Returns:
            a list of Futures, in the order of the elements. Beyond the first 1,000
            tasks (or ``batch_size``), map() returns before the rest are sent: a
            background thread sends them in chunks, held back while the connection
            has much unsent, and a future asked for its key or result before its
            chunk left sends that chunk itself. An argument that cannot be pickled
            raises here if it is among the first chunk, else fails its own future.
        """
        self._check()
        if not callable(func):
            raise CallerError(f"map() needs a callable as its first argument, got {func!r:.60}")
        if not iterables:
            raise CallerError("map() needs at least one iterable")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise CallerError(f"batch_size must be a positive integer, got {batch_size!r}")
        if key is not None and not isinstance(key, (str, list, tuple)):
            raise CallerError(f"key must be a prefix string or a list of keys, got {key!r:.60}")
        # (one iterable: its elements as they are, no tuple each until they are sent)
        single = len(iterables) == 1 and not actor and not self._worker_side
        # (a range stays one: its chunks are ranges too, not a million ints at once)
        items: Sequence = (iterables[0] if type(iterables[0]) is range
                           else list(iterables[0])) if single else list(zip(*iterables))
        keys = key if isinstance(key, (list, tuple)) else None
        if keys is not None and len(keys) != len(items):
            raise CallerError(f"map() got {len(keys)} keys for {len(items)} items")
        prefix = key if isinstance(key, str) else None
        chunk = batch_size or CHUNK
        if len(items) > chunk and not self._worker_side and not actor:
            return self._stream_map(func, items, single, kwargs, keys, prefix, pure,
                                    workers, resources, retries, priority,
                                    allow_other_workers, actors, chunk)
        calls: Sequence[tuple] = [(x,) for x in items] if single else items
        options = dict(workers=workers, resources=resources, retries=retries,
                       priority=priority, allow_other_workers=allow_other_workers,
                       actor=actor, actors=actors)
        out = []
        for i, args in enumerate(calls):
            k = keys[i] if keys else None
            if prefix is not None:
                k = self._prefixed_key(prefix, func, args, kwargs, pure)
            out.append(self.submit(func, *args, key=k, pure=pure, **options, **kwargs))
            if batch_size is not None and (i + 1) % batch_size == 0:
                self._wake()
        return out

    def _stream_map(self, func: Callable, items: Sequence, single: bool, kwargs: dict, keys: Any,
                    prefix: str | None, pure: bool, workers: Any, resources: Any,
                    retries: Any, priority: Any, loose: Any, actors: Any,
                    chunk: int) -> list[Future]:
        """map() of more than a chunk: checks what submit() would check of every call,
        once, then streams (streaming.py)."""
        retries = _checked_options(retries, priority, actors)
        if keys is not None:
            for k in keys:
                if not isinstance(k, str) or not k:
                    raise CallerError(f"key must be a non-empty string, got {k!r}")
        return stream_map(self, func, dumps_function(func), items, single, kwargs, keys,
                          prefix, pure, priority, _seq, retries, self._workers_arg(workers),
                          resources_arg(resources), bool(loose), chunk)

    @staticmethod
    def _prefixed_key(prefix: str, func: Callable, args: tuple, kwargs: dict,
                      pure: bool) -> str:
        if not pure:
            return f"{prefix}-{unique_token()}"
        return content_key(prefix, hasher(dumps_function(func),
                                          dumps_call(args, kwargs, Future)[0]))

    # -- scatter (scattering.py) -----------------------------------------------------
    scatter = scattering.scatter
    _scatter_shape = staticmethod(scattering.scatter_shape)
    _scatter = scattering.scatter_keys
    _on_scatter_to = scattering.on_scatter_to
    _scatter_part = scattering.scatter_part

    # -- operations on the cluster (operations.py) ---------------------------------------------
    run = operations.run
    run_on_scheduler = operations.run_on_scheduler
    restart = operations.restart
    retire_workers = operations.retire_workers
    register_plugin = operations.register_plugin
    upload_file = operations.upload_file
    get_executor = operations.get_executor

    @property
    def cluster(self) -> Any:
        """The cluster this client started (or was given), if any."""
        return self._cluster

    # -- published datasets (coordination.py) ----------------------------------------------------
    publish_dataset = coordination.publish_dataset
    get_dataset = coordination.get_dataset
    list_datasets = coordination.list_datasets
    unpublish_dataset = coordination.unpublish_dataset

    # -- requests -------------------------------------------------------------------------------
    def _request(self, msg: m.Request, timeout: float | None = None,
                 scattering: list | None = None) -> Any:
        if self.asynchronous:
            return self._request_async(msg, timeout, scattering)
        return self._run(self._request_async(msg, timeout, scattering),
                         None if timeout is None else timeout + 1)

    async def _request_async(self, msg: m.Request, timeout: float | None = None,
                             scattering: list | None = None) -> Any:
        """The reply's value; ``scattering``: a scatter-plan's frames, kept for scatter-to
        until the reply."""
        self._check()
        self._rid += 1
        rid = msg.rid = self._rid
        fut = asyncio.get_running_loop().create_future()
        self._replies[rid] = fut
        if msg.op in RESENT:
            self._requests[rid] = msg
        comm = self._comm
        if self.status != "reconnecting" and comm is not None:   # (running: it is set)
            comm.send(msg)
        if scattering is None:
            return await asyncio.wait_for(fut, timeout)
        self._scattering[rid] = scattering
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._scattering.pop(rid, None)

    # -- what the cluster knows (queries.py) -----------------------------------------
    _query = queries.query
    who_has = queries.who_has
    has_what = queries.has_what
    get_worker_logs = queries.get_worker_logs
    get_task_stream = queries.get_task_stream
    scheduler_info = queries.scheduler_info
    nthreads = queries.nthreads
    processing = queries.processing
    _shaped = queries.shaped
    _by_workers = queries.by_workers
    wait_for_workers = queries.wait_for_workers
    _wait_for_workers_async = queries.wait_for_workers_async

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard's URL, with the key that lets a browser in (None without one)."""
        return self._info.get("dashboard")

    @property
    def futures(self) -> dict[str, Future]:
        """The futures this client holds, by key (one new Future object each)."""
        with self._lock:
            keys = list(self._states)
        return {k: self._new_future(k)[0] for k in keys if k in self._states}

    # -- cancelling and retrying (cancelling.py) -------------------------------------
    cancel = cancelling.cancel
    retry = cancelling.retry
    _fire_and_forget = cancelling.fire_and_forget

    # -- gathering (gathering.py) ----------------------------------------------------
    gather = gathering.gather
    _by_key = staticmethod(gathering.by_key)
    _wait_states = gathering.wait_states
    _wait_in_order = gathering.wait_in_order
    _gather_sync = gathering.gather_sync
    _values = gathering.values
    _check_own = gathering.check_own
    _raise_errors = gathering.raise_errors
    _fetch_sync = gathering.fetch_sync
    _fetch = gathering.fetch
    _gather_async = gathering.gather_async
    _aio_wait = gathering.aio_wait

    def _in_own_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def _wake(self) -> None:
        """About to wait: send what this process queued for the scheduler now."""
        comm = self._comm
        if comm is not None:
            comm.wake()

    def _lend(self) -> Any:
        """Around a wait: a task's client lends its thread's slot meanwhile."""
        return contextlib.nullcontext()

    def _help(self, futures: list[Future], satisfied: Callable[[], bool]) -> bool:
        """Run some of these futures' tasks on this thread; True if any ran."""
        return False

    def _lending(self) -> Any:
        """Context around a wait on the scheduler (a task lends its slot meanwhile)."""
        return contextlib.nullcontext()

    def _run(self, coro: Any, timeout: float | None = None) -> Any:
        """Run a coroutine on this client's loop from another thread and wait."""
        return get_runner().run(coro, timeout)

    def __repr__(self) -> str:
        addr = getattr(self, "scheduler_address", "?")
        return f"<Client: {addr} status={self.status}>"


Executor = Client


def _checked_options(retries: Any, priority: Any, actors: Any) -> int:
    """submit()'s and map()'s options checked once: the retries to use."""
    retries = 0 if retries is None else retries
    if not isinstance(retries, int) or retries < 0:
        raise CallerError(f"retries must be a non-negative integer, got {retries!r}")
    if not isinstance(priority, (int, float)):
        raise CallerError(f"priority must be a number, got {priority!r}")
    _unsupported(actors=actors)
    return retries

# op -> the name of its handler (looked up on the instance: a subclass may override one)
_HANDLERS = {op: m.handler_name(op)
             for op in ("key-memory", "key-erred", "key-cancelled", "reply", "warn", "output",
                        "welcome", "refused", "scatter-to")}


@atexit.register
def _close_all() -> None:
    for c in list(_clients):
        try:
            if not c.asynchronous:
                c.close()
        except Exception:
            pass
