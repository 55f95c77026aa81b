"""Futures in the ``concurrent.futures`` dialect, plus wait / as_completed.

Every Future object with the same key in one client shares one FutureState; the
client counts the Future objects per key and tells the scheduler when the last
one is gone. A Future pickles as its key and re-binds, when unpickled, to the
client of the process (or task) that unpickles it.
"""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from ..errors import (CallerError, FutureCancelledError, KilledWorker, LostError, RemoteError,
                      RemoteTraceback, SerializationError)
from ..protocol.serialize import loads_value

if TYPE_CHECKING:
    from .client import Client

_NOTHING = object()
_state_lock = threading.Lock()    # orders settling against callback registration
_collect = threading.local()      # keys of futures pickled inside a task's result


class FutureState:
    """What one client knows about one key."""

    __slots__ = ("status", "type", "nbytes", "frames", "value", "who_has", "error",
                 "traceback", "_event", "callbacks")

    def __init__(self) -> None:
        self.status = "pending"
        self.type = ""
        self.nbytes = 0
        self.frames: list | None = None
        self.value: Any = _NOTHING
        self.who_has: list[str] = []
        self.error: BaseException | None = None
        self.traceback: str | None = None
        self._event: threading.Event | None = None
        self.callbacks: list[Callable[[], None]] = []

    def done(self) -> bool:
        return self.status != "pending"

    def wait(self, timeout: float | None = None) -> bool:
        if self.status != "pending":
            return True
        ev = self._event
        if ev is None:
            ev = self._event = threading.Event()
            if self.status != "pending":
                return True
        return ev.wait(timeout)

    def add_callback(self, cb: Callable[[], None]) -> bool:
        """Register cb for when this settles; False (and cb not kept) if already settled."""
        with _state_lock:
            if self.status != "pending":
                return False
            self.callbacks.append(cb)
            return True

    def _settle(self) -> None:
        if self._event is not None:
            self._event.set()
        with _state_lock:
            callbacks, self.callbacks = self.callbacks, []
        for cb in callbacks:
            try:
                cb()
            except Exception:  # a user callback must not break the client
                import logging
                logging.getLogger("tasknest.client").exception("error in done callback")

    def finish(self, type_name: str, nbytes: int, who_has: list[str], frames: list | None,
               value: Any = _NOTHING) -> None:
        self.type = type_name or self.type
        self.nbytes = nbytes
        self.who_has = who_has
        if frames is not None:
            self.frames = frames
        if value is not _NOTHING:
            self.value = value
        if self.status == "pending" or self.status == "lost":
            self.status = "finished"
            self._settle()

    def fail(self, error: BaseException, traceback: str | None = None,
             status: str = "error") -> None:
        if self.status in ("pending", "lost"):
            self.error = error
            self.traceback = traceback
            self.status = status
            self._settle()

    def reset(self) -> None:
        """The result was lost and is being recomputed."""
        if self.status == "finished":
            self.status = "pending"
            self.frames = None
            self.value = _NOTHING
            if self._event is not None:
                self._event.clear()

    def get_value(self) -> Any:
        if self.value is _NOTHING and self.frames is not None:
            self.value = loads_value(self.frames)
            self.frames = None
        return self.value

    def has_value(self) -> bool:
        return self.value is not _NOTHING or self.frames is not None


def error_from(exception: list, traceback: str, kind: str) -> BaseException:
    """Rebuild a remote failure as an exception with the remote traceback chained."""
    if kind == "exception" and exception:
        try:
            exc = loads_value(exception)
        except Exception as e:  # the exception class may not exist here
            exc = RemoteError(f"task raised an exception that cannot be unpickled here ({e}):\n"
                              f"{traceback}")
        if isinstance(exc, BaseException):
            if traceback:
                exc.__cause__ = RemoteTraceback(traceback)
            return exc
    if kind == "cancelled":
        return FutureCancelledError(traceback)
    if kind == "killed":
        return KilledWorker(traceback)
    if kind == "lost":
        return LostError(traceback)
    if kind == "serialization":
        return SerializationError(traceback)
    return RemoteError(traceback)


class Future:
    """A remote result. ``result()`` blocks; ``await future`` in async code."""

    __slots__ = ("key", "client", "_state", "__weakref__")

    def __init__(self, key: str, client: "Client | None" = None, _new: bool = True) -> None:
        if client is None:
            from .client import default_client
            client = default_client()
        self.key = key
        self.client = client
        self._state = client._acquire(key, inform=_new)

    def __del__(self) -> None:
        try:
            self.client._release(self.key)
        except Exception:
            pass

    # -- concurrent.futures API ------------------------------------------------------
    def result(self, timeout: float | None = None) -> Any:
        if self.client.asynchronous and _in_loop(self.client):
            return self._result_async()
        return self.client._gather_sync([self], timeout=timeout)[0]

    async def _result_async(self) -> Any:
        return (await self.client._gather_async([self]))[0]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self.client._wait_states([self._state], timeout)
        if self._state.status == "cancelled":
            raise FutureCancelledError(f"{self.key} was cancelled")
        return self._state.error

    def traceback(self, timeout: float | None = None) -> str | None:
        self.client._wait_states([self._state], timeout)
        return self._state.traceback

    def done(self) -> bool:
        return self._state.done()

    def cancel(self) -> bool:
        self.client.cancel([self])
        return True

    def cancelled(self) -> bool:
        return self._state.status == "cancelled"

    def add_done_callback(self, fn: Callable[["Future"], Any]) -> None:
        """Call ``fn(future)`` once the future is done (at once if it already is)."""
        cb = lambda: fn(self)  # noqa: E731 - keeps self alive until called
        if not self._state.add_callback(cb):
            cb()

    @property
    def status(self) -> str:
        return self._state.status

    @property
    def type(self) -> str:
        return self._state.type

    def __await__(self) -> Any:
        return self.client._gather_async([self], single=True).__await__()

    def __repr__(self) -> str:
        st = self._state
        if st.status == "finished" and st.type:
            return f"<Future: status: {st.status}, type: {st.type}, key: {self.key}>"
        return f"<Future: status: {st.status}, key: {self.key}>"

    def __reduce__(self) -> tuple:
        keys = getattr(_collect, "keys", None)
        if keys is not None:
            keys.append(self.key)
        return (_rebuild_future, (self.key,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Future) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)


