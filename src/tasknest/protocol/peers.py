"""Direct connections to workers: data transfer with request ids, and result pushes.

    worker/client ──get-data(rid, keys)──> peer worker
                  <──data(rid, {key: frames|None})──
    client        ──scatter-data(rid, id, keys, values)──> worker (its part of a scatter)
                  <──put-data-done(rid, keys, nbytes)── (stored; the scheduler told)
    client        ──place──────────────────> worker (a task, straight)
                  <──key-memory/key-erred── worker (results it waits for, one hop)

A pool that names its host (``peer-host``) gets large values of workers on the
same host as shared-memory references, and maps them; one it cannot map is asked
for again over TCP. The worker names its own host in return: a client scattering
to a worker of its host writes each large value into a segment once and sends the
reference (the worker maps it); the segment is the client's until it lets go of
the key.

A frame is never interleaved with another on its connection, so a request waits
behind a large value that is being received on it. ``get-data`` therefore goes
over a connection with no request outstanding: the first one to a worker (if it
carries nothing else), else one of up to ``DATA_COMMS`` more, opened on demand.
A client's first connection carries its placed tasks and their results, so its
requests for data always take one of the others.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import threading
import time
from typing import Any, Callable

from ..errors import CommClosedError
from . import messages as m, sharedmem
from .comm import Comm, connect

log = logging.getLogger("tasknest.peers")
PUSHED = frozenset({"key-memory", "key-erred"})   # what a worker sends a client unasked


class PeerPool:
    RETRY_AFTER = 30.0     # seconds before ensure() tries a worker it could not reach
    DATA_COMMS = 4         # connections for data per worker, besides the first

    def __init__(self, name: str, token: Any, ssl_context: ssl.SSLContext | None = None,
                 timeout: float = 10.0, on_push: Callable[[m.Message], Any] | None = None,
                 on_lost: Callable[[str], Any] | None = None, host: str = "") -> None:
        self.name = name
        self.token = token
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.on_push = on_push        # messages a worker sends unasked (key-memory)
        self.on_lost = on_lost        # a connection closed (pushes on it may be lost): its address
        self.comms: dict[str, Comm] = {}
        self.data_comms: dict[str, list[Comm]] = {}   # more connections, for data only
        self.connecting: dict[str, asyncio.Future] = {}
        self.pending: dict[int, tuple[asyncio.Future, Comm]] = {}
        self.unreachable: dict[str, float] = {}
        self.rid = 0
        self.closed = False
        self.host = host              # sharedmem.host_id() if this process maps segments
        self.hosts: dict[str, asyncio.Future] = {}   # address -> the host its worker names
        # key -> (segment of ours the workers map it from, its reference)
        self.lent: dict[str, tuple[str, list]] = {}
        self._lending = threading.Lock()     # (a broadcast's writes: one segment a key)

    def ensure(self, address: str) -> None:
        """Open a connection to ``address`` in the background, if there is none."""
        if address in self.comms or address in self.connecting or self.closed:
            return
        failed = self.unreachable.get(address)
        if failed is not None and time.monotonic() - failed < self.RETRY_AFTER:
            return
        fut = self.connecting[address] = asyncio.ensure_future(self._connect(address))

        def done(f: asyncio.Future) -> None:
            self.connecting.pop(address, None)
            if not f.cancelled() and f.exception() is not None:
                self.unreachable[address] = time.monotonic()
        fut.add_done_callback(done)

    async def _comm(self, address: str) -> Comm:
        comm = self.comms.get(address)
        if comm is not None and not comm.closed:
            return comm
        fut = self.connecting.get(address)
        if fut is None:
            fut = self.connecting[address] = asyncio.ensure_future(self._connect(address))
            fut.add_done_callback(lambda _: self.connecting.pop(address, None))
        return await asyncio.shield(fut)

    async def _connect(self, address: str, data: bool = False) -> Comm:
        comm = await connect(address, self.token, timeout=self.timeout, retry=False,
                             ssl_context=self.ssl_context)
        comm.start(functools.partial(self._on_message, address))
        comm.on_close.append(self._on_close)
        if not data:         # (a data connection does not stand for the client: no pushes)
            comm.send(m.RegisterPeer(self.name))
        if self.host:
            self.hosts.setdefault(address, asyncio.get_running_loop().create_future())
            comm.send(m.PeerHost(self.host))
        if data:
            self.data_comms.setdefault(address, []).append(comm)
        else:
            self.comms[address] = comm
        return comm

    def _outstanding(self, comm: Comm) -> int:
        return sum(1 for _, c in self.pending.values() if c is comm)

    async def _data_comm(self, address: str) -> Comm:
        """A connection to ask for data on, with no request outstanding if possible."""
        main = await self._comm(address)
        extra = [c for c in self.data_comms.get(address, ()) if not c.closed]
        candidates = extra if self.on_push is not None else [main, *extra]
        for comm in candidates:
            if not self._outstanding(comm):
                return comm
        if len(extra) < self.DATA_COMMS and not self.closed:
            try:
                return await self._connect(address, data=True)
            except (OSError, CommClosedError) as exc:
                log.info("no further connection to %s (%s): sharing one", address, exc)
        return min(candidates or [main], key=self._outstanding)

    def _on_message(self, address: str, msg: m.Message) -> None:
        if msg.op in PUSHED:        # (the most frequent: a result straight from a worker)
            if self.on_push is not None:
                self.on_push(msg)
        elif isinstance(msg, (m.Data, m.PutDataDone)):
            entry = self.pending.pop(msg.rid, None)
            if entry is not None and not entry[0].done():
                entry[0].set_result(msg.values if isinstance(msg, m.Data) else msg.keys)
        elif isinstance(msg, m.PeerHost):
            named = self.hosts.get(address)
            if named is not None and not named.done():
                named.set_result(msg.host)

    def _on_close(self, comm: Comm) -> None:
        for rid, (fut, c) in list(self.pending.items()):
            if c is comm:
                del self.pending[rid]
                if not fut.done():
                    fut.set_exception(CommClosedError(f"peer closed: {comm.close_reason}"))
        address = None
        for addr, c in list(self.comms.items()):
            if c is comm:
                del self.comms[addr]
                address = addr
        for addr, extra in list(self.data_comms.items()):
            if comm in extra:
                extra.remove(comm)
                if not extra:
                    del self.data_comms[addr]
        if self.on_lost is not None and not self.closed and address is not None:
            self.on_lost(address)

    async def get_data(self, address: str, keys: list[str]) -> dict[str, Any]:
        """{key: frames or None} from the worker at ``address``."""
        comm = await self._data_comm(address)
        values = await self._ask(comm, lambda rid: m.GetData(rid, keys))
        failed = []
        for key, frames in values.items():
            if sharedmem.is_shared(frames):
                try:
                    values[key] = sharedmem.attach(frames)
                except (OSError, ValueError) as exc:
                    failed.append(key)
                    log.info("cannot map %s from %s (%s): fetching it over TCP", key, address, exc)
        if failed:        # not this host's memory after all, or freed meanwhile
            comm.send(m.PeerHost(""))
            values.update(await self._ask(comm, lambda rid: m.GetData(rid, failed)))
        return values

    async def put_data(self, address: str, scatter: int, keys: list[str],
                       values: list) -> list[str]:
        """Our part of scatter ``scatter`` stored by the worker at ``address``: the keys
        it stored. Raises OSError or CommClosedError if it cannot be handed over."""
        failed = self.unreachable.get(address)
        if failed is not None and time.monotonic() - failed < self.RETRY_AFTER:
            raise CommClosedError(f"{address} was unreachable {time.monotonic() - failed:.0f} s ago")
        try:      # (a connection with nothing outstanding: the values go out at once)
            comm = await self._data_comm(address)
        except (OSError, CommClosedError, asyncio.TimeoutError):
            self.unreachable[address] = time.monotonic()
            raise
        if any(sharedmem.buffers_size(f) >= sharedmem.SHM_MIN for f in values) \
                and await self._same_host(address):     # written once, in a thread
            values = await asyncio.get_running_loop().run_in_executor(
                None, self._lend, keys, values)
        return await self._ask(comm, lambda rid: m.ScatterData(rid, scatter, keys, values))

    async def _same_host(self, address: str) -> bool:
        named = self.hosts.get(address)
        if named is None:
            return False
        try:
            return await asyncio.wait_for(asyncio.shield(named), self.timeout) == self.host
        except asyncio.TimeoutError:
            return False

    def _lend(self, keys: list[str], values: list) -> list:
        """Large values written into segments of ours (once a key, whichever worker
        it goes to): references to send instead."""
        out = []
        with self._lending:
            for key, frames in zip(keys, values):
                if sharedmem.buffers_size(frames) >= sharedmem.SHM_MIN:
                    if key not in self.lent:
                        try:
                            ref, name, _ = sharedmem.export(frames)
                        except OSError as exc:         # /dev/shm full, say: the bytes go
                            log.info("cannot share %s through shared memory: %s", key, exc)
                            out.append(frames)
                            continue
                        self.lent[key] = (name, ref)
                    frames = self.lent[key][1]
                out.append(frames)
        return out

    def _ask(self, comm: Comm, request: Any) -> "asyncio.Future[Any]":
        """Send ``request(rid)`` on ``comm``; the future of its answer. On a connection
        already closed it fails at once: its close handler, which fails what is
        pending on it, ran before this request was (the fetch waited forever)."""
        fut = asyncio.get_running_loop().create_future()
        if comm.closed:
            fut.set_exception(CommClosedError(f"peer closed: {comm.close_reason}"))
            return fut
        self.rid += 1
        self.pending[self.rid] = (fut, comm)
        comm.send(request(self.rid))
        return fut

    def close(self) -> None:
        self.closed = True
        for comm in [*self.comms.values(), *(c for cs in self.data_comms.values() for c in cs)]:
            comm.close("peer pool closed")
        self.comms.clear()
        self.data_comms.clear()
        for name, _ in self.lent.values():
            sharedmem.unlink(name)
        self.lent.clear()
        sharedmem.drop_released()
