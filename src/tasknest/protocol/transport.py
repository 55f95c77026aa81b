"""A TCP transport that any thread may write to.

asyncio's (and uvloop's) transports belong to their event loop's thread, so a
user's thread has to hand every message to that thread and wait for it to wake
up (tens of microseconds, and a fight over the GIL). Here a write from any
thread goes straight to the socket under a lock; only when the kernel's buffer
is full does the rest wait for the loop to report the socket writable. Reading
stays on the loop (``add_reader``).

It implements what ``Comm`` uses of ``asyncio.Transport``. A client uses it for
its connection to the scheduler, where its user's thread submits; everything
else keeps the event loop's own transports, which read faster.
"""
from __future__ import annotations

import asyncio
import collections
import socket
import threading
from typing import Any

READ_SIZE = 256 * 1024


class SocketTransport:
    threadsafe = True

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 protocol: asyncio.BaseProtocol) -> None:
        sock.setblocking(False)
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._lock = threading.Lock()
        self._buffer: collections.deque = collections.deque()  # what the kernel did not take
        self._buffered = 0
        self._writing = False          # waiting for the loop to report writability
        self._closing = False
        self._closed = False
        self._loop_thread = threading.get_ident()   # made on the loop's thread
        self._extra = {"peername": sock.getpeername(), "sockname": sock.getsockname(),
                       "socket": sock}
        loop.add_reader(self._fd, self._on_readable)
        protocol.connection_made(self)  # type: ignore[arg-type]  # (duck-types asyncio.Transport)

    # -- what Comm uses of asyncio.Transport --------------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writelines([data])

    def writelines(self, chunks: list) -> None:
        """Send now, from whatever thread, in one system call; what the kernel does not
        take waits for the loop."""
        error: OSError | None = None
        with self._lock:
            if self._closing:
                return
            if self._buffer:
                for c in chunks:
                    self._queue(c)
                return
            try:
                n = self._sock.sendmsg(chunks[:64])
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                error = exc
            if error is None:
                self._keep_unsent(chunks, n)
        if error is not None:   # outside the lock: on the loop's thread, _lost runs now
            self._in_loop(self._lost, error)

    def _keep_unsent(self, chunks: list, n: int) -> None:
        """Queue what the kernel did not take of ``chunks`` (it took ``n`` bytes); the
        loop writes it when the socket is writable (lock held)."""
        for c in chunks:
            size = _size(c)
            if n >= size:
                n -= size
                continue
            self._queue(memoryview(c).cast("B")[n:] if n else c)   # kept, not copied
            n = 0
        if self._buffer:
            self._writing = True
            self._in_loop(self._loop.add_writer, self._fd, self._on_writable)

    def _queue(self, chunk: Any) -> None:
        self._buffer.append(chunk)
        self._buffered += _size(chunk)

    def get_write_buffer_size(self) -> int:
        return self._buffered

    def close(self) -> None:
        """Close once what was written has been sent."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            pending = bool(self._buffer)
        if not pending:
            self._in_loop(self._finish, None)

    def abort(self) -> None:
        with self._lock:
            self._closing = True
            self._buffer.clear()
            self._buffered = 0
        self._in_loop(self._finish, None)

    # -- the loop's side ----------------------------------------------------------------------
    def _in_loop(self, fn: Any, *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            try:
                self._loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:     # the loop is closed: nothing left to do
                pass

    def _on_readable(self) -> None:
        protocol: Any = self._protocol
        buffered = hasattr(protocol, "get_buffer")
        try:
            if buffered:          # read in place (a large buffer: straight into it)
                n = self._sock.recv_into(protocol.get_buffer(-1))
            else:
                data = self._sock.recv(READ_SIZE)
                n = len(data)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        if not n:
            self._lost(None)
            return
        if buffered:
            protocol.buffer_updated(n)
        else:
            protocol.data_received(data)

    def _on_writable(self) -> None:
        error: Exception | None = None
        with self._lock:
            buf = self._buffer
            try:
                n = self._sock.sendmsg([buf[i] for i in range(min(64, len(buf)))])
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                error = exc
                buf.clear()
                self._buffered = 0
            else:
                self._buffered -= n
                while n:
                    size = _size(buf[0])
                    if n >= size:
                        n -= size
                        buf.popleft()
                    else:
                        buf[0] = memoryview(buf[0]).cast("B")[n:]
                        n = 0
                if buf:
                    return
            self._writing = False
            self._loop.remove_writer(self._fd)
            closing = self._closing
        if error is not None:
            self._lost(error)
        elif closing:
            self._finish(None)

    def _lost(self, exc: Exception | None) -> None:
        with self._lock:
            self._closing = True
            self._buffer.clear()
            self._buffered = 0
        self._finish(exc)

    def _finish(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        try:
            self._sock.close()
        finally:
            self._protocol.connection_lost(exc)


async def open_connection(loop: asyncio.AbstractEventLoop, protocol: asyncio.BaseProtocol,
                          host: str, port: int) -> SocketTransport:
    """Connect to host:port (each of its addresses in turn) with a SocketTransport."""
    last: Exception | None = None
    for family, type_, proto, _, addr in await loop.getaddrinfo(host, port,
                                                                type=socket.SOCK_STREAM):
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, addr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        return SocketTransport(loop, sock, protocol)
    raise last or OSError(f"cannot resolve {host}:{port}")



def _size(chunk: Any) -> int:
    return chunk.nbytes if type(chunk) is memoryview else len(chunk)