def _rebuild_future(key: str) -> Future:
    from .client import default_client
    return Future(key, default_client())


def _in_loop(client: "Client") -> bool:
    try:
        return asyncio.get_running_loop() is client.loop
    except RuntimeError:
        return False


class collect_inner:
    """Context: record keys of futures pickled meanwhile (they live inside a result)."""

    def __enter__(self) -> list[str]:
        self.prev = getattr(_collect, "keys", None)
        _collect.keys = []
        return _collect.keys

    def __exit__(self, *exc: Any) -> None:
        _collect.keys = self.prev


# -- module-level helpers -------------------------------------------------------------
FIRST_COMPLETED = cf.FIRST_COMPLETED
FIRST_EXCEPTION = cf.FIRST_EXCEPTION
ALL_COMPLETED = cf.ALL_COMPLETED


class DoneAndNotDone(tuple):
    @property
    def done(self) -> set:
        return self[0]

    @property
    def not_done(self) -> set:
        return self[1]


def wait(fs: Iterable[Future] | Future, timeout: float | None = None,
         return_when: str = ALL_COMPLETED) -> DoneAndNotDone:
    """Block until futures complete; returns (done, not_done) like concurrent.futures."""
    if isinstance(fs, Future):
        fs = [fs]
    fs = list(fs)
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
        raise CallerError(f"timeout must be None or a non-negative number of seconds, "
                          f"got {timeout!r}")
    if return_when not in (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION):
        raise CallerError(f"unknown return_when {return_when!r} (use ALL_COMPLETED, "
                          "FIRST_COMPLETED or FIRST_EXCEPTION)")
    for f in fs:
        if not isinstance(f, Future):
            raise CallerError(f"wait() takes futures, got {type(f).__name__} {f!r:.60}")
    deadline = None if timeout is None else time.monotonic() + timeout
    cond = threading.Condition()
    fired = [0]

    def poke(_: Future) -> None:
        with cond:
            fired[0] += 1
            cond.notify_all()

    def satisfied() -> bool:
        done = [f for f in fs if f.done()]
        if return_when == ALL_COMPLETED:
            return len(done) == len(fs)
        if return_when == FIRST_COMPLETED:
            return bool(done) or not fs
        return any(f.status == "error" for f in done) or len(done) == len(fs)

    if not satisfied():
        for f in fs:
            f.add_done_callback(poke)
        _wake_clients(fs)
        with cond:
            while not satisfied():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                cond.wait(remaining if remaining is None else min(remaining, 1.0))
    done = {f for f in fs if f.done()}
    if return_when == ALL_COMPLETED and timeout is not None and len(done) < len(fs):
        raise TimeoutError(f"{len(fs) - len(done)} of {len(fs)} futures not done after "
                           f"{timeout} s")
    return DoneAndNotDone((done, set(fs) - done))


def _wake_clients(futures: Iterable[Future]) -> None:
    """About to wait on these: their clients send what they queued now."""
    for client in {id(f.client): f.client for f in futures}.values():
        client._wake()


class as_completed:
    """Iterate over futures as they complete; ``add()`` more while iterating."""

    def __init__(self, futures: Iterable[Future] = (), with_results: bool = False,
                 raise_errors: bool = True) -> None:
        self.with_results = with_results
        self.raise_errors = raise_errors
        self._cond = threading.Condition()
        self._done: list[Future] = []
        self._pending = 0
        self._clients: dict[int, Any] = {}
        for f in futures:
            self.add(f)

    def add(self, future: Future) -> None:
        with self._cond:
            self._pending += 1
            self._clients.setdefault(id(future.client), future.client)
        future.add_done_callback(self._on_done)

    def update(self, futures: Iterable[Future]) -> None:
        for f in futures:
            self.add(f)

    def _on_done(self, future: Future) -> None:
        with self._cond:
            self._done.append(future)
            self._cond.notify_all()

    def count(self) -> int:
        with self._cond:
            return self._pending

    def is_empty(self) -> bool:
        return self.count() == 0

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        with self._cond:
            if self._pending == 0:
                raise StopIteration
            if not self._done:
                for client in list(self._clients.values()):
                    client._wake()
            while not self._done:
                self._cond.wait(1.0)
            future = self._done.pop(0)
            self._pending -= 1
        if self.with_results:
            try:
                return future, future.result()
            except BaseException as exc:
                if self.raise_errors:
                    raise
                return future, exc
        return future


def fire_and_forget(futures: Any) -> None:
    """Run these tasks to completion even after every Future on them is dropped."""
    from .client import flatten_futures
    fs = flatten_futures(futures)
    by_client: dict[int, tuple[Any, list[str]]] = {}
    for f in fs:
        by_client.setdefault(id(f.client), (f.client, []))[1].append(f.key)
    for client, keys in by_client.values():
        client._fire_and_forget(keys)
