"""Futures in the ``concurrent.futures`` dialect, plus wait / as_completed.

Every Future object with the same key in one client shares one FutureState; the
client counts the Future objects per key and tells the scheduler when the last
one is gone. A Future pickles as its key and re-binds, when unpickled, to the
client of the process (or task) that unpickles it.
"""
from __future__ import annotations

import asyncio
import builtins
import concurrent.futures as cf
import contextlib
import importlib
import itertools
import threading
import time
import types
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from tblib import Traceback

from ..errors import (CallerError, FutureCancelledError, KilledWorker, LostError, RemoteError,
                      RemoteTraceback, SerializationError, TimedOutError)
from ..memory import shared
from ..protocol.serialize import loads_value
from ..registry import current_client, default_client
from ..timeouts import parse_timeout

if TYPE_CHECKING:
    from .client import Client

_NOTHING = object()
_NONE: Any = ()        # shared empty list of a state (most never get callbacks)
_NO_META = ("", ())
_state_lock = threading.Lock()    # orders settling against callback registration
_collect = threading.local()      # keys of futures pickled inside a task's result


class FutureState:
    """What one client knows about one key (a million of them for a large map: each
    slot is 8 B a task, so a failure's three parts share one, the result's type and
    holders another, and a waiter's event is one of the callbacks)."""

    __slots__ = ("status", "meta", "frames", "value", "failure", "callbacks", "refs",
                 "recipe")

    def __init__(self, recipe: tuple | None = None) -> None:
        self.status = "pending"
        self.meta: tuple[str, tuple[str, ...]] = _NO_META   # (type name, holders), shared
        # the result's pickle until it is first read: one frame is kept as the bytes
        # alone (a million small results each kept a list of one, ~70 B)
        self.frames: list | bytes | None = None
        self.value: Any = _NOTHING
        # (exception, remote traceback as text, ... as frames), once it failed
        self.failure: tuple[BaseException, str | None, types.TracebackType | None] | None \
            = None
        self.callbacks: list[Callable[[], None]] = _NONE
        self.refs = 1            # the client's futures of the key (a table of counts cost more)
        # what to send again if the scheduler restarts before the result: Submit's fields
        # after the key, or a map item's own part (streaming.full_recipe)
        self.recipe = recipe

    @property
    def type(self) -> str:
        return self.meta[0]

    @property
    def who_has(self) -> tuple[str, ...]:
        return self.meta[1]

    @property
    def error(self) -> BaseException | None:
        return self.failure[0] if self.failure is not None else None

    @property
    def traceback(self) -> str | None:
        return self.failure[1] if self.failure is not None else None

    @property
    def tb(self) -> types.TracebackType | None:
        return self.failure[2] if self.failure is not None else None

    def done(self) -> bool:
        return self.status != "pending"

    def wait(self, timeout: float | None = None) -> bool:
        if self.status != "pending":
            return True
        ev = threading.Event()
        if not self.add_callback(ev.set):
            return True
        if ev.wait(timeout):
            return True
        self.remove_callback(ev.set)      # (a caller polling in a loop leaves none behind)
        return self.status != "pending"

    def add_callback(self, cb: Callable[[], None]) -> bool:
        """Register cb for when this settles; False (and cb not kept) if already settled."""
        with _state_lock:
            if self.status != "pending":
                return False
            if self.callbacks:
                self.callbacks.append(cb)
            else:
                self.callbacks = [cb]
            return True

    def remove_callback(self, cb: Callable[[], None]) -> None:
        with _state_lock:
            try:
                self.callbacks.remove(cb)
            except (ValueError, AttributeError):
                pass

    def _settle(self) -> None:
        with _state_lock:
            callbacks, self.callbacks = self.callbacks, _NONE
            self._forget_recipe()
        for cb in callbacks:
            try:
                cb()
            except Exception:  # a user callback must not break the client
                import logging
                logging.getLogger("tasknest.client").exception("error in done callback")

    def _forget_recipe(self) -> None:
        """No longer to send again (``_state_lock`` held): a map's item counts as
        settled for its map's window of tasks in flight (streaming.py)."""
        recipe = self.recipe
        if recipe is not None:
            self.recipe = None
            if type(recipe[0]) is not bytes:       # (a map's, not Submit's fields)
                recipe[0].settled += 1

    def drop(self) -> None:
        """The client let go of the key before its result."""
        with _state_lock:
            self._forget_recipe()

    def finish(self, type_name: str, nbytes: int, who_has: list[str], frames: list | None,
               value: Any = _NOTHING) -> None:
        # (each message decodes its own copies of the type and the holders; a finished
        # state keeps one of each kind, ~190 B a task: see memory.shared)
        self.meta = shared((type_name or self.meta[0], shared(tuple(who_has))))
        if frames is not None:
            self.frames = frames[0] if len(frames) == 1 and type(frames[0]) is bytes else frames
        if value is not _NOTHING:
            self.value = value
        if self.status == "pending" or self.status == "lost":
            self.status = "finished"
            self._settle()

    def fail(self, error: BaseException, traceback: str | None = None,
             status: str = "error") -> None:
        if self.status in ("pending", "lost"):
            self.failure = (error, traceback, error.__traceback__)
            self.status = status
            self._settle()

    def cancel(self, error: FutureCancelledError) -> None:
        """Cancelled by this client, whatever state it was in (a result is dropped)."""
        self.frames = None
        self.value = _NOTHING
        if self.status == "pending":
            self.fail(error, None, "cancelled")
        else:
            self.failure = (error, None, None)
            self.status = "cancelled"

    def reset(self) -> None:
        """The result was lost and is being recomputed (or an erred task retried)."""
        if self.status in ("finished", "error"):
            self.status = "pending"
            self.failure = None
            self.frames = None
            self.value = _NOTHING

    def get_value(self) -> Any:
        if self.value is _NOTHING and self.frames is not None:
            frames = self.frames
            self.value = loads_value(frames if type(frames) is list else [frames])
            self.frames = None
        return self.value

    def has_value(self) -> bool:
        return self.value is not _NOTHING or self.frames is not None


