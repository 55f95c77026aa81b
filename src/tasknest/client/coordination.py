"""Coordination primitives, as dask names them: Queue, Variable, Event, Lock,
Semaphore, and a client's published datasets.

    caller ──coord (rid)──> scheduler (scheduler/coordination.py) ──reply (rid)──> caller
    caller timed out ──coord abandon (rid)──> scheduler ──reply: the grant, or timeout

Each object names a record the scheduler keeps; any number of objects (in any
process, in tasks too) with the same name share it. Inside a task the task's
client is used, and a task that waits lends its worker slot meanwhile, so a
one-thread worker can run the task that will wake it. Values are pickled here;
futures inside them stay alive while the scheduler holds the value, and come back
bound to the client that received them.
"""
from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any, Callable

from ..errors import CallerError, NotFoundError, RemoteError, TimedOutError
from ..protocol import messages as m
from ..protocol.serialize import dumps_value, loads_value
from ..registry import current_client, default_client
from .future import collect_inner

if TYPE_CHECKING:
    from .client import Client

_NO_DEFAULT = object()


def _client(client: "Client | None") -> "Client":
    return client if client is not None else default_client()


def _pack(value: Any) -> tuple[list, list[str]]:
    with collect_inner() as keys:
        frames = dumps_value(value)
    return [bytes(f) if isinstance(f, memoryview) else f for f in frames], list(dict.fromkeys(keys))


def _unpack(client: "Client", frames: list) -> Any:
    """Futures inside the value bind to ``client`` (it received them)."""
    token = current_client.set(client)
    try:
        return loads_value(frames)
    finally:
        current_client.reset(token)


async def _request(client: "Client", msg: m.Coord, timeout: float | None) -> Any:
    client._rid += 1
    rid = msg.rid = client._rid
    fut = asyncio.get_running_loop().create_future()
    client._replies[rid] = fut
    client._send(msg)         # after whatever the caller sent first (claims of its futures)
    if timeout is None:
        return await fut
    try:
        return await asyncio.wait_for(asyncio.shield(fut), timeout)
    except asyncio.TimeoutError:
        client._send(m.Coord(rid, msg.kind, msg.name, "abandon", "", None, [], None))
        return await fut      # the grant, if it left before our abandon came, else timeout


def call(client: "Client", kind: str, name: str, action: str, holder: str = "",
         value: Any = _NO_DEFAULT, arg: Any = None, timeout: float | None = None,
         post: Callable[[Any], Any] = lambda v: v) -> Any:
    """One request to the scheduler's coordination records, post-processed by ``post``;
    a coroutine on an asynchronous client's own loop."""
    client._check()
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
        raise CallerError(f"timeout must be None or a non-negative number of seconds, "
                          f"got {timeout!r}")
    frames, keys = _pack(value) if value is not _NO_DEFAULT else (None, [])
    msg = m.Coord(0, kind, name, action, holder, frames, keys, arg)
    if client.asynchronous and client._in_own_loop():
        async def _a() -> Any:
            return post(await _request(client, msg, timeout))
        return _a()
    with client._lending():
        answer = client._run(_request(client, msg, timeout))
    return post(answer)


def _timed_out(answer: Any) -> bool:
    return isinstance(answer, dict) and answer.get("timeout") is True


def _name(name: str | None, kind: str) -> str:
    if name is None:
        return f"{kind}-{uuid.uuid4().hex}"
    if not isinstance(name, str) or not name:
        raise CallerError(f"a {kind} name must be a non-empty string, got {name!r}")
    return name


class _Named:
    _kind = ""

    def __init__(self, name: str | None = None, client: "Client | None" = None) -> None:
        self.name = _name(name, self._kind)
        self._given = client

    @property
    def client(self) -> "Client":
        return _client(self._given)

    def __reduce__(self) -> tuple:
        # in a task the copy uses the task's client
        return (type(self), (self.name,))

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.name}>"


