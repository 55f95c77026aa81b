"""Message streams over TCP or TLS, authenticated, framed and batched.

    send(msg) ──> outbox ──(one flush per loop tick)──> [len:8][msgpack [msg, msg, ...]]
    bytes ──> handshake ──> frame splitter ──> catalogue.decode ──> handler(msg)

Large buffers of values travel out of band (``frames``): written from their own
memory with ``writev`` and read in place into buffers of their announced size.
Between hosts, each end names the codecs it reads (``codecs``, right after the
handshake) and the other compresses such buffers with one (``compression``).

Every connection first runs the shared-secret handshake (``auth``) on raw bytes;
nothing is decoded before it succeeds. A malformed frame, an unknown op, a bad
field type or an oversized length prefix closes that one connection with a
logged reason; the process keeps serving everyone else.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import ssl
import threading
import time
from typing import Any, Callable, cast

import psutil

from ..errors import AuthenticationError, CallerError, CommClosedError, ConnectError, ProtocolError
from . import auth, compression, frames, runs
from .transport import open_connection
from .messages import (ANY, CATALOGUE, DATA, FRAMES, FRAMES_LIST, FUNC_OPS, LAZY_OPS, MERGE_OPS,
                       OPT_FRAMES, UNDOES, Codecs, DefineFunc, Message, decode)

log = logging.getLogger("tasknest.comm")

# a frame (with its out-of-band buffers) may be as large as the machine's memory
DEFAULT_MAX_FRAME = max(1 << 30, psutil.virtual_memory().total)
IOV_BATCH = 64           # buffers per writev
HANDSHAKE_TIMEOUT = 10.0
_HEADER = 8
BATCH_WINDOW = 0.002     # seconds a message from another thread may wait for company
BATCH_MAX = 256          # ... or this many messages
# What a message's op means to the connection (functions by number, merging, lazy
# sending, undoing) is declared in the catalogue (messages.py): this module reads those
# sets and never names an op. ConnectError is imported here for older code.
_UNDONE = frozenset(UNDOES.values())
RUN_OPS = runs.RUN_OPS
# where a message's large buffers can be: its fields of pickled frames (every field, if
# one may hold anything)
_VALUE_FIELDS = {op: tuple(i for i, t in enumerate(CATALOGUE[op].types, 1)
                           if t in (FRAMES, OPT_FRAMES, FRAMES_LIST, DATA))
                 for op in frames.VALUE_OPS
                 if op in CATALOGUE and ANY not in CATALOGUE[op].types}


class _Rows(list):
    """Encoded messages of one op waiting in the outbox to leave as a run."""
    __slots__ = ()


def address_towards(host: str, port: int = 9) -> str:
    """This machine's address on the route to ``host`` ("" if none; no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((socket.gethostbyname(host), port))
            return str(s.getsockname()[0])
    except OSError:
        return ""


def parse_address(address: str) -> tuple[str, str, int]:
    """'tcp://host:port' -> (scheme, host, port)."""
    if not isinstance(address, str) or "://" not in address:
        raise CallerError(f"address must look like 'tcp://host:port', got {address!r}")
    scheme, rest = address.split("://", 1)
    if scheme not in ("tcp", "tls"):
        raise CallerError(f"unknown scheme {scheme!r} in {address!r} (use tcp:// or tls://)")
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise CallerError(f"address must look like '{scheme}://host:port', got {address!r}")
    return scheme, host, int(port)


def unparse_address(scheme: str, host: str, port: int) -> str:
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


