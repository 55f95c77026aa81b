"""What the cluster knows, for Client: who holds which keys, what each worker runs,
its threads, logs and task stream, and waiting for workers to arrive.

    client.who_has() ──query who_has──> scheduler ──reply {key: [addresses]}──> client

Each is a function of a typed ``self: Client``, bound as a method in Client's body
(``who_has = queries.who_has``); a synchronous client gets the answer, an
asynchronous one a coroutine of it (``shaped``).
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Callable

from ..errors import CallerError, TimedOutError
from ..protocol import messages as m
from ..timeouts import parse_timeout
from .future import flatten_futures

if TYPE_CHECKING:
    from .client import Client

def query(self: "Client", what: str, arg: Any = None) -> Any:
    return self._request(m.Query(0, what, arg), self.timeout)


def who_has(self: "Client", futures: Any = None) -> Any:
    """Where the results are.

    Args:
        futures: a future, or lists, tuples, sets and dicts of them; None: every key.

    Returns:
        ``{key: [worker addresses]}``.
    """
    keys = None if futures is None else [f.key for f in flatten_futures(futures)]
    return self._query("who_has", keys)


def has_what(self: "Client", workers: Any = None) -> Any:
    """Which keys each worker holds.

    Args:
        workers: addresses or names (one, or a list); None: every worker.

    Returns:
        ``{worker address: [keys]}``.

    Raises:
        ClosedClientError: the client is closed.
    """
    return self._shaped(self._query("has_what"), lambda v: self._by_workers(v, workers))


def get_worker_logs(self: "Client") -> Any:
    """``{worker address: [recent log lines]}``."""
    return self._query("worker_logs")


def get_task_stream(self: "Client", start: float | None = None, filename: str | None = None) -> Any:
    """The executions the scheduler remembers (the last 20,000), as dicts with key,
    function, worker, thread, start, stop, status; since ``start`` (a time.time()) if
    given. ``filename``: also write them as a Chrome trace (open in Perfetto).

    Args:
        start: only executions that started after this time.time().
        filename: also write them there as a Chrome trace.

    Returns:
        A list of dicts, one per execution.
    """
    def shape(rows: list) -> list:
        if filename is not None:
            from ..protocol.monitoring import write_chrome_trace
            write_chrome_trace(rows, filename)
        return rows
    return self._shaped(self._query("task_stream", start), shape)


def scheduler_info(self: "Client", n_workers: int = 5) -> Any:
    """The scheduler and its workers, in dask's shape.

    Args:
        n_workers: at most this many workers (all if -1).

    Returns:
        ``{"workers": {address: {...}}, "started": ..., "address": ...}``.
    """
    if not isinstance(n_workers, int):
        raise CallerError(f"n_workers must be an integer, got {n_workers!r}")

    def shape(rows: list) -> dict:
        rows = rows if n_workers < 0 else rows[:n_workers]
        return {"type": "Scheduler", "id": self._info.get("address", self.scheduler_address),
                "address": self.scheduler_address, "started": self._info.get("started"),
                "n_workers": len(rows), "workers": {w["address"]: w for w in rows}}
    return self._shaped(self._query("workers"), shape)


def nthreads(self: "Client", workers: Any = None) -> Any:
    """How many threads each worker runs tasks on.

    Args:
        workers: addresses or names (one, or a list); None: every worker.

    Returns:
        ``{worker address: threads}``.
    """
    return self._shaped(self._query("workers"), lambda rows: self._by_workers(
        {w["address"]: w["nthreads"] for w in rows}, workers, rows))


def processing(self: "Client", workers: Any = None) -> Any:
    """What each worker runs or has queued.

    Args:
        workers: addresses or names (one, or a list); None: every worker.

    Returns:
        ``{worker address: [keys it runs or has queued]}``.
    """
    return self._shaped(self._query("processing"), lambda v: self._by_workers(v, workers))


def shaped(self: "Client", answer: Any, shape: Callable[[Any], Any]) -> Any:
    if self.asynchronous:
        async def _s() -> Any:
            return shape(await answer)
        return _s()
    return shape(answer)


def by_workers(self: "Client", by_address: dict, workers: Any, rows: list | None = None) -> dict:
    if workers is None:
        return by_address
    wanted = set(self._workers_arg(workers) or [])
    if rows is None:
        return {a: v for a, v in by_address.items() if a in wanted}
    names = {w["address"] for w in rows if w["name"] in wanted or w["address"] in wanted}
    return {a: v for a, v in by_address.items() if a in names}


def wait_for_workers(self: "Client", n_workers: int = 1, timeout: float | str | None = None) -> Any:
    """Block until at least ``n_workers`` workers are connected.

    Args:
        n_workers: how many.
        timeout: seconds or a string ("10 s"); None waits for ever.

    Raises:
        TimedOutError: saying how many of them came ("2/10 workers").
        CallerError: bad arguments.
    """
    timeout = parse_timeout(timeout)
    if not isinstance(n_workers, int) or n_workers < 0:
        raise CallerError(f"n_workers must be a non-negative integer, got {n_workers!r}")
    if self.asynchronous:
        return self._wait_for_workers_async(n_workers, timeout)
    return self._run(self._wait_for_workers_async(n_workers, timeout))


async def wait_for_workers_async(self: "Client", n: int, timeout: float | None) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.01
    while True:
        info = await self._request_async(m.Query(0, "workers", None), self.timeout)
        if len(info) >= n:
            return
        if deadline is not None and time.monotonic() > deadline:
            raise TimedOutError(f"only {len(info)}/{n} workers arrived within {timeout} s")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.2)
