"""A pickled call run outside any task (client.run, run_on_scheduler, worker plugins).

    bytes ──cloudpickle──> (fn, args, kwargs) ──a thread (or this loop, if async)──>
        (True, value frames) | (False, exception frames)

A function that takes a ``dask_worker`` (or ``dask_scheduler``) parameter gets the
process's worker (or scheduler) object, as in dask.
"""
from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping
from typing import Any

import cloudpickle

from .serialize import dumps_value


def dumps_run(fn: Any, args: tuple, kwargs: dict) -> bytes:
    return cloudpickle.dumps((fn, args, kwargs))


def _call(fn: Any, args: tuple, kwargs: dict, extra: dict[str, Any]) -> Any:
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):     # (a builtin without a signature: no extras)
        params = {}
    for name, value in extra.items():
        if name in params and name not in kwargs:
            kwargs = {**kwargs, name: value}
    return fn(*args, **kwargs)


async def run_call(call: bytes, extra: dict[str, Any]) -> tuple[bool, list]:
    loop = asyncio.get_running_loop()
    try:
        fn, args, kwargs = cloudpickle.loads(call)
        if inspect.iscoroutinefunction(fn):
            value = await _call(fn, args, kwargs, extra)
        else:
            value = await loop.run_in_executor(None, _call, fn, args, kwargs, extra)
        return True, _frames(value)
    except Exception as exc:          # the caller re-raises it
        try:
            return False, _frames(exc)
        except Exception:
            return False, _frames(RuntimeError(f"{type(exc).__name__}: {exc}"))


def _frames(value: Any) -> list:
    return [bytes(f) if isinstance(f, memoryview) else f for f in dumps_value(value)]