class Queue(_Named):
    """A first-in first-out queue kept by the scheduler; items may hold futures."""

    _kind = "queue"

    def put(self, value: Any, timeout: float | None = None) -> Any:
        return call(self.client, "queue", self.name, "put", value=value, timeout=timeout)

    def get(self, timeout: float | None = None, batch: bool | int = False) -> Any:
        """The next item (waits up to ``timeout``); ``batch=n``: a list of the next n,
        ``batch=True``: every item there is now."""
        if batch is not False and batch is not True and (type(batch) is not int or batch < 0):
            raise CallerError(f"batch must be False, True or a non-negative int, got {batch!r}")
        c = self.client

        def post(answer: Any) -> Any:
            if _timed_out(answer):
                raise TimedOutError(f"queue {self.name!r} gave nothing within {timeout} s")
            if "batch" in answer:
                return [_unpack(c, frames) for frames in answer["batch"]]
            return _unpack(c, answer["value"])
        return call(c, "queue", self.name, "get", arg=None if batch is False else batch,
                    timeout=timeout, post=post)

    def qsize(self) -> Any:
        return call(self.client, "queue", self.name, "qsize")


class Variable(_Named):
    """A named value kept by the scheduler (a future in it keeps its result alive)."""

    _kind = "variable"

    def set(self, value: Any, timeout: float | None = None) -> Any:
        return call(self.client, "variable", self.name, "set", value=value, timeout=timeout,
                    post=lambda _: None)

    def get(self, timeout: float | None = None) -> Any:
        """The value; waits up to ``timeout`` for one to be set."""
        c = self.client

        def post(answer: Any) -> Any:
            if _timed_out(answer):
                raise TimedOutError(f"variable {self.name!r} was not set within {timeout} s")
            return _unpack(c, answer["value"])
        return call(c, "variable", self.name, "get", timeout=timeout, post=post)

    def delete(self) -> Any:
        return call(self.client, "variable", self.name, "delete", post=lambda _: None)


class Event(_Named):
    """A named flag: ``wait()`` until some process ``set()``s it."""

    _kind = "event"

    def set(self) -> Any:
        return call(self.client, "event", self.name, "set", post=lambda _: None)

    def clear(self) -> Any:
        return call(self.client, "event", self.name, "clear", post=lambda _: None)

    def is_set(self) -> Any:
        return call(self.client, "event", self.name, "is_set")

    def wait(self, timeout: float | None = None) -> Any:
        """True once set; False if ``timeout`` passed first."""
        return call(self.client, "event", self.name, "wait", timeout=timeout,
                    post=lambda a: not _timed_out(a))


class _Leases(_Named):
    """Leases of a semaphore kept by the scheduler, taken by this object."""

    max_leases = 1

    def __init__(self, name: str | None = None, client: "Client | None" = None) -> None:
        super().__init__(name, client)
        self._leases: list[str] = []

    @property
    def _sem_name(self) -> str:
        return self.name

    def _acquire(self, timeout: float | None) -> Any:
        lease = uuid.uuid4().hex

        def post(answer: Any) -> bool:
            if _timed_out(answer):
                return False
            self._leases.append(lease)
            return True
        return call(self.client, "semaphore", self._sem_name, "acquire", holder=lease,
                    arg=self.max_leases, timeout=timeout, post=post)

    def release(self) -> Any:
        if not self._leases:
            raise CallerError(f"{self!r} released more often than acquired")
        lease = self._leases.pop()
        try:
            return call(self.client, "semaphore", self._sem_name, "release", holder=lease,
                        post=lambda _: True)
        except RemoteError as exc:
            raise CallerError(str(exc)) from None

    def _count(self) -> Any:
        return call(self.client, "semaphore", self._sem_name, "count")

    def __enter__(self) -> "_Leases":
        self._acquire(None)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class Semaphore(_Leases):
    """At most ``max_leases`` holders at once, cluster-wide. A lease is released when
    the connection that took it goes (its client closes, its worker dies)."""

    _kind = "semaphore"

    def __init__(self, max_leases: int = 1, name: str | None = None,
                 client: "Client | None" = None) -> None:
        if type(max_leases) is not int or max_leases < 1:
            raise CallerError(f"max_leases must be a positive int, got {max_leases!r}")
        super().__init__(name, client)
        self.max_leases = max_leases

    def __reduce__(self) -> tuple:
        return (type(self), (self.max_leases, self.name))

    def acquire(self, timeout: float | None = None) -> Any:
        """Take a lease; False if none came free within ``timeout``."""
        return self._acquire(timeout)

    def get_value(self) -> Any:
        """How many leases are taken now."""
        return self._count()


