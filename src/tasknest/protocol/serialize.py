"""Functions and data as pickle protocol 5.

* Functions are pickled once per function object (cloudpickle, so functions
  defined in ``__main__`` or in a task travel by value) and cached both ways: a
  worker that re-submits a function it received pickles it to the very bytes it
  came as, so pure keys agree across processes.
* Arguments are pickled with cloudpickle's pickler (by value where needed); every
  Future met anywhere inside them becomes a *persistent id* (its key) and a
  dependency, resolved on the worker to the dependency's value.
* Values (results, scattered data) use out-of-band buffers: ``[header, *buffers]``.
"""
from __future__ import annotations

import io
import pickle
import threading
import weakref
from typing import Any, Callable, cast

import cloudpickle

from ..errors import SerializationError

# id(func) -> (weak or strong reference, pickled bytes); entries die with their function
_func_cache: dict[int, tuple[Any, bytes]] = {}
_loads_cache: dict[bytes, Any] = {}
_LOADS_CACHE_MAX = 4096
_lock = threading.Lock()


def dumps_function(func: Callable) -> bytes:
    """Pickle a callable, once per object."""
    hit = _func_cache.get(id(func))
    if hit is not None and (hit[0]() if type(hit[0]) is weakref.ref else hit[0]) is func:
        return hit[1]
    try:
        data = cloudpickle.dumps(func, protocol=5)
    except Exception as exc:
        raise SerializationError(f"cannot pickle function {func!r}: {exc}") from exc
    _remember(func, data)
    return data


def _remember(func: Any, data: bytes) -> None:
    fid = id(func)
    try:
        ref: Any = weakref.ref(func, lambda _: _func_cache.pop(fid, None))
    except TypeError:          # e.g. builtins: keep them alive instead
        ref = func
    with _lock:
        if len(_func_cache) > 65536:
            _func_cache.clear()
        _func_cache[fid] = (ref, data)


def loads_function(data: bytes) -> Callable:
    """Unpickle a function, cached by its bytes (a task's function usually repeats)."""
    func = _loads_cache.get(data)
    if func is None:
        func = pickle.loads(data)
        with _lock:
            if len(_loads_cache) >= _LOADS_CACHE_MAX:
                _loads_cache.clear()
            _loads_cache[data] = func
        _remember(func, data)
    return func


# -- arguments -------------------------------------------------------------------
class _ArgPickler(cloudpickle.Pickler):
    """cloudpickle, so classes and lambdas from __main__ travel by value."""

    def __init__(self, file: io.BytesIO, future_type: type) -> None:
        super().__init__(file, protocol=5)
        self.future_type = future_type
        self.futures: list[Any] = []

    def reducer_override(self, obj: Any) -> Any:
        # cloudpickle would send a memoryview as bytes: keep its type, format and shape
        if type(obj) is memoryview:
            return _reduce_memoryview(obj)
        return super().reducer_override(obj)

    def persistent_id(self, obj: Any) -> str | None:
        # (isinstance: a streaming map's futures are a subclass until their chunk is sent)
        if isinstance(obj, self.future_type):
            self.futures.append(obj)
            return cast(str, cast(Any, obj).key)
        return None


class _ArgUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, values: dict[str, Any]) -> None:
        super().__init__(file)
        self.values = values

    def persistent_load(self, pid: Any) -> Any:
        return self.values[pid]


_ATOMIC = frozenset({int, float, str, bytes, bool, type(None)})
_SMALL_PICKLE = 64


def unframed(data: bytes) -> bytes:
    """A small pickle without its frame header (FRAME and 8 bytes of length, which an
    unpickler does not need): 9 of a small call's ~20 bytes, so 16 B less a task for
    the client, the scheduler and the worker that keep it. (The pickler frames in
    64 KiB units: a pickle this small is one frame.)"""
    if len(data) <= _SMALL_PICKLE and data[2] == 0x95:
        return b"\x80\x05" + data[11:]
    return data


def dumps_call(args: tuple, kwargs: dict,
               future_type: type) -> tuple[bytes, list[str], list[Any]]:
    """Pickle a call's arguments as (args, kwargs-or-None) without ambiguity; also
    returns the dependencies' keys and the futures met (found wherever they hide)."""
    if not kwargs and all(type(a) in _ATOMIC for a in args):
        return unframed(pickle.dumps((args, None), protocol=5)), [], []  # at C speed
    buf = io.BytesIO()
    pickler = _ArgPickler(buf, future_type)
    try:
        pickler.dump((args, kwargs or None))
    except Exception as exc:
        raise SerializationError(
            f"cannot pickle the task's arguments: {type(exc).__name__}: {exc}") from exc
    futures = pickler.futures
    deps = [f.key for f in futures]
    return unframed(buf.getvalue()), (list(dict.fromkeys(deps)) if len(deps) > 1 else deps), futures


def loads_call(data: bytes, values: dict[str, Any]) -> tuple[tuple, dict]:
    if values:
        args, kwargs = _ArgUnpickler(io.BytesIO(data), values).load()
    else:                      # no dependencies, so no persistent ids: plain (fast) pickle
        args, kwargs = pickle.loads(data)
    return args, kwargs or {}