class Comm(asyncio.BufferedProtocol):
    """One authenticated, framed, batched message stream."""

    def __init__(self, key: bytes, server_side: bool, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.key = key
        self.server_side = server_side
        self.max_frame = max_frame
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.ready: asyncio.Future = self.loop.create_future()
        self.closed = False
        self.close_reason = ""
        self.handler: Callable[[Message], Any] | None = None
        self.on_close: list[Callable[["Comm"], Any]] = []
        self.funcs: dict[int, bytes] = {}          # received function table
        self._func_ids: dict[bytes, int] = {}      # sent function table
        self._reader = frames.FrameReader(max_frame, self._frame)
        self._authed = False
        self._nonce_s = b""
        self._nonce_c = b""
        self._pending: list[Message] = []
        self._outbox: list[list] = []
        self._flush_scheduled = False
        self._threadsafe: collections.deque = collections.deque()
        self._wake: str | None = None     # None, "timer" or "soon": how the loop will drain
        self._urgent = False               # the queue holds a message someone waits on
        self._lock = threading.RLock()     # the outgoing frame (other threads may write it)
        self._direct = False               # other threads write their frames themselves
        self._fd = -1                      # ... straight to (a dup of) this socket (plain TCP)
        self._tail: collections.deque = collections.deque()  # ... unless bytes wait for the loop
        self._writer = False               # the loop waits for the socket to take the tail
        self._loop_thread = threading.get_ident()
        self._draining = False
        self._undoable: dict[tuple, list] = {}   # (op, key) -> an unsent message, see UNDOES
        self._cancelled = 0
        self._runs = False      # the outbox holds a run (_Rows) to turn into columns
        self.run_handler: Callable[[list], Any] | None = None   # a run's messages at once
        self.before_write: Callable[[], Any] | None = None   # e.g. commit a journal first
        self.codec: str | None = None      # large buffers we send are compressed with it
        self.codecs_offered: list[str] = []   # what we told the other end we read

    # -- asyncio.Protocol ------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream's transport (the loop's, or a SocketTransport): one that writes
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        sock = transport.get_extra_info("socket")
        if getattr(transport, "threadsafe", False):
            self._direct = True
        elif sock is not None and transport.get_extra_info("sslcontext") is None:
            self._direct = True
            # our own descriptor of the socket: its number cannot be reused while we hold it
            self._fd = os.dup(sock.fileno())
            # resume_writing tells when the transport's own buffer is empty again
            transport.set_write_buffer_limits(high=0)
        if sock is not None:
            try:
                import socket
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                _detect_dead_peers(sock)
            except OSError:
                pass
        if self.server_side:
            self._nonce_s, data = auth.challenge()
            transport.write(data)
        self.loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed(self.close_reason or (f"connection lost: {exc}" if exc else "connection closed by peer"))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._reader.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        if self.closed:         # bytes that raced with an abort are never looked at
            return
        try:
            self._reader.updated(nbytes)
            if not self._authed and self._handshake():
                self._reader.frames()
        except frames.FrameError as exc:
            self.abort(str(exc))

    def data_received(self, data: bytes) -> None:
        """For a transport that is not buffer-aware: copy into the reader's buffers."""
        view = memoryview(data)
        while view and not self.closed:
            buf = self.get_buffer(-1)
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            view = view[n:]
            self.buffer_updated(n)

    # -- handshake ---------------------------------------------------------------
    def _handshake(self) -> bool:
        take = self._reader.take
        transport = self.transport
        assert transport is not None      # (bytes came: the connection was made)
        if self.server_side:
            response = take(auth.RESPONSE_LEN)
            if response is None:
                return False
            confirm = auth.verify_response(self.key, self._nonce_s, response)
            if confirm is None:
                self.abort("authentication failed: wrong or missing token")
                return False
            transport.write(confirm)
        else:
            if not self._nonce_c:
                greeting = take(auth.CHALLENGE_LEN)
                if greeting is None:
                    return False
                reply = auth.respond(self.key, greeting)
                if reply is None:
                    self.abort("peer is not a tasknest endpoint (bad handshake greeting)")
                    return False
                self._nonce_s = greeting[5:]
                self._nonce_c, response = reply
                transport.write(response)
            confirm = take(auth.CONFIRM_LEN)
            if confirm is None:
                return False
            if not auth.verify_confirm(self.key, self._nonce_s, self._nonce_c, confirm):
                self.abort("authentication failed: the server does not hold our token")
                return False
        self._authed = True
        self.codecs_offered = compression.readable(transport.get_extra_info("sockname"),
                                                   transport.get_extra_info("peername"))
        if self.codecs_offered:
            self.send(Codecs(self.codecs_offered))
        if not self.ready.done():
            self.ready.set_result(self)
        return True

    def _handshake_deadline(self) -> None:
        if not self._authed and not self.closed:
            self.abort("handshake timed out")

    # -- receiving -----------------------------------------------------------------
    def _frame(self, payload: Any, bufs: list) -> None:
        if self.closed:
            return
        try:
            raw = frames.decode(payload, bufs)
            if type(raw) is not list:
                raise ProtocolError("frame is not a list of messages")
            # a run stays a list: messages of one op (runs.py)
            items: list[Any] = [runs.decode(m) if type(m) is list and m and m[0] == runs.RUN
                                else decode(m) for m in raw]
        except Exception as exc:
            return self.abort(f"malformed frame: {type(exc).__name__}: {exc}")
        for item in items:
            if type(item) is list:
                if not self._deliver_run(item):
                    return
                continue
            msg = item
            if type(msg) is DefineFunc:
                self.funcs[msg.fid] = msg.func
                continue
            if type(msg) is Codecs:
                self.codec = compression.choose(msg.names)
                continue
            if msg.op in FUNC_OPS and not self._swap_func(msg):
                return
            if self.handler is None:
                self._pending.append(msg)
                continue
            if not self._deliver(self.handler, msg, msg.op):
                return

    def _swap_func(self, msg: Any) -> bool:
        """The function's bytes for the number on the wire (False: aborted)."""
        func = self.funcs.get(msg.func)
        if func is None:
            self.abort(f"{msg.op} names function #{msg.func} never defined")
            return False
        msg.func = func
        return True

    def _deliver(self, handler: Callable[[Any], Any], arg: Any, op: str) -> bool:
        """Hand a message (or a run) over; False if the connection closed meanwhile."""
        try:
            handler(arg)
        except ProtocolError as exc:
            self.abort(f"invalid {op}: {exc}")
            return False
        except Exception:
            log.exception("error handling %s from %s", op, self.peer)
            self.abort(f"error handling {op}")
            return False
        return not self.closed

    def _deliver_run(self, msgs: list) -> bool:
        """A run's messages: to ``run_handler`` together, if set, else one by one."""
        op = msgs[0].op
        if op in FUNC_OPS:
            for msg in msgs:
                if not self._swap_func(msg):
                    return False
        if self.handler is None:
            self._pending += msgs
            return True
        if self.run_handler is not None:
            return self._deliver(self.run_handler, msgs, op)
        handler = self.handler
        for msg in msgs:
            if not self._deliver(handler, msg, op):
                return False
        return True

    def start(self, handler: Callable[[Message], Any]) -> None:
        """Begin delivering messages (those that arrived early first)."""
        self.handler = handler
        pending, self._pending = self._pending, []
        for msg in pending:
            try:
                handler(msg)
            except ProtocolError as exc:
                return self.abort(f"invalid {msg.op}: {exc}")
            except Exception as exc:
                log.exception("error handling %s from %s", msg.op, self.peer)
                return self.abort(f"error handling {msg.op}: {exc}")

    def func(self, fid: int) -> bytes:
        try:
            return self.funcs[fid]
        except KeyError:
            raise ProtocolError(f"function #{fid} was never defined on this connection") from None

    # -- sending (event loop thread) ------------------------------------------------
    def func_id(self, data: bytes) -> int:
        """Number for a pickled function; defines it on the peer the first time."""
        fid = self._func_ids.get(data)
        if fid is None:
            fid = self._func_ids[data] = len(self._func_ids)
            self._enqueue(DefineFunc(fid, data))
        return fid

    def send(self, msg: Message) -> None:
        """Queue a message (event loop thread): it leaves with this tick's frame."""
        if self.closed:
            return
        with self._lock:
            if self._threadsafe:     # messages queued earlier by other threads go first
                self._drain_queue()
            self._enqueue(msg)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def _enqueue(self, msg: Message) -> None:
        """Add a message to the outgoing frame (lock held)."""
        op = msg.op
        kmsg: Any = msg       # (ops chosen by name below: each has the field read)
        if op in UNDOES:
            undone = self._undoable.pop((UNDOES[op], kmsg.key), None)
            if undone is not None:   # both still unsent: together they mean nothing
                undone[0] = None
                self._cancelled += 1
                return
        if op in MERGE_OPS:
            last = self._outbox[-1] if self._outbox else None
            if last is not None and last[0] == op:
                last[1].extend(kmsg.keys)
                return
            self._outbox.append([op, list(kmsg.keys)])
        else:
            encoded = msg.encode()
            if op in FUNC_OPS:   # its function by number (the message itself is not
                encoded[2] = self.func_id(encoded[2])   # changed: it may go elsewhere too)
            if op in frames.VALUE_OPS:      # large buffers go out of band
                encoded = frames.mark_buffers(encoded, _VALUE_FIELDS.get(op))
            outbox = self._outbox
            if op in RUN_OPS and outbox:    # adjacent ones travel as columns (runs.py)
                last = outbox[-1]
                if type(last) is _Rows:
                    if last[0][0] == op and len(last) < runs.MAX_RUN:
                        last.append(encoded)
                        return
                elif last[0] == op:
                    outbox[-1] = _Rows((last, encoded))
                    self._runs = True
                    return
            outbox.append(encoded)
            if op in _UNDONE:
                self._undoable[(op, kmsg.key)] = encoded

    def flush(self) -> None:
        self._flush_scheduled = False
        with self._lock:
            self._write_outbox()

    def _write_outbox(self) -> None:
        """Encode and write the outgoing frame (lock held; on the loop's thread, or on
        any thread if the transport allows it)."""
        if self.closed or not self._outbox:
            return
        if self.before_write is not None:   # (write-ahead: nothing leaves before it)
            self.before_write()
        out, self._outbox = self._outbox, []
        if self._undoable:
            self._undoable.clear()
        if self._cancelled:
            out = [x for x in out if x[0] is not None]
            self._cancelled = 0
        if self._runs:
            self._runs = False
            out = [runs.columns(x) if type(x) is _Rows else x for x in out]
        try:
            chunks, _ = frames.encode(out, self.codec)
        except Exception as exc:  # a bug in a message; fail loudly but keep the link
            log.error("cannot encode a frame for %s: %s", self.peer, exc)
            return
        # large buffers never go to the loop's transport, which would copy them
        if self._fd >= 0 and (self._tail or len(chunks) > 2
                              or threading.get_ident() != self._loop_thread):
            self._write_direct(chunks)
        else:
            self.transport.writelines(chunks)  # type: ignore[union-attr]

    # A frame is written to the socket at once, by whichever thread made it, while the
    # loop's transport has nothing unsent; otherwise, and for what the kernel does not
    # take at once, its chunks queue in ``_tail`` (memoryviews: never copied) and the
    # loop writes them as the socket takes them, in order. All writes hold ``_lock``.
    def _write_direct(self, chunks: list) -> None:
        transport = self.transport
        assert transport is not None
        if not self._tail and not transport.is_closing() \
                and not transport.get_write_buffer_size():
            n = self._writev(chunks[:IOV_BATCH])
            rest = []
            for c in chunks:
                size = len(c) if type(c) is not memoryview else c.nbytes
                if n >= size:
                    n -= size
                else:
                    rest.append(memoryview(c).cast("B")[n:] if n else c)
                    n = 0
            if not rest:
                return
            chunks = rest
        if not self._tail and not self._writer:
            self._call_threadsafe(self._write_tail)
        self._tail.extend(chunks)

    def _writev(self, chunks: list) -> int:
        try:
            return os.writev(self._fd, chunks)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:       # the loop's transport will meet the error and report it
            return 0

    def _write_tail(self) -> None:
        """Write the queued chunks as far as the socket takes them (the loop's thread)."""
        with self._lock:
            tail = self._tail
            transport = self.transport
            while tail:
                if self.closed or transport is None or transport.is_closing():
                    tail.clear()
                    break
                if transport.get_write_buffer_size():
                    return                    # resume_writing calls again once it is empty
                batch = [tail[i] for i in range(min(IOV_BATCH, len(tail)))]
                n = self._writev(batch)
                for c in batch:
                    size = len(c) if type(c) is not memoryview else c.nbytes
                    if n >= size:
                        n -= size
                        tail.popleft()
                    else:
                        if n:
                            tail[0] = memoryview(c).cast("B")[n:]
                        if not self._writer:    # wait until the socket takes more
                            self._writer = True
                            self.loop.add_writer(self._fd, self._write_tail)
                        return
            if self._writer:
                self._writer = False
                self.loop.remove_writer(self._fd)

    def resume_writing(self) -> None:
        if self._tail:
            self._write_tail()

    def unsent(self) -> int:
        """Bytes written here that the kernel has not taken yet (the transport's buffer
        and the queued chunks), plus messages not encoded yet at a nominal 100 bytes
        each: what a producer that can wait (a streaming map) keeps bounded."""
        transport = self.transport
        n = transport.get_write_buffer_size() if transport is not None else 0
        for c in list(self._tail):
            n += len(c) if type(c) is not memoryview else c.nbytes
        return n + 100 * (len(self._threadsafe) + len(self._outbox))

    def send_now(self, msg: Message) -> None:
        """Send at once from any thread: another thread writes the frame itself (plain
        TCP) or has the loop write it in its next iteration."""
        if threading.get_ident() == self._loop_thread:
            self.send(msg)
        else:
            self.send_threadsafe(msg, arm=False)
            self.wake()

    def send_any(self, msg: Message) -> None:
        """send() on the event loop's thread, send_threadsafe() on any other."""
        if threading.get_ident() == self._loop_thread:
            self.send(msg)
        else:
            self.send_threadsafe(msg)

    # -- sending from other threads ---------------------------------------------
    # A thread's messages wait up to BATCH_WINDOW (or BATCH_MAX messages) to go out
    # together, unless the thread calls wake() because it is about to wait: a task
    # thread that keeps running does not pull the event loop (and the GIL) away
    # from itself for every message, and the peer gets fewer, larger frames.
    # Every drain clears ``_wake`` *before* it empties the queue and every sender
    # appends *before* it looks at ``_wake``, so no message is ever left behind.
    def send_threadsafe(self, msg: Message, arm: bool = True) -> None:
        """Queue from another thread. ``arm=False``: the caller calls wake() next, so the
        loop is not woken to time the batch (lazy messages arm it all the same)."""
        q = self._threadsafe
        q.append(msg)
        if msg.op in LAZY_OPS:
            arm = True
        else:
            self._urgent = True
        if not arm:
            return
        if self._wake is None:
            self._wake = "timer"
            self._call_threadsafe(self._arm)
        elif len(q) >= BATCH_MAX and self._wake == "timer":
            # a full batch: the loop writes it while this thread goes on
            self._wake = "soon"
            self._call_threadsafe(self._drain_now)

    def wake(self, here: bool = True) -> None:
        """Send what other threads queued now (call it before waiting on a reply).
        On plain TCP the caller writes the frame itself, unless ``here=False``: a thread
        with work to do next lets the loop encode and write it, on the other core."""
        if not self._urgent or not self._threadsafe or self.closed:
            return              # nothing or only lazy messages: the batch's timer sends them
        if here and self._direct and threading.get_ident() != self._loop_thread:
            with self._lock:
                self._drain_queue()
                self._write_outbox()
        elif self._wake != "soon":
            self._wake = "soon"
            self._call_threadsafe(self._drain_now)

    def _drain_now(self) -> None:
        """A thread waits on what it queued: write it in this loop iteration."""
        self._wake = None
        with self._lock:
            self._drain_queue()
            self._write_outbox()

    def _call_threadsafe(self, fn: Callable[[], Any]) -> None:
        try:
            self.loop.call_soon_threadsafe(fn)
        except RuntimeError:  # loop closed
            pass

    def _arm(self) -> None:
        self.loop.call_later(BATCH_WINDOW, self._drain_threadsafe)

    def _drain_threadsafe(self) -> None:
        self._wake = None
        with self._lock:
            self._drain_queue()
        if self._outbox:
            self._schedule_flush()

    def _drain_queue(self) -> None:
        """Move other threads' messages into the outgoing frame (lock held)."""
        if self._draining:       # re-entered (a __del__ during encoding): the outer loop goes on
            return
        self._draining = True
        self._urgent = False      # before the queue empties: a message queued meanwhile re-sets it
        try:
            q = self._threadsafe
            while q:
                self._enqueue(q.popleft())
        finally:
            self._draining = False

    # -- closing ----------------------------------------------------------------------
    def abort(self, reason: str) -> None:
        """Close because of something the peer did; logged, never raised."""
        if not self.closed:
            log.warning("closing connection from %s: %s", self.peer, reason)
        self.close(reason)

    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.close_reason = reason
        if self.transport is not None:
            if self._threadsafe and self._authed:
                self._drain_threadsafe()
            if self._outbox and self._authed:
                self.flush()
            if self._tail:
                self._write_tail()
            self.transport.close()
        self._closed(reason)

    def when_closed(self, callback: Callable[["Comm"], Any]) -> None:
        """Call ``callback(comm)`` once the comm closes: at once if it already has
        (a peer can vanish between an ``await`` and the line that registers interest)."""
        if self.closed:
            callback(self)
        else:
            self.on_close.append(callback)

    def fail_on_close(self, future: asyncio.Future, what: str) -> None:
        """A reply awaited on this comm fails when it closes: nobody waits out a timeout
        for an answer that can no longer come."""
        def fail(comm: "Comm") -> None:
            if not future.done():
                future.set_exception(CommClosedError(
                    f"connection closed before {what}: {comm.close_reason}"))
        self.when_closed(fail)

    def _closed(self, reason: str) -> None:
        if self.closed and not self.on_close:
            return
        self.closed = True
        with self._lock:
            self._tail.clear()
            if self._fd >= 0:
                if self._writer:
                    self._writer = False
                    self.loop.remove_writer(self._fd)
                os.close(self._fd)
                self._fd = -1
        self.close_reason = self.close_reason or reason
        if not self.ready.done():
            self.ready.set_exception(CommClosedError(self.close_reason))
            self.ready.exception()  # mark retrieved
        callbacks, self.on_close = self.on_close, []
        for cb in callbacks:
            try:
                cb(self)
            except Exception:
                log.exception("error in close callback")


# -- connecting and listening ------------------------------------------------------
DEAD_PEER_TIMEOUT = 30   # seconds: a silent peer (cut network, powered off) closes the comm


def _detect_dead_peers(sock: Any) -> None:
    """A peer that vanishes without a FIN or RST (cut cable, dead host) would keep a
    connection open for the kernel's ~15 minutes of retransmissions, and whoever
    waits on it would hang: abort when sent data stays unacknowledged, and probe
    idle connections, for about DEAD_PEER_TIMEOUT seconds."""
    import socket
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", DEAD_PEER_TIMEOUT // 3), ("TCP_KEEPINTVL", 5),
                        ("TCP_KEEPCNT", 3), ("TCP_USER_TIMEOUT", DEAD_PEER_TIMEOUT * 1000)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


async def connect(address: str, token: str | bytes | None = None, timeout: float = 10.0,
                  ssl_context: ssl.SSLContext | None = None,
                  max_frame: int = DEFAULT_MAX_FRAME, retry: bool = True,
                  threadsafe: bool = False) -> Comm:
    """Connect and authenticate; retries refused connections until the timeout
    (unless ``retry=False``: a peer that refuses is gone, so fail at once).
    ``threadsafe``: other threads write their frames themselves (plain TCP only)."""
    scheme, host, port = parse_address(address)
    if scheme == "tls" and ssl_context is None:
        raise CallerError(f"{address} is a tls:// address: pass TLS settings (security=...)")
    if scheme == "tcp" and ssl_context is not None:
        raise CallerError(f"TLS settings given but {address} is a plain tcp:// address")
    key = auth.key_of(token)
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + timeout
    delay = 0.01
    last: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ConnectError(f"could not connect to {address} within {timeout:g} s: {last}")
        try:
            comm = Comm(key, server_side=False, max_frame=max_frame)
            if threadsafe and ssl_context is None:
                await asyncio.wait_for(open_connection(loop, comm, host, port),
                                       remaining)
            else:
                await asyncio.wait_for(loop.create_connection(
                    lambda: comm, host, port, ssl=ssl_context,
                    server_hostname=host if ssl_context else None), remaining)
            try:
                await asyncio.wait_for(asyncio.shield(comm.ready), max(remaining, 0.5))
            except asyncio.TimeoutError:
                # e.g. a plain tcp:// client at a tls:// server: both wait for the other
                comm.close("no handshake greeting")
                raise ConnectError(
                    f"{address} accepted the connection but sent no tasknest handshake "
                    f"within {timeout:g} s (is it a tls:// address?)") from None
            return comm
        except CommClosedError as exc:
            reason = str(exc)
            if "authentication" in reason or "not a tasknest" in reason:
                raise AuthenticationError(f"handshake with {address} failed: {reason}") from None
            if "connection lost" in reason or "closed by peer" in reason:
                raise AuthenticationError(
                    f"{address} closed the connection during the handshake: "
                    "wrong or missing token, or TLS mismatch") from None
            last = exc
        except (OSError, asyncio.TimeoutError) as exc:
            if isinstance(exc, ssl.SSLError):
                raise AuthenticationError(f"TLS handshake with {address} failed: {exc}") from exc
            if not retry and isinstance(exc, ConnectionRefusedError):
                raise ConnectError(f"{address} refused the connection: {exc}") from exc
            last = exc
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.1)    # (a restarted scheduler is found within 0.1 s)


class Listener:
    """A server socket whose authenticated comms are handed to ``on_comm``."""

    def __init__(self, server: asyncio.Server, scheme: str, host: str) -> None:
        self.server = server
        sock = server.sockets[0]
        port = sock.getsockname()[1]
        self.address = unparse_address(scheme, host, port)
        self.port = port

    def close(self) -> None:
        self.server.close()


async def listen(address: str, on_comm: Callable[[Comm], Any], token: str | bytes | None = None,
                 ssl_context: ssl.SSLContext | None = None,
                 max_frame: int = DEFAULT_MAX_FRAME) -> Listener:
    scheme, host, port = parse_address(address)
    if scheme == "tls" and ssl_context is None:
        raise CallerError(f"{address} is a tls:// address: pass TLS settings")
    key = auth.key_of(token)
    loop = asyncio.get_running_loop()

    def factory() -> Comm:
        comm = Comm(key, server_side=True, max_frame=max_frame)
        comm.ready.add_done_callback(
            lambda f: None if f.cancelled() or f.exception() else on_comm(comm))
        return comm

    server = await loop.create_server(factory, host or None, port, ssl=ssl_context,
                                      reuse_address=True)
    return Listener(server, scheme, host)
