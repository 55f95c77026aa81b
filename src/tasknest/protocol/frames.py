"""Frames on the wire, with large buffers out of band.

    [payload length:4][buffer count:4][size:8 × count][msgpack payload][buffer][buffer]...

A frame is a msgpack list of messages. Any bytes-like field of at least
``OOB_MIN`` bytes (pickle-5 buffers of a value, mostly) does not go through
msgpack: the payload holds a reference (ext type 1, its index) and the buffer
follows the payload as it is, written from the very memory that holds it
(scatter-gather writes of memoryviews, no join). A frame without such buffers
is just ``[length:8][payload]``, the format of old.

The reader (``FrameReader``) learns every buffer's size from the header, so it
refuses a frame over the limit before allocating anything, then allocates each
buffer once, at its exact size, and has the socket read straight into it
(``asyncio.BufferedProtocol``): receiving N bytes costs N bytes and no copy.
A buffer that was read-only at the sender (``bytes``) is received into a new
``bytes`` object, so a large bytes value arrives as itself, not as a copy of
a bytearray.

On a link where the other end asked for it (``compression``), a buffer that
compresses goes as an lz4 block, flagged in its size; the reader decompresses it
into a buffer of the size the block announces, refused first if over the limit.
"""
from __future__ import annotations

import ctypes
import pickle
import struct
import sys
from typing import Any, Callable

import msgpack

from ..errors import ProtocolError
from . import bufpool, compression

OOB_MIN = 64 * 1024          # smaller buffers ride inside the msgpack payload
MAX_BUFFERS = 4096           # out-of-band buffers in one frame
READONLY = 1 << 63           # flag in a buffer's size: it was read-only (bytes) at the sender
COMPRESSED = 1 << 62         # flag in a buffer's size: it travels compressed
ANY = 1 << 61                # flag in a buffer's size: any memory will do (an array's buffer)
SIZE = ANY - 1               # the size itself
EXT_BUFFER = 1               # msgpack ext type: index of an out-of-band buffer
SCRATCH = 1 << 18            # the reader's buffer for small frames
SMALL_PAYLOAD = 1 << 16      # payloads up to this wait in the scratch buffer; larger get their own
_HEAD = struct.Struct("<II")
# ops whose fields carry pickled values (lists of frames): the only ones walked for buffers
VALUE_OPS = frozenset({"data", "scatter", "scatter-via", "scatter-data", "put-data", "key-memory",
                       "task-finished", "coord", "run-done", "key-erred", "task-erred", "put"})


class FrameError(ProtocolError):
    """A peer sent a frame we refuse (too large, malformed header)."""


# -- allocation --------------------------------------------------------------------------
if sys.implementation.name == "cpython":
    _new = ctypes.pythonapi.PyBytes_FromStringAndSize
    _new.restype = ctypes.py_object
    _new.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
    _BYTES_DATA = bytes.__basicsize__ - 1        # offset of ob_sval in a bytes object

    _new_array = ctypes.pythonapi.PyByteArray_FromStringAndSize
    _new_array.restype = ctypes.py_object
    _new_array.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]

    def new_bytes(size: int) -> tuple[bytes, memoryview]:
        """A new, not yet filled ``bytes`` object of ``size`` and a writable view of it.
        Only the receiver writes it, before anyone else sees the object."""
        obj = _new(None, size)
        arr = (ctypes.c_char * size).from_address(id(obj) + _BYTES_DATA)
        setattr(arr, "owner", obj)   # (the view keeps the bytes alive, not its address only)
        return obj, memoryview(arr).cast("B")

    def new_bytearray(size: int) -> bytearray:
        """A bytearray of ``size`` not filled with zeros: ``bytearray(size)`` writes every
        page before the socket does (a 1 GiB buffer held the event loop for seconds);
        this one's pages are first touched by the read that fills them."""
        return _new_array(None, size)
else:                                           # pragma: no cover
    new_bytes = None  # type: ignore[assignment]
    new_bytearray = bytearray  # type: ignore[assignment]

BYTES_MIN = 1 << 20          # below this a read-only buffer is received into a bytearray


def allocate(size: int, readonly: bool, anywhere: bool = False) -> tuple[Any, memoryview]:
    """The object a received buffer lives in, and a writable view to read into.
    ``anywhere``: not a bytes or bytearray value's own buffer, so warm pages of the
    pool will do (``bufpool``)."""
    if anywhere and size >= bufpool.MIN:
        view = bufpool.pool.take(size)
        return (view.toreadonly() if readonly else view), view
    if readonly and size >= BYTES_MIN and new_bytes is not None:
        return new_bytes(size)
    obj = new_bytearray(size) if size >= BYTES_MIN else bytearray(size)
    return obj, memoryview(obj)