def error_from(exception: list, traceback: str, kind: str) -> BaseException:
    """Rebuild a remote failure as an exception with the remote traceback chained."""
    if kind == "exception" and exception:
        tb = None
        try:
            exc = loads_value(exception)
            if isinstance(exc, tuple) and len(exc) == 2:    # (exception, its frames)
                exc, frames = exc
                tb = Traceback.from_dict(frames).as_traceback() if frames else None
        except Exception as e:  # the exception class may not exist here
            exc = RemoteError(f"task raised an exception that cannot be unpickled here ({e}):\n"
                              f"{traceback}")
        if isinstance(exc, BaseException):
            if traceback:
                exc.__cause__ = RemoteTraceback(traceback)
            return exc.with_traceback(tb)
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

    # _lazy: the chunk a streaming map's future waits for, until it is sent (streaming.py)
    __slots__ = ("key", "client", "_state", "_held", "_lazy", "__weakref__")
    _lazy: Any

    def __init__(self, key: str, client: "Client | None" = None, _new: bool = True) -> None:
        if client is None:
            client = default_client()
        self.key = key
        self.client = client
        self._state = client._acquire(key, inform=_new)
        self._held = True

    def __del__(self) -> None:
        try:
            if self._held:
                self.client._release(self.key, self._state)
        except Exception:
            pass

    # -- concurrent.futures API ------------------------------------------------------
    def result(self, timeout: float | str | None = None) -> Any:
        """The task's value, waiting for it.

        Args:
            timeout: seconds or a string ("2 s"); None waits for ever.

        Returns:
            The value (an awaitable of it on an asynchronous client's own loop).

        Raises:
            the task's own exception (with its remote frames), FutureCancelledError,
            KilledWorker, LostError, or TimedOutError after ``timeout``.
        """
        if self.client.asynchronous and _in_loop(self.client):
            return self._result_async()
        return self.client._gather_sync([self], timeout=parse_timeout(timeout))[0]

    async def _result_async(self) -> Any:
        return (await self.client._gather_async([self]))[0]

    def exception(self, timeout: float | str | None = None) -> BaseException | None:
        """The task's exception once it is done (None if it succeeded).

        Args:
            timeout: seconds or a string ("2 s"); None waits for ever.

        Returns:
            The exception, or None.

        Raises:
            FutureCancelledError: the future was cancelled.
            TimedOutError: not done within ``timeout``.
        """
        self.client._wait_states([self._state], parse_timeout(timeout))
        if self._state.status == "cancelled":
            raise FutureCancelledError(f"{self.key} was cancelled")
        return self._state.error

    def traceback(self, timeout: float | str | None = None) -> types.TracebackType | None:
        """The remote traceback of a failed task, as a traceback object.

        Args:
            timeout: seconds or a string ("2 s"); None waits for ever.

        Returns:
            For ``traceback.format_tb(future.traceback())``; None if it did not fail.

        Raises:
            TimedOutError: not done within ``timeout``.
        """
        self.client._wait_states([self._state], parse_timeout(timeout))
        return self._state.tb

    def done(self) -> bool:
        """True once the task finished, failed or was cancelled (it does not wait).

        Returns:
            Whether a result, an error or a cancellation has arrived.
        """
        return self._state.done()

    def cancel(self) -> bool:
        """Cancel the task if it has not finished; True if the future is now cancelled."""
        status = self._state.status
        if status in ("finished", "error", "lost"):
            return False
        if status == "pending":
            self.client.cancel([self])
        return True

    def cancelled(self) -> bool:
        """True once the future is cancelled (as in concurrent.futures).

        Returns:
            Whether ``cancel()`` (or the cluster) cancelled it.
        """
        return self._state.status == "cancelled"

    def release(self) -> None:
        """Drop this future's hold on its result now, rather than when it is collected."""
        if self._held:
            self._held = False
            self.client._release(self.key, self._state)

    def retry(self) -> None:
        """Run a failed task again (and the failed tasks it depends on)."""
        self.client.retry([self])

    def add_done_callback(self, fn: Callable[["Future"], Any]) -> None:
        """Call ``fn(future)`` once the future is done (at once if it already is).

        Args:
            fn: a callable taking the future; it runs on the thread that settles it.
        """
        cb = lambda: fn(self)  # noqa: E731 - keeps self alive until called
        if not self._state.add_callback(cb):
            cb()

    @property
    def status(self) -> str:
        return self._state.status

    @property
    def type(self) -> type | None:
        """The class of the result, once finished (None before, or if it cannot be
        imported here)."""
        st = self._state
        if st.value is not _NOTHING:
            return type(st.value)
        return resolve_type(st.type)

    def __await__(self) -> Any:
        return self.client._gather_async([self], single=True).__await__()

    def __repr__(self) -> str:
        st = self._state
        if st.status == "finished" and st.type:
            return f"<Future: status: {st.status}, type: {type_label(st.type)}, key: {self.key}>"
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


