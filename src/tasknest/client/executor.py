"""A real ``concurrent.futures.Executor`` over a client: ``client.get_executor()``.

    submit ──client.submit──> tasknest Future ──result on the client's loop──> cf.Future

Its futures are ``concurrent.futures.Future`` objects, so ``concurrent.futures.wait``,
``as_completed`` and ``asyncio.wrap_future`` take them. Each call runs (``pure=False``
unless the submit options say otherwise). Inside a task the executor uses the
task's client, and its task leaves the worker's thread pool until ``shutdown``: a
wait in ``concurrent.futures.wait`` cannot lend the task's slot, and the children
may be queued on this very worker.
"""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import itertools
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from ..errors import CallerError, ClosedClientError

if TYPE_CHECKING:
    from .client import Client
    from .future import Future


class _ExecutorFuture(cf.Future):
    """A concurrent.futures.Future whose cancel() cancels the task too."""

    def __init__(self, future: "Future") -> None:
        super().__init__()
        self.tasknest_future: "Future | None" = future

    def cancel(self) -> bool:
        tf = self.tasknest_future
        if super().cancel():
            if tf is not None:
                tf.cancel()
            return True
        return False


def _run_chunk(fn: Callable, chunk: list) -> list:
    return [fn(*args) for args in chunk]


class ClientExecutor(cf.Executor):
    def __init__(self, client: "Client", leave: Callable[[], Any] | None = None,
                 back: Callable[[], Any] | None = None, **submit_options: Any) -> None:
        submit_options.setdefault("pure", False)
        self._client = client
        self._options = submit_options
        self._futures: set[_ExecutorFuture] = set()
        self._lock = threading.Lock()
        self._shutdown = False
        self._back = back            # (in a task: rejoin the pool at shutdown)
        if leave is not None:
            leave()

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> cf.Future:
        if self._shutdown:
            raise ClosedClientError("cannot submit to an executor that was shut down")
        future = self._client.submit(fn, *args, **self._options, **kwargs)
        out = _ExecutorFuture(future)
        with self._lock:
            self._futures.add(out)
        client = self._client
        assert client.loop is not None      # (its submit went through: it is started)
        inner = asyncio.run_coroutine_threadsafe(
            client._gather_async([future], single=True), client.loop)

        def copy(done: cf.Future) -> None:
            with self._lock:
                self._futures.discard(out)
            out.tasknest_future = None       # the result is here: let the task's go
            if out.cancelled():
                return
            exc = done.exception() if not done.cancelled() else cf.CancelledError()
            try:
                if exc is not None:
                    out.set_exception(exc)
                else:
                    out.set_result(done.result())
            except cf.InvalidStateError:      # cancelled meanwhile
                pass
        inner.add_done_callback(copy)
        return out

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None,
            chunksize: int = 1) -> Iterator:
        if chunksize < 1:
            raise CallerError("chunksize must be >= 1")   # as concurrent.futures says
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        items = iter(zip(*iterables))
        chunks = iter(lambda: list(itertools.islice(items, chunksize)), [])
        results = super().map(_run_chunk, itertools.repeat(fn), chunks, timeout=timeout)
        return itertools.chain.from_iterable(results)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True
        with self._lock:
            pending = list(self._futures)
        if cancel_futures:
            for f in pending:
                f.cancel()
        if wait:
            cf.wait(pending)
        back, self._back = self._back, None
        if back is not None:
            back()