# -- writing ------------------------------------------------------------------------------
def mark_buffers(fields: list, at: tuple | None = None) -> list:
    """The encoded message with its large bytes-like items (at any depth up to 3) as
    PickleBuffers, which ``encode`` sends out of band; the message itself is not changed.
    ``at``: the only fields to look in (each a list or dict, or None)."""
    if at is None:
        return _mark(fields, 0)
    out = fields
    for i in at:
        x = fields[i]
        if type(x) is list or type(x) is dict:
            y = _mark(x, 1)
            if y is not x:
                if out is fields:
                    out = list(fields)
                out[i] = y
    return out


def _mark(seq: Any, depth: int) -> Any:
    out = None
    items = seq.items() if type(seq) is dict else enumerate(seq)
    for i, x in items:
        t = type(x)
        y = x
        if t is bytes or t is bytearray or t is memoryview:
            if (len(x) if t is not memoryview else x.nbytes) >= OOB_MIN:
                y = pickle.PickleBuffer(x)
        elif depth < 3 and (t is list or t is dict):
            y = _mark(x, depth + 1)
        if y is not x:
            if out is None:
                out = dict(seq) if type(seq) is dict else list(seq)
            out[i] = y
    return seq if out is None else out


def encode(msgs: list, codec: str | None = None) -> tuple[list, int]:
    """Chunks to write for one frame (in order), and their total size; large buffers
    compressed with ``codec`` where that pays."""
    bufs: list[memoryview] = []

    def default(obj: Any) -> Any:
        if type(obj) is pickle.PickleBuffer:
            bufs.append(obj.raw())
            return msgpack.ExtType(EXT_BUFFER, struct.pack("<I", len(bufs) - 1))
        raise TypeError(f"cannot encode {type(obj).__name__}")

    payload = msgpack.packb(msgs, use_bin_type=True, default=default)
    if not bufs:
        head = len(payload).to_bytes(8, "little")
        if len(payload) < 65536:
            return [head + payload], 8 + len(payload)
        return [head, payload], 8 + len(payload)
    if len(bufs) > MAX_BUFFERS:
        raise ValueError(f"a frame may carry at most {MAX_BUFFERS} large buffers")
    sizes = [b.nbytes | (READONLY if b.readonly else 0) | (ANY if _anywhere(b) else 0)
             for b in bufs]
    out: list = bufs
    if codec is not None:
        out = list(bufs)
        for i, b in enumerate(bufs):
            packed = compression.compress(codec, b)
            if packed is not None:
                out[i] = packed
                sizes[i] = len(packed) | COMPRESSED | (sizes[i] & READONLY)
    head = _HEAD.pack(len(payload), len(bufs)) + struct.pack(f"<{len(bufs)}Q", *sizes)
    return [head + payload, *out], 8 + 8 * len(bufs) + len(payload) + sum(s & SIZE for s in sizes)


def _anywhere(buf: memoryview) -> bool:
    """Whether the receiver may read ``buf`` into any memory: not when it is the very
    bytes or bytearray of a value, which must arrive as themselves."""
    base = buf.obj
    for _ in range(4):                  # (a value's buffer is a view of a view, at most)
        if type(base) is not memoryview:
            break
        base = base.obj
    return type(base) is not bytes and type(base) is not bytearray and base is not None


