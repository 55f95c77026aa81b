"""A client outlives its scheduler's restarts: it keeps its futures and comes back.

    connection lost ──> "reconnecting": submits are kept, nothing is sent
        ──connect again (same client id) every RETRY s──> submit what is still pending,
          ``holding`` every key held, requests in flight again ──> "running"
        ──reconnect_timeout without a scheduler──> every pending future fails with
          SchedulerLostError, saying how long it waited

Results that workers push straight to the client keep coming meanwhile. A
component of Client: it acts on the client's records.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from ..errors import SchedulerLostError
from ..protocol import messages as m
from .streaming import full_recipe

if TYPE_CHECKING:
    from ..protocol.comm import Comm
    from .client import Client

log = logging.getLogger("tasknest.client")

RETRY = 0.1                                 # seconds between attempts to reconnect
RESENT = frozenset({"scatter", "scatter-plan", "query"})   # asked again after a reconnect


class Reconnection:
    """A client's way back to its scheduler; it keeps the attempt under way."""

    def __init__(self, client: "Client") -> None:
        self.client = client
        self.attempt: asyncio.Task | None = None   # (a reference keeps the task alive)

    def lost(self, comm: "Comm") -> None:
        """The connection to the scheduler closed."""
        c = self.client
        if c.status != "running" or comm is not c._comm:
            return
        if c.reconnect_timeout <= 0:
            c.status = "closed"
            self._give_up(comm.close_reason, 0.0)
            return
        c.status = "reconnecting"
        log.warning("lost the connection to the scheduler at %s (%s): reconnecting for up "
                    "to %g s", c.scheduler_address, comm.close_reason,
                    c.reconnect_timeout)
        self.attempt = asyncio.ensure_future(self._reconnect(comm.close_reason))

    async def _reconnect(self, reason: str) -> None:
        c = self.client
        start = time.monotonic()
        deadline = start + c.reconnect_timeout
        error: Any = reason
        while c.status == "reconnecting":
            try:
                await asyncio.wait_for(c._open(), max(0.1, deadline - time.monotonic()))
            except Exception as exc:      # refused, reset, or no welcome in time
                error = exc
                if time.monotonic() + RETRY < deadline:
                    await asyncio.sleep(RETRY)
                    continue
                if c.status == "reconnecting":
                    c.status = "closed"
                    self._give_up(f"{reason}; last attempt: {error}",
                                  time.monotonic() - start)
                return
            comm = c._comm
            if c.status != "reconnecting":    # closed meanwhile
                if comm is not None:
                    comm.close("client closed")
                return
            if comm is None or comm.closed:      # lost again at once: try again
                continue
            self._reassert()
            log.warning("reconnected to the scheduler at %s after %.2f s",
                        c.scheduler_address, time.monotonic() - start)
            return

    def _reassert(self) -> None:
        """Back: say again what the scheduler may have missed, and go on."""
        c = self.client
        comm = c._comm
        assert comm is not None
        # One step under the lock, up to "running": a thread that submits meanwhile
        # (a map's sender) either is in this picture, sent again here, or sends after it
        # itself; none falls between a picture without it and a status that drops its send.
        with c._lock:
            held = list(c._states)
            pending = [(k, st.recipe) for k, st in c._states.items()
                       if not st.done() and st.recipe is not None]
            c._placing.placed.clear()        # (the places' confirms went with the old scheduler)
            requests = list(c._requests.items())
            sent: dict = {}          # map -> its items sent again so far
            for key, recipe in pending:     # the scheduler may never have read them
                comm.send(m.Submit(key, *full_recipe(recipe, sent)))
            comm.send(m.Holding(held))
            for rid, msg in requests:
                if msg.op in RESENT:
                    comm.send(msg)
            c.status = "running"
        for rid, msg in requests:
            if msg.op not in RESENT:
                c._requests.pop(rid, None)
                fut = c._replies.pop(rid, None)
                if fut is not None and not fut.done():
                    fut.set_exception(SchedulerLostError(
                        f"the scheduler at {c.scheduler_address} restarted while a "
                        f"{msg.op!r} request was on its way: it may or may not have been "
                        "carried out"))

    def _give_up(self, reason: str, waited: float) -> None:
        c = self.client
        c._fail_pending(SchedulerLostError(
            f"lost the connection to the scheduler at {c.scheduler_address} ({reason}) "
            f"and it did not come back within {waited:.1f} s (reconnect_timeout="
            f"{c.reconnect_timeout:g} s)"))
