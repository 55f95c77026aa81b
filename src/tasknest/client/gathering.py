"""Gathering, for Client: wait for futures and bring their values here.

    gather(futures) ──wait (a task's client helps or lends its slot)──> finished states
                    ──inline values, else get-data straight from a worker that holds it
                    ──a holder gone: missing-data + want ──> the scheduler recomputes it

A synchronous client waits on its futures' states from the calling thread; an
asynchronous one awaits them on its loop. A streaming map's futures are waited for
in order, so its sender keeps its backpressure.

Each is a function of a typed ``self: Client``, bound as a method in Client's body
(``gather = gathering.gather``); WorkerClient overrides the hooks around a wait.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from ..errors import CallerError, CommClosedError, FutureCancelledError, RemoteError, TimedOutError
from ..protocol import messages as m
from ..registry import current_client
from ..timeouts import parse_timeout
from .future import SKIP as _SKIP, Future, FutureState, flatten_futures
from .future import rebuild as _rebuild
from .streaming import SENT_POLL, StreamedFuture, send_chunk

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger("tasknest.client")

def gather(self: "Client", futures: Any, errors: str = "raise",
           timeout: float | str | None = None, direct: bool | None = None,
           asynchronous: bool | None = None) -> Any:
    """Wait for futures and return their results, in the same nested shape.

    Args:
        futures: a future, or lists, tuples, sets and dicts of them, nested.
        errors: "raise" the first failure, or "skip" failed futures (left out).
        timeout: seconds or a string ("2 s").
        direct, asynchronous: accepted for dask compatibility (results come
            straight from the workers when they can).

    Returns:
        The results, in the shape of ``futures``.

    Raises:
        the task's exception, FutureCancelledError, TimedOutError.
    """
    self._check()
    timeout = parse_timeout(timeout)
    if errors not in ("raise", "skip"):
        raise CallerError(f"errors must be 'raise' or 'skip', got {errors!r}")
    flat = flatten_futures(futures)
    self._check_own(flat, "gather()")
    if self.asynchronous and self._in_own_loop():
        async def _g() -> Any:
            vals = await self._gather_async(flat, errors=errors)
            return _rebuild(futures, self._by_key(flat, vals, errors))
        return _g()
    vals = self._gather_sync(flat, timeout=timeout, errors=errors)
    return _rebuild(futures, self._by_key(flat, vals, errors))


def by_key(flat: list[Future], vals: list, errors: str) -> dict[str, Any]:
    if errors == "skip":
        return {f.key: v if f._state.status == "finished" else _SKIP
                for f, v in zip(flat, vals)}
    return dict(zip([f.key for f in flat], vals))


def wait_states(self: "Client", states: list[FutureState], timeout: float | None) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    if any(st.status == "pending" for st in states):
        self._wake()
    for st in states:
        if st.status != "pending":
            continue
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not st.wait(remaining):
            raise TimedOutError(f"results not ready after {timeout} s")


def wait_in_order(self: "Client", futures: list[Future], timeout: float | None) -> None:
    """Wait for each future in turn, so that a streaming map's futures are reached
    after the sender sent them (asking for them all at once would send every chunk
    from this thread, past the sender's backpressure)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    woken = False
    for f in futures:
        st = f._state
        if st.status != "pending":
            continue
        if not woken:
            self._wake()
            woken = True
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not st.wait(remaining):
            raise TimedOutError(f"results not ready after {timeout} s")


def gather_sync(self: "Client", futures: list[Future], timeout: float | None = None,
                 errors: str = "raise") -> list:
    if self.status == "new":     # an async client used before it was awaited
        self._check()
    if len(futures) > 1 and any(type(f) is StreamedFuture for f in futures):
        self._wait_in_order(futures, timeout)
    states = [f._state for f in futures]
    if len(futures) == 1 and futures[0].key in self._placing.placed:
        self._placing.spin(states[0])
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:     # (a value lost on its way is computed again, then fetched anew)
        self._wait_states(states, None if deadline is None else
                          max(0.0, deadline - time.monotonic()))
        self._raise_errors(futures, errors)
        missing = [(f.key, f._state) for f in futures
                   if f._state.status == "finished" and not f._state.has_value()]
        if not missing:
            break
        self._fetch_sync(missing)
    return self._values(states)


def values(self: "Client", states: list[FutureState]) -> list:
    """Futures inside the values bind to this client (it received them), not to
    whichever client this process made last."""
    token = current_client.set(self)
    try:
        return [st.get_value() if st.status == "finished" else None for st in states]
    finally:
        current_client.reset(token)


def check_own(self: "Client", futures: list[Future], what: str) -> None:
    """A future of another cluster names a key this scheduler does not know."""
    for f in futures:
        chunk = f._lazy if type(f) is StreamedFuture else None
        if chunk is not None and not chunk.sent and f.client is self:
            continue    # ours and not cancelled (cancel sends it): no need to send it now
        if f._state.status == "cancelled":
            raise FutureCancelledError(f"{what} got the cancelled future {f.key!r}")
        other = f.client
        if other is self:
            continue
        theirs = getattr(other, "scheduler_address", None)
        if theirs != self.scheduler_address:
            raise CallerError(
                f"{what} got future {f.key!r} of the cluster at {theirs}, but this client "
                f"is connected to {self.scheduler_address}: gather it with its own client "
                "and pass the value instead")
        if other.status == "closed" and not f.done():
            raise CallerError(f"{what} got future {f.key!r} of a closed client")


def raise_errors(self: "Client", futures: list[Future], errors: str) -> None:
    if errors == "raise":
        for f in futures:
            st = f._state
            if st.status in ("error", "cancelled", "lost"):
                if st.error is None:
                    raise RemoteError(f"{f.key} failed")
                raise st.error.with_traceback(st.tb)    # (its remote frames, afresh)


def fetch_sync(self: "Client", missing: list[tuple[str, FutureState]]) -> None:
    self._run(self._fetch(missing))


async def fetch(self: "Client", missing: list[tuple[str, FutureState]]) -> None:
    """Get values straight from workers that hold them; re-ask the scheduler if gone."""
    by_addr: dict[str, list[tuple[str, FutureState]]] = {}
    lost = []
    for key, st in missing:
        if st.who_has:
            by_addr.setdefault(st.who_has[0], []).append((key, st))
        else:
            lost.append(key)
    peers = self._peers
    assert peers is not None            # (a result came: connected)
    for addr, items in by_addr.items():
        try:
            values = await peers.get_data(addr, [k for k, _ in items])
        except (CommClosedError, OSError) as exc:
            log.info("could not fetch from %s: %s", addr, exc)
            values = {}
        for key, st in items:
            frames = values.get(key)
            if frames is not None:
                st.frames = frames
            else:
                # (the scheduler may not know yet that the worker died: without this
                # it would name the same worker again)
                comm = self._comm        # (the one now, after the await)
                assert comm is not None
                comm.send(m.MissingData(key, addr))
                lost.append(key)
                st.reset()
    if lost:
        comm = self._comm                # (the one now, after the awaits)
        assert comm is not None
        comm.send(m.Want(lost))


async def gather_async(self: "Client", futures: list[Future], errors: str = "raise",
                        single: bool = False) -> Any:
    for f in futures:
        chunk = f._lazy if type(f) is StreamedFuture else None
        while chunk is not None and not chunk.sent:
            # a streaming map's future: its sender gets to it (this loop must not
            # send every chunk itself, its connection's writes wait on it)
            sender = self._sender
            if sender is None or sender.thread is None:
                send_chunk(chunk)        # (nobody else will)
                break
            await asyncio.sleep(SENT_POLL)
    states = [f._state for f in futures]
    while True:     # (a value lost on its way is computed again, then fetched anew)
        await self._aio_wait(states)
        self._raise_errors(futures, errors)
        missing = [(f.key, f._state) for f in futures
                   if f._state.status == "finished" and not f._state.has_value()]
        if not missing:
            break
        if self._in_own_loop():
            await self._fetch(missing)
        else:
            assert self.loop is not None        # (set when the client started)
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
                self._fetch(missing), self.loop))
    vals = self._values(states)
    return vals[0] if single else vals


async def aio_wait(self: "Client", states: list[FutureState]) -> None:
    loop = asyncio.get_running_loop()
    for st in states:
        if st.done():
            continue
        fut = loop.create_future()

        def wake(fut: asyncio.Future = fut) -> None:
            def set_() -> None:
                if not fut.done():
                    fut.set_result(None)
            loop.call_soon_threadsafe(set_)
        if st.add_callback(wake):
            await fut