def describe_type(value: Any) -> str:
    """How a result's class travels: ``module:qualname`` (bare for builtins)."""
    cls = type(value)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}:{cls.__qualname__}"


def type_label(described: str) -> str:
    return described.rpartition(":")[2]


_types: dict[str, type | None] = {}


def resolve_type(described: str) -> type | None:
    """The class named by ``describe_type``, if it can be imported here."""
    if not described:
        return None
    try:
        return _types[described]
    except KeyError:
        pass
    module, _, qualname = described.rpartition(":")
    obj: Any = None
    try:
        obj = importlib.import_module(module) if module else builtins
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception:
        obj = None
    cls = obj if isinstance(obj, type) else None
    if len(_types) < 4096:
        _types[described] = cls
    return cls


def _rebuild_future(key: str) -> Future:
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


# -- futures nested in containers ---------------------------------------------------------
def flatten_futures(obj: Any) -> list[Future]:
    """Every Future inside nested lists, tuples, sets and dict values."""
    out: list[Future] = []
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, Future):
            out.append(x)
        elif isinstance(x, (list, tuple, set, frozenset)):
            stack.extend(reversed(list(x)))
        elif isinstance(x, dict):
            stack.extend(reversed(list(x.values())))
    return out


SKIP = object()     # a value that leaves its future out of its container


def rebuild(obj: Any, values: dict[str, Any]) -> Any:
    """``obj`` with each future replaced by its value; a value ``SKIP`` leaves the
    future out of its container (``gather(errors="skip")``)."""
    if isinstance(obj, Future):
        return values[obj.key]
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [v for v in (rebuild(x, values) for x in obj) if v is not SKIP]
        return items if type(obj) is list else type(obj)(items) if type(obj) in (
            tuple, set, frozenset) else type(obj)(*items) if hasattr(obj, "_fields") else items
    if isinstance(obj, dict):
        pairs = ((k, rebuild(v, values)) for k, v in obj.items())
        return type(obj)((k, v) for k, v in pairs if v is not SKIP)
    return obj


# -- waiting on several futures ---------------------------------------------------------
FIRST_COMPLETED = cf.FIRST_COMPLETED
FIRST_EXCEPTION = cf.FIRST_EXCEPTION
ALL_COMPLETED = cf.ALL_COMPLETED


