"""Scatter, for Client: local values become futures of data held on the workers.

    scatter(data) ──scatter-plan {keys}──> scheduler ──scatter-to {address: keys}──> client
                  ──put-data (each worker its part, straight)──> workers ──stored──> scheduler
                  <──reply── scheduler, once every value is stored

A value's key is its type and the hash of its bytes, so equal data gets one key
(``hash=False``: fresh keys). If a worker cannot be reached the values go through
the scheduler (``scatter-via``). A worker's client sends them with the plan.

Each is a function of a typed ``self: Client``, bound as a method in Client's body.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..names import content_key, hasher, unique_token
from ..protocol import messages as m
from ..protocol.serialize import dumps_value, nbytes
from ..timeouts import parse_timeout
from .future import Future, describe_type

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger("tasknest.client")


def data_key(value: Any, frames: list, hashed: bool) -> str:
    """A scattered value's key: by its content (equal data, same key) or fresh."""
    name = type(value).__name__
    if not hashed:
        return f"{name}-{unique_token()}"
    return content_key(name, hasher(*frames))

def scatter(self: "Client", data: Any, broadcast: bool = False, workers: Any = None,
            timeout: float | str | None = None, hash: bool = True,
            direct: bool | None = None) -> Any:
    """Send local data to the workers; returns futures in the data's shape.

    Args:
        data: a list, tuple, set, frozenset, namedtuple or dict (one future per
            element or value, in the same type), a range or iterator (a list of
            futures), or any other object (one future).
        broadcast: a copy on every worker.
        workers: the workers to put the data on.
        hash: equal values get equal keys (``typename-<hash>``); False: fresh keys.
        timeout: seconds or a string ("2 s") for the data to arrive.
        direct: accepted for dask compatibility (data always goes straight).

    Returns:
        Futures, in the shape of ``data``.

    Raises:
        CallerError: bad arguments; SerializationError: a value cannot be pickled.
    """
    self._check()
    timeout = parse_timeout(timeout)
    if isinstance(data, range) or isinstance(data, Iterator):
        data = list(data)
    if isinstance(data, dict):
        keys, values = [str(k) for k in data], list(data.values())
        frames = [dumps_value(v) for v in values]
    else:
        values = list(data) if isinstance(data, (list, tuple, set, frozenset)) else [data]
        frames = [dumps_value(v) for v in values]
        keys = [data_key(v, fr, hash) for v, fr in zip(values, frames)]
    futures = self._scatter(keys, values, broadcast, self._workers_arg(workers), timeout,
                            frames)
    if self.asynchronous:   # _scatter gave a coroutine: shape its futures once awaited
        async def _shaped(pending: Any = futures) -> Any:
            return self._scatter_shape(data, await pending)
        return _shaped()
    return self._scatter_shape(data, futures)


def scatter_shape(data: Any, futures: list[Future]) -> Any:
    if isinstance(data, dict):
        return type(data)(zip(data, futures))
    if isinstance(data, tuple) and hasattr(data, "_fields"):      # a namedtuple
        return type(data)(*futures)  # type: ignore[arg-type]
    if isinstance(data, (list, tuple, set, frozenset)):
        return futures if type(data) is list else type(data)(futures)
    return futures[0]


def scatter_keys(self: "Client", keys: list[str], values: list, broadcast: bool, workers: list | None,
             timeout: float | None, frames: list | None = None) -> list[Future]:
    frames = frames if frames is not None else [dumps_value(v) for v in values]
    futures = [self._new_future(k)[0] for k in keys]
    if self._peers is not None and not self._worker_side:
        # the scheduler plans, we send each worker its part ourselves (scatter_to)
        msg: m.Request = m.ScatterPlan(0, keys, broadcast, workers)
        reply = self._request(msg, timeout, frames)
    else:
        reply = self._request(m.Scatter(0, keys, frames, broadcast, workers), timeout)

    def settle() -> list[Future]:
        for f, v, fr in zip(futures, values, frames):
            f._state.finish(describe_type(v), nbytes(fr), [], None, v)
        return futures
    if self.asynchronous:   # the request is a coroutine: settle once it is answered
        async def _after() -> list[Future]:
            await reply
            return settle()
        return _after()  # type: ignore[return-value]
    return settle()


def on_scatter_to(self: "Client", msg: m.ScatterTo) -> None:
    """Where our scatter's values go: we send them (again, after a scheduler restart)."""
    frames = self._scattering.get(msg.rid)
    request = self._requests.get(msg.rid)
    if frames is None or not isinstance(request, m.ScatterPlan):
        return                     # (answered or given up meanwhile)
    for address, idx in msg.plan.items():
        task = asyncio.ensure_future(self._scatter_part(
            msg.id, address, [request.keys[i] for i in idx], [frames[i] for i in idx]))
        self._scatter_sends.add(task)           # (a running task must be referenced)
        task.add_done_callback(self._scatter_sends.discard)


async def scatter_part(self: "Client", scatter: int, address: str, keys: list, frames: list) -> None:
    try:
        await self._peers.put_data(address, scatter, keys, frames)  # type: ignore[union-attr]
    except OSError as exc:         # (CommClosedError too): the old way, through the scheduler
        log.info("scatter: cannot hand %d values to %s (%s): sending them through the "
                 "scheduler", len(keys), address, exc)
        if self.status == "running":
            self._send(m.ScatterVia(scatter, address, keys, frames))
