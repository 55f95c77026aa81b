"""Actors: ``client.submit(Class, *args, actor=True)`` -> a future of an Actor proxy.

    proxy.method(*args) ──submit (pinned to "!address")──> actor's worker ──> task
        task ──the actor's own thread (one call at a time) / the loop (async def)──> value

The instance lives on the worker that built it, in ``worker.actors``. A method
call or attribute read on the proxy is a small task pinned to that worker (placed
straight on it when the client is connected there: one hop each way) that
hands the call to the actor's single thread, so calls run one at a time (async
methods run as coroutines on the worker's loop); the task lends its slot while it
waits. The pin is strict: once the worker is gone, calls err with a clear error.
The proxy pickles, so tasks may call the actor too (through their own client).
"""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import inspect
from typing import TYPE_CHECKING, Any

from ..errors import LostError
from ..names import unique_token
from ..registry import current_task, default_client

if TYPE_CHECKING:
    from .client import Client
    from .future import Future


class Actor:
    """A handle on an instance living on one worker."""

    def __init__(self, cls: type, key: str, address: str, client: "Client | None" = None) -> None:
        self._cls = cls
        self._key = key
        self._address = address
        self._client = client

    def __reduce__(self) -> tuple:
        return (Actor, (self._cls, self._key, self._address))

    def __repr__(self) -> str:
        return f"<Actor: {self._cls.__name__}, key={self._key}, worker={self._address}>"

    def _submit(self, name: str, is_call: bool, args: tuple, kwargs: dict) -> "Future":
        client = self._client if self._client is not None else default_client()
        return client.submit(_actor_call, self._key, name, is_call, args, kwargs,
                             workers=["!" + self._address], pure=False)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attr = getattr(self._cls, name, None)
        if callable(attr):
            def call(*args: Any, **kwargs: Any) -> "Future":
                return self._submit(name, True, args, kwargs)
            call.__name__ = name
            return call
        return self._submit(name, False, (), {})    # an attribute read: a future of it


def submit_actor(client: "Client", cls: Any, args: tuple, kwargs: dict, key: str | None,
                 workers: Any, resources: Any, allow_other_workers: bool) -> "Future":
    """``client.submit(cls, *args, actor=True)``: build the instance on a worker."""
    from ..errors import CallerError
    if not isinstance(cls, type):
        raise CallerError(f"actor=True needs a class, got {cls!r:.60}")
    return client.submit(_actor_create, cls, args, kwargs, pure=False,
                         key=key or f"{cls.__name__}-{unique_token()}", workers=workers,
                         resources=resources, allow_other_workers=allow_other_workers)


class _Home:
    """An actor's instance on its worker, with the one thread its calls run on."""

    def __init__(self, instance: Any) -> None:
        self.instance = instance
        self.thread = cf.ThreadPoolExecutor(1, thread_name_prefix="tasknest-actor")


def _here() -> tuple[Any, Any]:
    t = current_task.get()
    assert t is not None, "actor code runs in tasks"
    return t.worker, t


def _actor_create(cls: type, args: tuple, kwargs: dict) -> Actor:
    worker, task = _here()
    homes = worker.__dict__.setdefault("actors", {})
    homes[task.key] = _Home(cls(*args, **kwargs))
    return Actor(cls, task.key, worker.address)


def _actor_call(key: str, name: str, is_call: bool, args: tuple, kwargs: dict) -> Any:
    worker, _ = _here()
    home = getattr(worker, "actors", {}).get(key)
    if home is None:
        raise LostError(f"actor {key} is gone: it does not live on worker {worker.address} "
                        "(its own worker died)")
    attr = getattr(home.instance, name)
    if not is_call:
        fut: Any = home.thread.submit(getattr, home.instance, name)
    elif inspect.iscoroutinefunction(attr):
        fut = asyncio.run_coroutine_threadsafe(attr(*args, **kwargs), worker.loop)
    else:
        fut = home.thread.submit(attr, *args, **kwargs)
    with worker.client._lending():      # the slot serves other tasks while the call runs
        return fut.result()
