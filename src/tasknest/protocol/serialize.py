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

    def persistent_id(self, obj: Any) -> str | None:
        if type(obj) is self.future_type:
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


def dumps_call(args: tuple, kwargs: dict,
               future_type: type) -> tuple[bytes, list[str], list[Any]]:
    """Pickle a call's arguments as (args, kwargs-or-None) without ambiguity; also
    returns the dependencies' keys and the futures met (found wherever they hide)."""
    if not kwargs and all(type(a) in _ATOMIC for a in args):
        return pickle.dumps((args, None), protocol=5), [], []  # the common case, at C speed
    buf = io.BytesIO()
    pickler = _ArgPickler(buf, future_type)
    try:
        pickler.dump((args, kwargs or None))
    except Exception as exc:
        raise SerializationError(
            f"cannot pickle the task's arguments: {type(exc).__name__}: {exc}") from exc
    futures = pickler.futures
    deps = [f.key for f in futures]
    return buf.getvalue(), (list(dict.fromkeys(deps)) if len(deps) > 1 else deps), futures


def loads_call(data: bytes, values: dict[str, Any]) -> tuple[tuple, dict]:
    if values:
        args, kwargs = _ArgUnpickler(io.BytesIO(data), values).load()
    else:                      # no dependencies, so no persistent ids: plain (fast) pickle
        args, kwargs = pickle.loads(data)
    return args, kwargs or {}


# -- values ----------------------------------------------------------------------
def dumps_value(obj: Any) -> list:
    """Pickle a value with out-of-band buffers: [header, *buffers]."""
    buffers: list[pickle.PickleBuffer] = []
    try:
        try:
            header = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        except Exception:
            buffers.clear()
            header = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    except Exception as exc:
        raise SerializationError(f"cannot pickle {type(obj).__name__} value: "
                                 f"{type(exc).__name__}: {exc}") from exc
    return [header, *[b.raw() for b in buffers]]


def loads_value(frames: list) -> Any:
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
    return sum(len(f) if not isinstance(f, memoryview) else f.nbytes for f in frames)
