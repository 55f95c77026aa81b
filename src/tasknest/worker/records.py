"""The worker's record of a key (plain data, no behaviour), and its ready-queue order."""
from __future__ import annotations

from typing import Literal, Sequence

from ..memory import EMPTY
from ..protocol import messages as m

# waiting -> ready -> executing -> memory | erred; remote: computed elsewhere; fetching: a
# copy on its way; confirming: a pure claim waiting for the scheduler's word; cancelled:
# freed while it ran; new: only within the event that makes the record
WState = Literal["new", "waiting", "ready", "executing", "memory", "erred", "remote",
                 "fetching", "confirming", "cancelled"]
CLAIMED = 0          # attempt of a task claimed here (not a compute of the scheduler's)
UNCOUNTED = -1       # attempt of a copy the scheduler does not count (yet): its report waits


class WTask:
    # (a worker keeps one per held result, half a million of them at times: 8 B a slot)
    __slots__ = ("key", "recipe", "deps", "priority", "state", "waiting_on", "dependents",
                 "owned", "who_has", "nbytes", "error", "notify", "attempt", "placers",
                 "held", "type", "unconfirmed", "awaited")

    def __init__(self, key: str, state: WState) -> None:
        self.key = key
        self.state: WState = state
        # (pickled function, pickled arguments, retries left) until it has run
        self.recipe: tuple[bytes, bytes, int] | None = None
        # (a record may live long, holding a result: what it no longer needs, and the
        # empty sequences most records keep, are the shared ``()`` rather than a list each)
        self.deps: Sequence[str] = ()
        self.priority: tuple = ()
        self.waiting_on: set[str] = EMPTY    # (shared until it has some: see memory.py)
        self.dependents: set[str] = EMPTY
        self.owned = False            # the scheduler counts this worker as holding it
        self.who_has: Sequence[str] = ()
        self.nbytes = 0
        self.error: tuple[list, str, str] | None = None
        self.notify: Sequence[str] = ()   # clients to tell straight from here when it finishes
        self.attempt = CLAIMED        # the scheduler's compute this run answers
        self.placers: tuple = ()      # (client, seq) of places awaiting their confirm
        self.held: m.Message | None = None   # the report of an UNCOUNTED copy
        self.type = ""
        self.unconfirmed = False      # a pure claim the scheduler has not accepted yet
        self.awaited = 0              # local tasks waiting to run it once it is accepted

    def __repr__(self) -> str:
        return f"<WTask {self.key} {self.state}>"


def heap_priority(priority: list, key: str) -> tuple:
    """User priority first (higher first), then depth (deeper first), then FIFO; the
    key last. A record's priority is its entry in the ready heap as it is (one tuple
    a queued task, not two)."""
    if len(priority) == 3:
        return (-priority[0], -priority[1], priority[2], key)
    user, depth, seq = (list(priority) + [0, 0, 0])[:3]
    return (-user, -depth, seq, key)
