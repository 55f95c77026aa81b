"""What a running task can reach: get_worker, get_client, worker_client, secede, rejoin.

The current task lives in a ContextVar, so it is right both for task threads and
for ``async def`` tasks running on the worker's event loop.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..client.client import Client
from ..errors import CallerError
from ..timeouts import parse_timeout
from ..protocol import messages as m
from ..registry import current_client, current_task, default_client

if TYPE_CHECKING:
    from .server import Worker


class TaskContext:
    __slots__ = ("worker", "key", "depth", "seceded", "inline", "impure", "attempt")

    def __init__(self, worker: "Worker", key: str, depth: int, inline: int) -> None:
        self.worker = worker
        self.key = key
        self.depth = depth
        self.seceded = 0          # worker_client() nesting that told the scheduler
        self.inline = inline      # how many tasks this thread runs inline, nested
        self.impure = 0           # pure=False submissions so far (they name child keys)
        self.attempt = 0          # retries left: a retried task gets fresh children


def _task() -> TaskContext:
    t = current_task.get()
    if t is None:
        raise CallerError("this must be called from inside a task running on a tasknest worker")
    return t


def get_worker() -> "Worker":
    """The worker running the current task."""
    return _task().worker


def get_client() -> Client:
    """The client to use here: the worker's own inside a task, else the default client."""
    t = current_task.get()
    if t is not None:
        return t.worker.client
    return default_client()


class worker_client:
    """Use the cluster from inside a task without holding a slot while waiting.

    On entry the scheduler is told that this task no longer counts against its
    worker's quota (it *secedes*); on exit it *rejoins*. The thread keeps doing
    useful work meanwhile (running its own children inline), and lends its slot
    to another thread only while it truly waits.

    Args:
        timeout: how long entering may wait for the worker to be connected to its
            scheduler (seconds or a string such as "5 s"); TimeoutError after it.
        separate_thread: accepted for dask compatibility.
    """

    def __init__(self, timeout: float | str | None = None, separate_thread: bool = True) -> None:
        self.timeout = parse_timeout(timeout)

    def __enter__(self) -> Client:
        t = _task()
        client = t.worker.client
        if client.status != "running":
            client._await_running(self.timeout)
        if t.seceded == 0:
            t.worker.send(m.Secede(t.key))
        t.seceded += 1
        return client

    def __exit__(self, *exc: Any) -> None:
        t = current_task.get()
        if t is None:
            return
        t.seceded -= 1
        if t.seceded == 0:
            t.worker.send(m.Rejoin(t.key))

    async def __aenter__(self) -> Client:
        return _task().worker.client

    async def __aexit__(self, *exc: Any) -> None:
        return None


local_executor = worker_client


def secede() -> None:
    """Leave the worker's thread pool: another thread takes this slot."""
    t = _task()
    w = t.worker
    with w.lock:
        left = w.pool.secede()
    if left:
        t.seceded += 1
        if t.seceded == 1:
            w.send(m.Secede(t.key))


def rejoin() -> None:
    """Come back to the pool after secede(): wait for a free slot."""
    t = _task()
    w = t.worker
    with w.lock:
        back = w.pool.rejoin()
    if back:
        t.seceded -= 1
        if t.seceded == 0:
            w.send(m.Rejoin(t.key))


def set_task(ctx: TaskContext | None) -> tuple:
    return current_task.set(ctx), current_client.set(ctx.worker.client if ctx else None)


def reset_task(tokens: tuple) -> None:
    current_task.reset(tokens[0])
    current_client.reset(tokens[1])