def block_until(futures: list[Future], satisfied: Callable[[], bool],
                deadline: float | None) -> bool:
    """Wait until ``satisfied()`` or the deadline (monotonic); True if satisfied.

    Inside a task, futures queued on this worker run here first (help while
    waiting), and the task's slot is lent to another thread while it truly waits,
    so a wait never starves the children it waits on. Every callback it adds is
    removed before it returns.
    """
    if satisfied():
        return True
    here = current_client.get()
    clients = {id(f.client): f.client for f in futures}
    for c in clients.values():
        c._wake()
    if here is not None and here._worker_side:
        while here._help([f for f in futures if f.client is here], satisfied):
            if satisfied():
                return True
    cond = threading.Condition()

    def poke() -> None:
        with cond:
            cond.notify_all()
    watched = [f._state for f in futures if f._state.add_callback(poke)]
    try:
        with here._lend() if here is not None else contextlib.nullcontext():
            with cond:
                while not satisfied():
                    if deadline is None:
                        cond.wait()
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    cond.wait(remaining)
        return True
    finally:
        for st in watched:
            st.remove_callback(poke)


def _wait_in_order(futures: list[Future], deadline: float | None) -> None:
    """Wait for a streaming map's futures in turn (a user's client, not a task's): each
    is met after the map's sender sent it, instead of this thread sending every chunk
    to watch them all at once."""
    for c in {id(f.client): f.client for f in futures}.values():
        c._wake()
    for f in futures:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return
        if not f._state.wait(remaining):
            return


class DoneAndNotDone(tuple):
    @property
    def done(self) -> set:
        return self[0]

    @property
    def not_done(self) -> set:
        return self[1]


def _futures_arg(fs: Any, what: str) -> list[Future]:
    if isinstance(fs, Future):
        return [fs]
    if isinstance(fs, dict):
        fs = fs.values()
    try:
        out = list(fs)
    except TypeError:
        raise CallerError(f"{what} takes a list of futures, got {type(fs).__name__} "
                          f"{fs!r:.60}") from None
    for f in out:
        if not isinstance(f, Future):
            raise CallerError(f"{what} takes futures, got {type(f).__name__} {f!r:.60}")
    return out


def wait(fs: Iterable[Future] | Future, timeout: float | str | None = None,
         return_when: str = ALL_COMPLETED) -> DoneAndNotDone:
    """Block until futures complete, as ``concurrent.futures.wait`` does.

    Args:
        fs: a future or a list (any iterable) of futures.
        timeout: seconds or a string ("2 s"); None waits for ever.
        return_when: ALL_COMPLETED, FIRST_COMPLETED or FIRST_EXCEPTION.

    Returns:
        ``(done, not_done)``, two sets, also as ``.done`` and ``.not_done``.

    Raises:
        TimeoutError: with ALL_COMPLETED, when futures are still pending at the timeout.
        CallerError: wrong arguments (e.g. ``wait(f1, f2)`` instead of ``wait([f1, f2])``).
    """
    if isinstance(timeout, Future) or isinstance(return_when, Future):
        raise CallerError("wait() takes the futures as one list: wait([f1, f2]), "
                          "not wait(f1, f2)")
    futures = _futures_arg(fs, "wait()")
    timeout = parse_timeout(timeout)
    if return_when not in (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION):
        raise CallerError(f"unknown return_when {return_when!r} (use ALL_COMPLETED, "
                          "FIRST_COMPLETED or FIRST_EXCEPTION)")

    def satisfied() -> bool:
        if return_when == ALL_COMPLETED:
            return all(f.done() for f in futures)
        if return_when == FIRST_COMPLETED:
            return not futures or any(f.done() for f in futures)
        return all(f.done() for f in futures) or any(f.status == "error" for f in futures)

    deadline = None if timeout is None else time.monotonic() + timeout
    if return_when == ALL_COMPLETED and any(getattr(f, "_lazy", None) is not None
                                            for f in futures):
        _wait_in_order(futures, deadline)
    block_until(futures, satisfied, deadline)
    done = {f for f in futures if f.done()}
    if return_when == ALL_COMPLETED and timeout is not None and len(done) < len(set(futures)):
        raise TimedOutError(f"{len(set(futures)) - len(done)} of {len(set(futures))} futures "
                           f"not done after {timeout} s")
    return DoneAndNotDone((done, set(futures) - done))


