"""A client outlives its scheduler's restarts: it keeps its futures and comes back.

    connection lost ──> "reconnecting": submits are kept, nothing is sent
        ──connect again (same client id) every RETRY s──> submit what is still pending,
          ``holding`` every key held, requests in flight again ──> "running"
        ──reconnect_timeout without a scheduler──> every pending future fails with
          SchedulerLostError, saying how long it waited

Results that workers push straight to the client keep coming meanwhile. Mixed
into Client, whose records it shares.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from ..errors import SchedulerLostError
from ..protocol import messages as m

if TYPE_CHECKING:
    from ..client.future import FutureState
    from ..protocol.comm import Comm

log = logging.getLogger("tasknest.client")

RETRY = 0.1                                 # seconds between attempts to reconnect
RESENT = frozenset({"scatter", "scatter-plan", "query"})   # asked again after a reconnect


class ReconnectMixin:
    if TYPE_CHECKING:
        status: str
        scheduler_address: str
        reconnect_timeout: float
        _comm: Comm | None
        _lock: Any
        _states: dict[str, FutureState]
        _submits: dict[str, tuple]
        _placed: dict[str, m.Placed]
        _requests: dict[int, m.Message]
        _replies: dict[int, asyncio.Future]

        async def _open(self) -> None: ...
        def _fail_pending(self, error: BaseException) -> None: ...

    def _scheduler_lost(self, comm: "Comm") -> None:
        if self.status != "running" or comm is not self._comm:
            return
        if self.reconnect_timeout <= 0:
            self.status = "closed"
            self._give_up(comm.close_reason, 0.0)
            return
        self.status = "reconnecting"
        log.warning("lost the connection to the scheduler at %s (%s): reconnecting for up "
                    "to %g s", self.scheduler_address, comm.close_reason,
                    self.reconnect_timeout)
        asyncio.ensure_future(self._reconnect(comm.close_reason))

    async def _reconnect(self, reason: str) -> None:
        start = time.monotonic()
        deadline = start + self.reconnect_timeout
        error: Any = reason
        while self.status == "reconnecting":
            try:
                await asyncio.wait_for(self._open(), max(0.1, deadline - time.monotonic()))
            except Exception as exc:      # refused, reset, or no welcome in time
                error = exc
                if time.monotonic() + RETRY < deadline:
                    await asyncio.sleep(RETRY)
                    continue
                if self.status == "reconnecting":
                    self.status = "closed"
                    self._give_up(f"{reason}; last attempt: {error}",
                                  time.monotonic() - start)
                return
            comm = self._comm
            if self.status != "reconnecting":    # closed meanwhile
                if comm is not None:
                    comm.close("client closed")
                return
            if comm is None or comm.closed:      # lost again at once: try again
                continue
            self._reassert()
            log.warning("reconnected to the scheduler at %s after %.2f s",
                        self.scheduler_address, time.monotonic() - start)
            return

    def _reassert(self) -> None:
        """Back: say again what the scheduler may have missed, and go on."""
        comm = self._comm
        assert comm is not None
        # One step under the lock, up to "running": a thread that submits meanwhile
        # (a map's sender) either is in this picture, sent again here, or sends after it
        # itself; none falls between a picture without it and a status that drops its send.
        with self._lock:
            held = list(self._states)
            pending = [(k, self._submits[k]) for k, st in self._states.items()
                       if not st.done() and k in self._submits]
            self._placed.clear()        # (the places' confirms went with the old scheduler)
            requests = list(self._requests.items())
            for key, recipe in pending:     # the scheduler may never have read them
                comm.send(m.Submit(key, *recipe))
            comm.send(m.Holding(held))
            for rid, msg in requests:
                if msg.op in RESENT:
                    comm.send(msg)
            self.status = "running"
        for rid, msg in requests:
            if msg.op not in RESENT:
                self._requests.pop(rid, None)
                fut = self._replies.pop(rid, None)
                if fut is not None and not fut.done():
                    fut.set_exception(SchedulerLostError(
                        f"the scheduler at {self.scheduler_address} restarted while a "
                        f"{msg.op!r} request was on its way: it may or may not have been "
                        "carried out"))

    def _give_up(self, reason: str, waited: float) -> None:
        self._fail_pending(SchedulerLostError(
            f"lost the connection to the scheduler at {self.scheduler_address} ({reason}) "
            f"and it did not come back within {waited:.1f} s (reconnect_timeout="
            f"{self.reconnect_timeout:g} s)"))
