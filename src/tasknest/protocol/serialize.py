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

import hashlib
import io
import pickle
import threading
import weakref
from typing import Any, Callable

import cloudpickle

from ..errors import SerializationError

_func_cache: "weakref.WeakKeyDictionary[Any, bytes]" = weakref.WeakKeyDictionary()
_func_cache_strong: dict[int, tuple[Any, bytes]] = {}   # for callables that refuse weakrefs
_loads_cache: dict[bytes, Any] = {}
_LOADS_CACHE_MAX = 4096
_lock = threading.Lock()


def dumps_function(func: Callable) -> bytes:
    """Pickle a callable, once per object."""
    try:
        return _func_cache[func]
    except (KeyError, TypeError):
        pass
    hit = _func_cache_strong.get(id(func))
    if hit is not None and hit[0] is func:
        return hit[1]
    try:
        data = cloudpickle.dumps(func, protocol=5)
    except Exception as exc:
        raise SerializationError(f"cannot pickle function {func!r}: {exc}") from exc
    _remember(func, data)
    return data


def _remember(func: Any, data: bytes) -> None:
    with _lock:
        try:
            _func_cache[func] = data
        except TypeError:
            if len(_func_cache_strong) > _LOADS_CACHE_MAX:
                _func_cache_strong.clear()
            _func_cache_strong[id(func)] = (func, data)


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


def function_token(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


# -- arguments -------------------------------------------------------------------
class _ArgPickler(cloudpickle.Pickler):
    """cloudpickle, so classes and lambdas from __main__ travel by value."""

    def __init__(self, file: io.BytesIO, future_type: type) -> None:
        super().__init__(file, protocol=5)
        self.future_type = future_type
        self.deps: list[str] = []

    def persistent_id(self, obj: Any) -> str | None:
        if type(obj) is self.future_type:
            self.deps.append(obj.key)
            return obj.key
        return None


class _ArgUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, values: dict[str, Any]) -> None:
        super().__init__(file)
        self.values = values

    def persistent_load(self, pid: Any) -> Any:
        return self.values[pid]


def dumps_call(args: tuple, kwargs: dict, future_type: type) -> tuple[bytes, list[str]]:
    """Pickle a call's arguments as (args, kwargs-or-None) without ambiguity."""
    buf = io.BytesIO()
    pickler = _ArgPickler(buf, future_type)
    try:
        pickler.dump((args, kwargs or None))
    except Exception as exc:
        raise SerializationError(
            f"cannot pickle the task's arguments: {type(exc).__name__}: {exc}") from exc
    deps = pickler.deps
    return buf.getvalue(), (list(dict.fromkeys(deps)) if len(deps) > 1 else deps)


def loads_call(data: bytes, values: dict[str, Any]) -> tuple[tuple, dict]:
    args, kwargs = _ArgUnpickler(io.BytesIO(data), values).load()
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


def nbytes(frames: list) -> int:
    return sum(len(f) if not isinstance(f, memoryview) else f.nbytes for f in frames)
