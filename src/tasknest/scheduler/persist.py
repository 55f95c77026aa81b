"""The scheduler's state dir, the shell's side: journal what it is told, come back.

    start ──lock DIR──> replay journal ──> Intents ──rebuild──> SchedulerState (all released)
          ──> workers register + resume (facts) ──all back, or recovery_wait──> settle
    message ──record (intents only)──> state.handle ──> comms ──before a frame leaves──> commit

Messages other than ``resume`` that arrive while recovering are held and
handled, in order, once recovery settles: nothing is assigned before every
worker that is coming back has said what it runs. Records are committed with
one write per loop tick, and always before any frame leaves the scheduler, so
what anyone heard of is in the journal.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from .intents import EPOCH_SHIFT, Intents, Recorder, rebuild
from .journal import Journal

if TYPE_CHECKING:
    from ..protocol import messages as m
    from .recovery import Recovery
    from .server import Scheduler

log = logging.getLogger("tasknest.scheduler")


class Persistence:
    def __init__(self, server: "Scheduler", recovery: "Recovery", path: str,
                 fsync: bool = False, recovery_wait: float = 10.0) -> None:
        self.server = server
        self.recovery = recovery
        self.journal = Journal(os.path.abspath(path), fsync)
        # (the recorder writes into the journal's list of this tick's intents)
        self.recorder = Recorder(self.journal.pending, self._commit_later)
        self.recorders = self.recorder.ops      # op -> its recorder (on every message's path)
        self.recovery_wait = recovery_wait
        self.epoch = 0
        self.expected: set[str] = set()        # addresses of workers the journal knew
        self.held: list[tuple[str, "m.Message"]] | None = None   # while recovering
        self.started_at = 0.0
        self.recovered_at = 0.0
        self._commit_soon = False
        self._timer: asyncio.TimerHandle | None = None

    # -- start -----------------------------------------------------------------------------
    def open(self) -> None:
        """Take the state dir (or raise StateDirInUse) and rebuild the intents."""
        t0 = time.perf_counter()
        self.journal.lock(f"a scheduler starting (pid {os.getpid()})")
        records = self.journal.read()
        intents = Intents().replay(records)
        self.epoch = intents.epoch + 1
        state = self.server.state
        made = rebuild(state, intents)
        state._attempts = self.epoch << EPOCH_SHIFT
        self.expected = set(intents.workers.values())
        self.recovery.clients_due = {h for h in intents.wants if h[:2] == "c-"}
        self.recorder.append(["E", self.epoch])
        self.journal.commit()
        log.info("state dir %s: %d records, %d live tasks, %d workers expected, read in "
                 "%.3f s (epoch %d)", self.journal.path, len(records), made,
                 len(self.expected), time.perf_counter() - t0, self.epoch)

    def listening(self, address: str) -> None:
        self.journal.set_holder(f"the scheduler at {address} (pid {os.getpid()})")
        self.started_at = time.monotonic()
        if self.expected or self.server.state.tasks:
            self.recovery.pending = True
            self.held = []
            if not self.expected:
                self.settle()
            else:
                self._timer = asyncio.get_running_loop().call_later(self.recovery_wait,
                                                                    self.settle)

    def settle(self) -> None:
        """Recovery ends: run what is wanted and nowhere, then what was held."""
        if self.held is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        if self.expected:
            log.warning("recovery: %d workers did not come back within %s s: their tasks "
                        "run again elsewhere", len(self.expected), self.recovery_wait)
        held, self.held = self.held, None
        self.expected.clear()
        self.recovered_at = time.monotonic()
        server = self.server
        server._do(self.recovery.settle())
        for source, msg in held:
            if source in server.comms:
                self.record(source, msg)
                server._do(server.state.handle(source, msg))
        if self.recovery.clients_due:   # the clients that may want what workers held
            asyncio.get_running_loop().call_later(
                self.recovery_wait, lambda: server._do(self.recovery.release_orphans()))
        else:
            server._do(self.recovery.release_orphans())
        server._check()
        log.info("recovered in %.3f s", self.recovered_at - self.started_at)
        if self.journal.wants_compaction():
            asyncio.get_running_loop().call_soon(self.compact)

    # -- connections ---------------------------------------------------------------------------
    def connected(self, comm: Any) -> None:
        comm.before_write = self.commit

    def worker_joined(self, wid: str, address: str) -> None:
        self.recorder.joined(wid, address)

    def resumed(self, wid: str) -> None:
        """A worker said where it stands. Recovery waits for this, not for its
        registration: the resume may arrive in a later read than the registration, and
        settling in between would run again what that worker runs or holds."""
        ws = self.server.state.workers.get(wid)
        if self.held is not None and ws is not None and ws.address in self.expected:
            self.expected.discard(ws.address)
            if not self.expected:
                asyncio.get_running_loop().call_soon(self.settle)

    def gone(self, holder: str) -> None:
        self.recorder.gone(holder)

    # -- messages --------------------------------------------------------------------------------
    def hold(self, source: str, msg: "m.Message") -> bool:
        """While recovering, keep a message for later (True)."""
        if self.held is None or msg.op == "resume":
            return False
        self.held.append((source, msg))
        return True

    def record(self, source: str, msg: "m.Message") -> None:
        handler = self.recorders.get(msg.op)
        if handler is not None:
            handler(source, msg, self.server.state)

    def _commit_later(self) -> None:
        """Commit this tick's intents at the end of the tick (if no frame left first)."""
        if not self._commit_soon:
            self._commit_soon = True
            try:
                asyncio.get_running_loop().call_soon(self.commit)
            except RuntimeError:       # (no loop yet: open() commits itself)
                self._commit_soon = False

    def commit(self) -> None:
        self._commit_soon = False
        journal = self.journal
        if journal.pending:
            self.recorder.committing(self.server.state)
            journal.commit()
            if journal.wants_compaction() and self.held is None:
                asyncio.get_running_loop().call_soon(self.compact)

    def compact(self) -> None:
        # Never while recovering: the state does not yet hold what the journal says
        # (wants of workers not back yet, tasks not re-confirmed), and a snapshot of it
        # would drop those intents for good. settle() compacts if it is due.
        if self.held is not None:
            return
        t0 = time.perf_counter()
        self.recorder.committing(self.server.state)
        self.journal.commit()
        records = self.recorder.snapshot(self.server.state, self.epoch)
        self.journal.compact(records)
        log.info("journal compacted to %d records in %.3f s", len(records),
                 time.perf_counter() - t0)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.journal.close()