# -- reading ------------------------------------------------------------------------------
class FrameReader:
    """Splits a byte stream into (payload, buffers) frames, reading large parts in place.

    Drive it like an ``asyncio.BufferedProtocol``: read into ``get_buffer()``, then call
    ``updated(n)``, which calls ``on_frame(payload, buffers)`` for every complete frame
    and raises FrameError for a frame to refuse. ``take(n)`` reads raw bytes (handshake).
    """

    def __init__(self, max_frame: int, on_frame: Callable[[Any, list], None]) -> None:
        self.max_frame = max_frame
        self.on_frame = on_frame
        self._buf = bytearray(SCRATCH)
        self._view = memoryview(self._buf)
        self._start = 0                     # unread bytes of the scratch: [start, end)
        self._end = 0
        self._target: memoryview | None = None   # a part being read in place
        self._tpos = 0
        self._frame: list | None = None     # [payload len, sizes, payload, buffers]
        self.raw = True                     # before the handshake: no frames yet

    # -- the BufferedProtocol side
    def get_buffer(self) -> memoryview:
        if self._target is not None:
            return self._target[self._tpos:]
        if self._start == self._end:
            self._start = self._end = 0
        elif SCRATCH - self._end < SCRATCH // 2:     # move the unread rest to the front
            rest = self._end - self._start
            buf = bytearray(SCRATCH)
            buf[:rest] = self._view[self._start:self._end]
            self._buf, self._view = buf, memoryview(buf)
            self._start, self._end = 0, rest
        return self._view[self._end:]

    def updated(self, n: int) -> None:
        if self._target is not None:
            self._tpos += n
            if self._tpos < len(self._target):
                return
            self._target = None
        else:
            self._end += n
        if not self.raw:
            self._parse()

    def take(self, n: int) -> bytes | None:
        """``n`` raw bytes, if they have arrived."""
        if self._end - self._start < n:
            return None
        data = bytes(self._view[self._start:self._start + n])
        self._start += n
        return data

    def frames(self) -> None:
        """The handshake is over: what follows is frames."""
        self.raw = False
        self._parse()

    # -- parsing
    def _parse(self) -> None:
        while self._target is None:
            if self._frame is None and not self._header():
                return
            if not self._fill():
                return

    def _header(self) -> bool:
        avail = self._end - self._start
        if avail < 8:
            return False
        plen, nbuf = _HEAD.unpack_from(self._buf, self._start)
        if nbuf > MAX_BUFFERS:
            raise FrameError(f"frame announces {nbuf} buffers (at most {MAX_BUFFERS})")
        if avail < 8 + 8 * nbuf:
            return False
        sizes = struct.unpack_from(f"<{nbuf}Q", self._buf, self._start + 8) if nbuf else ()
        total = plen + sum(s & SIZE for s in sizes)
        if total > self.max_frame:
            raise FrameError(f"frame of {total} bytes exceeds the limit of {self.max_frame}")
        self._start += 8 + 8 * nbuf
        self._frame = [plen, sizes, None, []]
        return True

    def _fill(self) -> bool:
        """Fill the current frame from the scratch; True if it completed."""
        frame = self._frame
        assert frame is not None
        plen, sizes, payload, bufs = frame
        if payload is None:
            avail = self._end - self._start
            if avail >= plen:
                frame[2] = bytes(self._view[self._start:self._start + plen])
                self._start += plen
            elif plen <= SMALL_PAYLOAD:
                return False                 # wait for the rest in the scratch
            else:    # (not zero-filled: a peer announcing gigabytes costs nothing until sent)
                obj, view = allocate(plen, True)
                frame[2] = obj
                self._read_into(view)
                if self._target is not None:
                    return False
        while len(bufs) < len(sizes):
            size = sizes[len(bufs)]
            if size & COMPRESSED:
                obj, view = allocate(size & SIZE, False)
            else:
                obj, view = allocate(size & SIZE, bool(size & READONLY), bool(size & ANY))
            bufs.append(obj)
            self._read_into(view)
            if self._target is not None:
                return False
        self._frame = None
        for i, size in enumerate(sizes):
            if size & COMPRESSED:
                bufs[i] = self._decompress(bufs[i], bool(size & READONLY))
        self.on_frame(frame[2], bufs)
        return True

    def _decompress(self, data: bytearray, readonly: bool) -> Any:
        if len(data) < 4 or compression.raw_size(data) > self.max_frame:
            raise FrameError(f"compressed buffer announces {compression.raw_size(data)} bytes "
                             f"(the limit is {self.max_frame})")
        try:
            return compression.decompress(data, readonly)
        except Exception as exc:
            raise FrameError(f"cannot decompress a buffer: {exc}") from exc

    def _read_into(self, view: memoryview) -> None:
        """Copy what the scratch holds of this part; read the rest in place."""
        n = min(len(view), self._end - self._start)
        if n:
            view[:n] = self._view[self._start:self._start + n]
            self._start += n
        if n < len(view):
            self._target, self._tpos = view, n


def decode(payload: Any, bufs: list) -> Any:
    """The msgpack payload of a frame, its buffer references resolved."""
    if not bufs:
        return msgpack.unpackb(payload, raw=False, use_list=True)

    def ext(code: int, data: bytes) -> Any:
        if code == EXT_BUFFER and len(data) == 4:
            i = struct.unpack("<I", data)[0]
            if i < len(bufs):
                return bufs[i]
        raise ProtocolError(f"bad buffer reference (ext type {code})")
    return msgpack.unpackb(payload, raw=False, use_list=True, ext_hook=ext)