# -- values ----------------------------------------------------------------------
# Large bytes, bytearrays and memoryviews travel as out-of-band buffers too (pickle would
# copy them into its stream), and come back as the very object the receiver read into.
_OOB_MIN = 64 * 1024


def _as_bytes(buf: Any) -> bytes:
    return buf if type(buf) is bytes else bytes(buf)


def _as_bytearray(buf: Any) -> bytearray:
    return buf if type(buf) is bytearray else bytearray(buf)


def _as_memoryview(buf: Any, fmt: str, shape: tuple, readonly: bool) -> memoryview:
    view = memoryview(buf)
    if view.readonly and not readonly:
        view = memoryview(bytearray(view))
    elif readonly and not view.readonly:
        view = view.toreadonly()
    try:
        return view.cast("B").cast(fmt, shape)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return view


class _Large:
    """A large bytes or bytearray (pickle never asks reducer_override about them)."""
    __slots__ = ("data",)

    def __init__(self, data: bytes | bytearray) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: Any) -> tuple:
        rebuild = _as_bytes if type(self.data) is bytes else _as_bytearray
        return rebuild, (pickle.PickleBuffer(self.data),)


def _reduce(obj: Any) -> Any:
    t = type(obj)
    if t.__name__ == "ndarray" and t.__module__ == "numpy" and not obj.flags.forc \
            and obj.dtype.hasobject is False and obj.nbytes >= _OOB_MIN:
        # numpy pickles a strided view in-band (a copy into the stream, another out of
        # it): one contiguous copy here, and the receiver reads it in place
        return obj.copy().__reduce_ex__(5)
    if t is memoryview:
        return _reduce_memoryview(obj)
    return NotImplemented


def _reduce_memoryview(obj: memoryview) -> tuple:
    """A memoryview rebuilt as a memoryview of the same format, shape and writability
    (its buffer out of band for a value, in the stream for a task's argument)."""
    data = obj if obj.c_contiguous else memoryview(obj.tobytes()).cast(obj.format, obj.shape)  # type: ignore[call-overload]
    return _as_memoryview, (pickle.PickleBuffer(data), obj.format, obj.shape, obj.readonly)


class _ValuePickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        return _reduce(obj)


class _ValueCloudPickler(cloudpickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        found = _reduce(obj)
        return super().reducer_override(obj) if found is NotImplemented else found


def _big(x: Any) -> bool:
    return (type(x) is bytes or type(x) is bytearray) and len(x) >= _OOB_MIN


def _wrap_bytes(obj: Any) -> Any:
    """Large bytes/bytearrays at the top, or directly in a list, tuple or dict: out of band."""
    t = type(obj)
    if _big(obj):
        return _Large(obj)
    if t is list or t is tuple:
        if any(map(_big, obj)):
            return t(_Large(x) if _big(x) else x for x in obj)
    elif t is dict:
        if any(map(_big, obj.values())):
            return {k: _Large(x) if _big(x) else x for k, x in obj.items()}
    return obj


def dumps_value(obj: Any) -> list:
    """Pickle a value with out-of-band buffers: [header, *buffers] (the buffers are views
    of the value's own memory, not copies)."""
    buffers: list[pickle.PickleBuffer] = []
    obj = _wrap_bytes(obj)
    stream = io.BytesIO()
    try:
        try:
            _ValuePickler(stream, protocol=5, buffer_callback=buffers.append).dump(obj)
        except Exception:
            buffers.clear()
            stream = io.BytesIO()
            _ValueCloudPickler(stream, protocol=5, buffer_callback=buffers.append).dump(obj)
    except Exception as exc:
        raise SerializationError(f"cannot pickle {type(obj).__name__} value: "
                                 f"{type(exc).__name__}: {exc}") from exc
    return [stream.getvalue(), *[b.raw() for b in buffers]]


def loads_value(frames: list) -> Any:
    """Unpickle over the frames' buffers: a received array is backed by the received bytes."""
    try:
        return pickle.loads(frames[0], buffers=frames[1:])
    except Exception as exc:
        raise SerializationError(f"cannot unpickle value: {type(exc).__name__}: {exc}") from exc


_SIZED = frozenset({bytes, bytearray, str})
_NUMBERS = frozenset({int, float, bool, type(None)})


def plain_nbytes(obj: Any) -> int | None:
    """About the pickled size of a value made only of bytes, strings and numbers (or a
    flat list/tuple of them), found at C speed; None for anything else. Such a value
    certainly pickles, so a large one need not be pickled before it has to move."""
    t = type(obj)
    if t in _SIZED:
        return len(obj)
    if t in _NUMBERS:
        return 9
    if t is list or t is tuple:
        types = set(map(type, obj))
        if types <= _SIZED:
            return sum(map(len, obj)) + 5 * len(obj)
        if types <= _NUMBERS:
            return 9 * len(obj)
    return None


def nbytes(frames: list) -> int:
    return sum(f.nbytes if isinstance(f, memoryview) else len(f) for f in frames)
