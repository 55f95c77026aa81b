"""Lend the slot of a task that waits where tasknest cannot see.

    pool.notify ──work ready, no free slot──> starved() ──arms──> loop timer
    loop timer ──check()──> CPU time of each slot holder inside worker_client()
               ──no CPU used since the last look──> pool.lend(thread)

A task inside ``worker_client()`` has told the scheduler it no longer counts
against its worker's threads, yet its thread keeps its slot while it does useful
work (running its children inline). tasknest's own waits lend the slot; a wait
on a ``threading.Event`` set by a done-callback, a ``queue.Queue`` or a lock does
not pass through tasknest. So while work is queued and every slot is taken, the
watchdog looks at the holders every ``PERIOD``: one inside ``worker_client()``
whose thread used (almost) no CPU between two looks is waiting, and its slot goes
to another thread; one that computes keeps it. It takes one back when it next blocks, unblocks or ends
its task. Threads stay bounded by the pool size plus the tasks that wait.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import TaskContext
    from .pool import Pool

PERIOD = 0.01             # seconds between two looks at the slot holders
IDLE_CPU = 0.1            # ... and the share of it a waiting thread may have used


def _cpu_time(ident: int) -> float | None:
    """CPU seconds a thread has used (None where the platform cannot say)."""
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    except (AttributeError, OSError):
        return None


class Watchdog:
    def __init__(self, pool: "Pool", lock: threading.Lock,
                 contexts: "dict[int, TaskContext]") -> None:
        self.pool = pool
        self.lock = lock
        self.contexts = contexts          # pool thread ident -> its innermost task
        self.loop: Any = None
        self.loop_thread: int | None = None
        self.armed = False
        self.lent = 0                     # slots lent so far (for tests and metrics)
        self._seen: dict[int, float] = {}     # suspect -> its CPU time at the last look

    def start(self, loop: Any, loop_thread: int) -> None:
        self.loop, self.loop_thread = loop, loop_thread

    def starved(self) -> None:
        """Lock held: work is ready and every slot is taken."""
        if self.armed or self.loop is None or not self._suspects():
            return
        self.armed = True
        if threading.get_ident() == self.loop_thread:
            self.loop.call_later(PERIOD, self.check)
        else:
            self.loop.call_soon_threadsafe(self.loop.call_later, PERIOD, self.check)

    def _suspects(self) -> list[int]:
        """Slot holders inside ``worker_client()`` (this runs on every task a busy
        worker queues: most often no task at all is inside one). (A copy of the
        contexts, taken in one step: task threads change them without the lock.)"""
        seceded = [ident for ident, ctx in list(self.contexts.items()) if ctx.seceded]
        if not seceded:
            return seceded
        holders = self.pool.holders()
        return [ident for ident in seceded if ident in holders]

    def check(self) -> None:
        """Loop thread: lend the slots of suspects that made no progress."""
        with self.lock:
            pool = self.pool
            suspects = self._suspects() if not pool.closed and pool.has_ready() \
                and pool.active >= pool.nthreads else []
            if not suspects:
                self.armed = False
                self._seen.clear()
                return
            seen, self._seen = self._seen, {}
            for ident in suspects:
                cpu = _cpu_time(ident)
                if cpu is None:
                    continue
                last = seen.get(ident)
                if last is not None and cpu - last < IDLE_CPU * PERIOD:
                    if pool.lend(ident):
                        self.lent += 1
                else:
                    self._seen[ident] = cpu
            still = bool(self._seen) or (pool.has_ready() and pool.active >= pool.nthreads
                                         and bool(self._suspects()))
            if not still:
                self.armed = False
                return
        self.loop.call_later(PERIOD, self.check)
