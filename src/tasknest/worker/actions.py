"""What the worker's state machine asks its shell to do: small slotted records.

Every event of ``WorkerState`` (and of its ``Placing`` component) returns a list of
these, in order; ``Worker.apply`` carries them out under the worker's lock.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import wraps
from typing import Any, Callable, TypeVar, Union

from ..protocol import messages as m


@dataclass(slots=True)
class Send:
    """A message for the scheduler."""
    msg: m.Message


@dataclass(slots=True)
class Tell:
    """A message for a client connected to this worker (a result, straight)."""
    client: str
    msg: m.Message


@dataclass(slots=True)
class Fetch:
    """Fetch a dependency from one of these peers."""
    key: str
    addrs: list[str]


@dataclass(slots=True)
class Ready:
    """Tasks became ready: wake the pool."""


@dataclass(slots=True)
class Done:
    """The key reached memory or erred here: settle local futures on it."""
    key: str


@dataclass(slots=True)
class Drop:
    """Forget the key's value."""
    key: str


READY = Ready()
Action = Union[Send, Tell, Fetch, Ready, Done, Drop]

F = TypeVar("F", bound=Callable[..., list])


def reaping(core: Callable[[Any], Any] | None = None) -> Callable[[F], F]:
    """A decorator for the events of the state machine that ``core(owner)`` gives
    (None: the owner itself, without a call: every task passes here several times).

    An erred record stays until the shell has settled local futures from it, which
    it does after the event that erred it; so the next event, whichever it is,
    first forgets such records. This and ``WorkerState.handle`` (the scheduler's
    messages: a step less on the hottest path) are the places that happens."""
    def event(method: F) -> F:
        if core is None:
            @wraps(method)
            def run(owner: Any, *args: Any, **kwargs: Any) -> list:
                if owner._erred:
                    out = owner.reap()
                    out += method(owner, *args, **kwargs)
                    return out
                return method(owner, *args, **kwargs)
            return run  # type: ignore[return-value]

        @wraps(method)
        def run_on(owner: Any, *args: Any, **kwargs: Any) -> list:
            st = core(owner)
            if st._erred:
                out = st.reap()
                out += method(owner, *args, **kwargs)
                return out
            return method(owner, *args, **kwargs)
        return run_on  # type: ignore[return-value]
    return event