class Lock(_Leases):
    """One holder at a time, cluster-wide (not re-entrant); released when the
    connection that took it goes."""

    _kind = "lock"

    @property
    def _sem_name(self) -> str:
        return "lock:" + self.name    # apart from a semaphore of the same name

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> Any:
        if not blocking:
            timeout = 0
        elif timeout is not None and timeout < 0:
            timeout = None           # threading.Lock's -1
        return self._acquire(timeout)

    def locked(self) -> Any:
        return call(self.client, "semaphore", self._sem_name, "count", post=lambda n: n > 0)


# -- a client's published datasets: functions of a typed self, bound as Client's methods
def publish_dataset(self: Client, *args: Any, name: str | None = None, override: bool = False,
                    **kwargs: Any) -> None:
    """Publish futures (or any values) under names: ``publish_dataset(x=fut)``.

    The scheduler keeps the futures' results alive until they are unpublished.

    Args:
        *args: one value, published under ``name``.
        **kwargs: values published under their keywords' names.
        name: the name of the positional value.
        override: replace a dataset of the same name instead of failing.

    Raises:
        CallerError: a name is already published (without ``override``), or bad
            arguments.
    """
    named = dict(kwargs)
    if args:
        if name is None or len(args) != 1:
            raise CallerError("publish_dataset(value, name=...) takes one value with a name")
        named[name] = args[0]
    def post(answer: Any) -> None:
        if isinstance(answer, dict) and answer.get("exists"):
            raise CallerError("a dataset of that name is already published "
                              "(override=True replaces it)")
    for n, value in named.items():
        call(self, "dataset", _name(n, "dataset"), "publish", value=value,
             arg=bool(override), post=post)


def get_dataset(self: Client, name: str, default: Any = _NO_DEFAULT, timeout: float | None = None) -> Any:
    """The value published under ``name``.

    Args:
        name: the dataset's name.
        default: returned when nothing is published under ``name``.
        timeout: accepted for dask compatibility.

    Returns:
        The value; futures inside it are bound to this client.

    Raises:
        NotFoundError: nothing is published under ``name`` and no default was given
            (also a KeyError).
    """
    def post(answer: Any) -> Any:
        if answer.get("missing"):
            if default is _NO_DEFAULT:
                raise NotFoundError(f"no dataset named {name!r} is published")
            return default
        return _unpack(self, answer["value"])
    return call(self, "dataset", _name(name, "dataset"), "get", post=post)


def list_datasets(self: Client) -> Any:
    """The names of the published datasets.

    Returns:
        A tuple of names.
    """
    return call(self, "dataset", "*", "list", post=tuple)


def unpublish_dataset(self: Client, name: str) -> None:
    """Forget the dataset published under ``name`` (its results may then be freed).

    Args:
        name: the dataset's name.

    Raises:
        NotFoundError: nothing is published under ``name`` (also a KeyError).
    """
    def post(answer: Any) -> None:
        if isinstance(answer, dict) and answer.get("missing"):
            raise NotFoundError(f"no dataset named {name!r} is published")
    return call(self, "dataset", _name(name, "dataset"), "unpublish", post=post)
