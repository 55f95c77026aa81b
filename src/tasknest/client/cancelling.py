"""Cancelling and retrying, for Client: its say over tasks already submitted.

    cancel(futures) ──detach the keys here, settle the futures as cancelled──> cancel ──> scheduler
    retry(futures)  ──failed futures back to pending──> retry ──> scheduler (reruns them)
    fire_and_forget ──the scheduler keeps the tasks wanted without this client

Each is a function of a typed ``self: Client``, bound as a method in Client's body.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import FutureCancelledError
from ..protocol import messages as m
from .future import flatten_futures

if TYPE_CHECKING:
    from .client import Client

def cancel(self: "Client", futures: Any, force: bool = False) -> None:
    """Cancel these futures: when this returns, each is ``cancelled()``.

    A pending task is stopped (and those that depend on it); a finished one is
    released. Using a cancelled future afterwards raises FutureCancelledError.

    Args:
        futures: a future, or lists, tuples, sets and dicts of them, nested.
        force: accepted for dask compatibility (cancelling is always forced).

    Raises:
        ClosedClientError: the client is closed.
    """
    self._check()
    fs = flatten_futures(futures)
    for f in fs:
        f._state    # (a map's future not sent yet is sent first, not under our lock)
    keys = []
    with self._lock:
        for f in fs:
            st = f._state
            if self._states.get(f.key) is st:     # detach: the key may live again
                del self._states[f.key]
                self._placing.placed.pop(f.key, None)
                keys.append(f.key)
    for f in fs:
        if f._state.status != "cancelled":
            f._state.cancel(FutureCancelledError(f"{f.key} was cancelled"))
    if keys:
        self._send(m.Cancel(keys))


def retry(self: "Client", futures: Any) -> None:
    """Run failed tasks again (and the failed tasks they depend on).

    Args:
        futures: a future, or lists, tuples, sets and dicts of them, nested.

    Raises:
        ClosedClientError: the client is closed.
    """
    self._check()
    # (not a map's task whose arguments could not be pickled: it never left)
    fs = [f for f in flatten_futures(futures) if f._state.status == "error"
          and self._states.get(f.key) is f._state]
    for f in fs:
        f._state.reset()
    if fs:
        self._send(m.Retry([f.key for f in fs]))


def fire_and_forget(self: "Client", keys: list[str]) -> None:
    self._check()
    self._send(m.FireAndForget(keys))