class as_completed:
    """Iterate over futures as they complete; ``add()`` more while iterating.

    Args:
        futures: the futures to watch (more may be added).
        with_results: yield ``(future, result)`` pairs.
        raise_errors: with results, re-raise a task's exception (else yield it).
        timeout: seconds (or a string) for the whole iteration; then TimeoutError.
    """

    def __init__(self, futures: Iterable[Future] = (), with_results: bool = False,
                 raise_errors: bool = True, timeout: float | str | None = None) -> None:
        self.with_results = with_results
        self.raise_errors = raise_errors
        timeout = parse_timeout(timeout)
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._timeout = timeout
        self._lock = threading.Lock()
        self._done: deque[Future] = deque()
        self._pending: dict[int, tuple[Future, Callable[[], None]]] = {}
        self._tokens = itertools.count()
        self.update(futures)

    def add(self, future: Future) -> None:
        """Watch one more future.

        Args:
            future: a Future.
        """
        if not isinstance(future, Future):
            raise CallerError(f"as_completed takes futures, got {type(future).__name__}")
        token = next(self._tokens)
        ref = weakref.ref(self)

        def done() -> None:            # holds the iterator weakly: dropping it is enough
            me = ref()
            if me is not None:
                me._settled(token)
        with self._lock:
            self._pending[token] = (future, done)
        if not future._state.add_callback(done):
            done()

    def update(self, futures: Iterable[Future]) -> None:
        """Watch more futures.

        Args:
            futures: an iterable of futures.

        Raises:
            CallerError: something in it is not a Future.
        """
        for f in _futures_arg(futures, "as_completed"):
            self.add(f)

    def _settled(self, token: int) -> None:
        with self._lock:
            entry = self._pending.pop(token, None)
            if entry is not None:
                self._done.append(entry[0])

    def count(self) -> int:
        """Futures not yielded yet."""
        with self._lock:
            return len(self._pending) + len(self._done)

    def is_empty(self) -> bool:
        """True once every watched future has been yielded.

        Returns:
            Whether nothing is left.
        """
        return self.count() == 0

    def has_ready(self) -> bool:
        """True if a done future is waiting to be taken (it does not wait).

        Returns:
            Whether ``next()`` would return at once.
        """
        with self._lock:
            return bool(self._done)

    def __iter__(self) -> Iterator[Any]:
        return self

    def _next_done(self, take_all: bool) -> list[Future]:
        with self._lock:
            if not self._done and not self._pending:
                raise StopIteration
            pending = [f for f, _ in self._pending.values()]
        if not block_until(pending, lambda: bool(self._done), self._deadline):
            raise TimedOutError(f"{self.count()} futures not done after {self._timeout} s")
        with self._lock:
            if take_all:
                out = list(self._done)
                self._done.clear()
                return out
            return [self._done.popleft()]

    def _result(self, future: Future) -> Any:
        if not self.with_results:
            return future
        try:
            return future, future.result()
        except BaseException as exc:
            if self.raise_errors:
                raise
            return future, exc

    def __next__(self) -> Any:
        return self._result(self._next_done(False)[0])

    def next_batch(self, block: bool = True) -> list[Any]:
        """Everything done now.

        Args:
            block: wait for at least one if none is done yet.

        Returns:
            A list of futures (or of ``(future, result)`` with ``with_results``).
        """
        if not block and not self.has_ready():
            return []
        try:
            return [self._result(f) for f in self._next_done(True)]
        except StopIteration:
            return []

    def batches(self) -> Iterator[list[Any]]:
        """Yield lists of every future done so far, waiting for at least one each time."""
        while True:
            try:
                batch = self._next_done(True)
            except StopIteration:
                return
            yield [self._result(f) for f in batch]

    def clear(self) -> None:
        """Stop watching: forget every future not yielded yet."""
        with self._lock:
            entries = list(self._pending.values())
            self._pending.clear()
            self._done.clear()
        for f, cb in entries:
            f._state.remove_callback(cb)

    def __del__(self) -> None:
        try:
            for f, cb in list(self._pending.values()):
                f._state.remove_callback(cb)
        except Exception:
            pass


def fire_and_forget(futures: Any) -> None:
    """Run these tasks to completion even after every Future on them is dropped.

    Args:
        futures: a future, or lists, tuples, sets and dicts of them, nested.
    """
    fs = flatten_futures(futures)
    by_client: dict[int, tuple[Any, list[str]]] = {}
    for f in fs:
        by_client.setdefault(id(f.client), (f.client, []))[1].append(f.key)
    for client, keys in by_client.values():
        client._fire_and_forget(keys)
