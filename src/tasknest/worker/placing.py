"""Placed tasks, the worker's side: a client sent a task straight here.

    client ──place──> worker: runs it at once, tells the client the result
    scheduler ──confirm (attempt n: count it; -1: drop it)──> worker: sends the held
        report numbered n, or drops the copy
    scheduler ──withdraw / client-gone──> worker: places that never came are void

Places and confirms are matched by (client, seq), whichever arrives first. Until
its confirm, a place is listed on the record (``placers``): the copy stays, and a
``free`` on its way is about an older life of the key. A copy the scheduler has
not counted (``attempt`` UNCOUNTED) holds its report. A component of WorkerState:
it owns the places and early confirms, and uses the state's transitions.
"""
from __future__ import annotations

from operator import attrgetter
from typing import TYPE_CHECKING

from ..protocol import messages as m
from .actions import Action, Send, Tell, reaping
from .records import UNCOUNTED, WTask, heap_priority

if TYPE_CHECKING:
    from .state import WorkerState

event = reaping(attrgetter("state"))


class Placing:
    def __init__(self, state: "WorkerState") -> None:
        self.state = state
        self.places: dict[tuple[str, int], str] = {}   # (client, seq) -> key: awaiting confirm
        self.early: dict[tuple[str, int], tuple[str, int]] = {}   # confirms before their place

    @event
    def place(self, key: str, func: bytes, args: bytes, priority: list, retries: int,
              client: str, seq: int) -> list[Action]:
        """A client placed a dependency-free task straight here (see ``confirm``)."""
        out: list[Action] = []
        pk = (client, seq)
        early = self.early.pop(pk, None)
        if early is not None and early[1] < 0:
            return out                 # the scheduler has it run elsewhere, and tells them
        t = self.state.tasks.get(key)
        if t is not None and t.state in ("remote", "fetching"):    # computed elsewhere
            if early is None:
                self.places[pk] = key
            else:
                self._counted_here(key, early[1], out)
            return out
        if t is None:
            t = self.state.tasks[key] = WTask(key, "new")
            t.recipe, t.priority = (func, args, retries), heap_priority(priority, key)
            t.attempt = UNCOUNTED             # a copy the scheduler has not counted (yet)
            t.owned = True
            self.state._resolve_deps(t, {}, out)
        elif t.state == "cancelled":   # freed while it ran, and wanted again: that run counts
            t.state = "executing"
            t.attempt = UNCOUNTED
            t.owned = True
        elif t.state == "memory":
            out.append(Tell(client, m.KeyMemory(key, t.type, t.nbytes, [self.state.address],
                                                   None)))
        elif t.unconfirmed:            # a pure claim here awaiting its word: the client's
            t.unconfirmed = False      # copy runs at once, as any placed copy does
            if t.state == "confirming":
                self.state._make_ready(t, out)
        if t.state in ("ready", "waiting", "executing") and client not in t.notify:
            t.notify = [*t.notify, client]
        if early is None:
            self.places[pk] = key
            t.placers += (pk,)
        else:
            self._counted_here(key, early[1], out)
        return out

    # -- the scheduler's messages (WorkerState.handle reaps before these) --------------
    def _on_confirm(self, msg: m.Confirm) -> list[Action]:
        """The scheduler's answer to a client's ``placed``: the copy here is the task, as
        compute ``attempt`` (report it so), or, if negative, it is not (the task lives
        elsewhere, or nowhere): a copy nobody counts then goes."""
        out: list[Action] = []
        key, attempt = msg.key, msg.attempt
        pk = (msg.client, msg.seq)
        if self.places.pop(pk, None) is None:     # the place is still on its way
            self.early[pk] = (key, attempt)
            return out
        t = self.state.tasks.get(key)
        if t is not None and pk in t.placers:
            t.placers = tuple(p for p in t.placers if p != pk)
        if attempt >= 0:
            self._counted_here(key, attempt, out)
        elif t is not None and not t.placers and t.attempt == UNCOUNTED:
            self._drop_placed(t, out)
        return out

    def _counted_here(self, key: str, attempt: int, out: list[Action]) -> None:
        """The scheduler counts a run of ``key`` here as compute ``attempt``."""
        t = self.state.tasks.get(key)
        if t is None or t.state in ("remote", "fetching"):
            # but none runs here (a copy of its value at most): run it elsewhere
            out.append(Send(m.NotHere(key, attempt)))
        else:
            self.state._adopt(t, attempt, out)

    def _drop_placed(self, t: WTask, out: list[Action]) -> None:
        """A placed copy nobody counts: forget it (a run ends first)."""
        t.held = None
        t.owned = False
        if t.state == "executing":
            t.state = "cancelled"
        elif t.state in ("ready", "waiting"):
            t.state = "remote"
            self.state._release_inputs(t, out)
            self.state._maybe_drop(t, out)
        elif t.state == "memory":
            self.state._maybe_drop(t, out)

    def _on_withdraw(self, msg: m.Withdraw) -> list[Action]:
        """The client's connection here broke: its places up to seq ``upto`` that have
        not arrived never will, so the confirms kept for them are void (the scheduler
        sent their tasks by ``compute`` since)."""
        client, upto = msg.client, msg.upto
        for pk in [pk for pk in self.early if pk[0] == client and pk[1] <= upto]:
            del self.early[pk]
        return []

    def _on_client_gone(self, msg: m.ClientGone) -> list[Action]:
        """A client left: its places the scheduler never heard of will never be confirmed."""
        out: list[Action] = []
        client = msg.client
        for pk in [pk for pk in self.places if pk[0] == client]:
            t = self.state.tasks.get(self.places.pop(pk))
            if t is not None and pk in t.placers:
                t.placers = tuple(p for p in t.placers if p != pk)
                if not t.placers and t.attempt == UNCOUNTED:
                    self._drop_placed(t, out)
        for pk in [pk for pk in self.early if pk[0] == client]:
            key, attempt = self.early.pop(pk)
            if attempt >= 0:        # counted here, but it never came (a record of the key
                out.append(Send(m.NotHere(key, attempt)))   # is another run's)
        return out

    def early_run(self, key: str) -> tuple[str, int] | None:
        """A place of ``key`` confirmed as a compute, that has not arrived: the
        scheduler's next word on the key is about that run, not a record here."""
        if self.early:
            for pk, (k, attempt) in self.early.items():
                if k == key and attempt >= 0:
                    return pk
        return None

    def clear(self) -> None:
        """A restarted scheduler: places and confirms of the old one are void."""
        self.places.clear()
        self.early.clear()
