"""Actors: ``client.submit(Class, *args, actor=True)`` -> a future of an Actor proxy.

    proxy.method(*args) ──submit (pinned to "!address")──> actor's worker ──> task
        task ──its turn (one call at a time, in the order they started)──> value
        task ──the loop (async def)──> value

The instance lives on the worker that built it, in ``worker.actors``. A method
call or attribute read on the proxy is a small task pinned to that worker (placed
straight on it when the client is connected there: one hop each way). Calls run
one at a time, in the order their tasks started, on the task's own thread: a
call that finds the actor free runs at once, with no hand-off to another thread
(which would cost two thread wake-ups, as much as the round trip itself); one
that must wait for its turn lends its slot meanwhile. Async methods run as
coroutines on the worker's loop. The pin is strict: once the worker is gone,
calls err with a clear error.
The proxy pickles, so tasks may call the actor too (through their own client).
"""
from __future__ import annotations

import asyncio
import inspect
import threading
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
        if kwargs:
            return client.submit(_actor_call_kw, self._key, name, args, kwargs,
                                 workers=["!" + self._address], pure=False)
        # flat arguments: plain ones pickle at C speed (this is the round trip's path)
        return client.submit(_actor_call, self._key, name, is_call, *args,
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
    """An actor's instance on its worker, and whose turn it is (tickets, in order)."""

    def __init__(self, instance: Any) -> None:
        self.instance = instance
        self.turn = threading.Condition()
        self.issued = 0
        self.serving = 0
        self._async: dict[str, bool] = {}

    def is_async(self, name: str, attr: Any) -> bool:
        known = self._async.get(name)
        if known is None:
            known = self._async[name] = inspect.iscoroutinefunction(attr)
        return known


def _here() -> tuple[Any, Any]:
    t = current_task.get()
    assert t is not None, "actor code runs in tasks"
    return t.worker, t


def _actor_call_kw(key: str, name: str, args: tuple, kwargs: dict) -> Any:
    return _actor_call(key, name, True, *args, **kwargs)


def _actor_create(cls: type, args: tuple, kwargs: dict) -> Actor:
    worker, task = _here()
    homes = worker.__dict__.setdefault("actors", {})
    homes[task.key] = _Home(cls(*args, **kwargs))
    return Actor(cls, task.key, worker.address)


def _actor_call(key: str, name: str, is_call: bool, *args: Any, **kwargs: Any) -> Any:
    worker, _ = _here()
    home = getattr(worker, "actors", {}).get(key)
    if home is None:
        raise LostError(f"actor {key} is gone: it does not live on worker {worker.address} "
                        "(its own worker died)")
    attr = getattr(home.instance, name)
    if is_call and home.is_async(name, attr):
        fut = asyncio.run_coroutine_threadsafe(attr(*args, **kwargs), worker.loop)
        with worker.client._lending():  # the slot serves other tasks while it runs
            return fut.result()
    turn = home.turn
    with turn:
        ticket = home.issued
        home.issued += 1
        mine = home.serving == ticket
    if not mine:
        with worker.client._lending(), turn:   # the slot serves others while it waits
            while home.serving != ticket:
                turn.wait()
    try:
        return attr(*args, **kwargs) if is_call else attr
    finally:
        with turn:
            home.serving += 1
            turn.notify_all()
