"""The task thread pool: ``nthreads`` slots, threads that secede, block and rejoin.

A thread holds a slot while it does useful work. Threads are only added when a
slot is free *and* work is ready, so the thread count stays at
``nthreads + (threads blocked waiting on work elsewhere)``:

* ``block()`` / ``unblock()``: a task waiting in gather() on something it cannot
  run itself hands its slot to another thread and takes one back (possibly
  over-subscribing for a moment) when it resumes.
* ``secede()`` / ``rejoin()``: the explicit API of the seeds: the thread leaves
  the pool for good, or waits for a free slot to come back.
* ``lend(ident)``: the worker's watchdog lends the slot of a thread that sits in
  ``worker_client()`` without progress while work waits (it blocks on something
  tasknest cannot see: a ``threading.Event``, a queue). The thread takes a slot
  back when it next blocks, unblocks or finishes its task (``reclaim()``).

A thread's mode: ``slot`` (holds one), ``blocked`` (lent it while it waits),
``lent`` (the watchdog lent it), ``seceded`` (left the pool).

All methods except ``start``/``close`` are called with ``lock`` held.
"""
from __future__ import annotations

import inspect
import logging
import os
import sys
import threading
import time
from typing import Any, Callable

log = logging.getLogger("tasknest.worker")

IDLE_TIMEOUT = 10.0


class Pool:
    def __init__(self, nthreads: int, lock: threading.Lock, has_ready: Callable[[], bool],
                 run_one: Callable[[], bool], on_idle: Callable[[], None],
                 name: str = "tasknest-task",
                 before_wait: Callable[[], None] = lambda: None,
                 spin_for: Callable[[], float] = lambda: 0.0,
                 work_hint: Callable[[], bool] = lambda: False,
                 on_starved: Callable[[], None] = lambda: None) -> None:
        self.nthreads = nthreads
        self.lock = lock
        self.cond = threading.Condition(lock)          # parked threads
        self.rejoin_cond = threading.Condition(lock)   # threads waiting in rejoin()
        self.rejoining = 0
        self.has_ready = has_ready
        self.run_one = run_one            # pops and runs one task; called WITH the lock held
        self.on_idle = on_idle            # lock held; the thread flushes its messages next
        self.before_wait = before_wait    # a thread is about to wait: flush its messages
        self.spin_for = spin_for          # lock held: seconds to wait awake before parking
        self.work_hint = work_hint        # no lock: work may be ready (checked under it next)
        self.on_starved = on_starved      # lock held: work is ready, every slot is taken
        self.name = name
        self.active = 0                    # threads holding a slot
        self.waiting = 0                   # idle threads parked on cond
        self.handoffs = 0                  # wake-ups granted with a slot already counted
        self.threads = 0
        self.closed = False
        self.modes: dict[int, str] = {}   # pool thread ident -> its mode (see above)
        self._n = 0

    # -- slots ------------------------------------------------------------------------
    def notify(self) -> None:
        """Work may be ready: fill free slots with parked or new threads."""
        while self.active < self.nthreads and not self.closed and self.has_ready():
            self.active += 1
            if self.waiting > self.handoffs:
                self.handoffs += 1
                self.cond.notify()
            else:
                self._spawn()
        if self.active >= self.nthreads and not self.closed and self.has_ready():
            self.on_starved()

    def _release_slot(self) -> None:
        self.active -= 1
        if self.rejoining:
            self.rejoin_cond.notify()

    def _spawn(self) -> None:
        self.threads += 1
        self._n += 1
        t = threading.Thread(target=self._loop, name=f"{self.name}-{self._n}", daemon=True)
        t.start()

    def _loop(self) -> None:
        ident = threading.get_ident()
        modes = self.modes
        with self.lock:
            modes[ident] = "slot"
            try:
                while not self.closed:
                    if self.active <= self.nthreads and self.run_one():
                        mode = modes[ident]
                        if mode == "seceded":
                            return            # a seceded task ended: this thread leaves
                        if mode != "slot":
                            self.reclaim()
                        continue
                    # nothing to run (or over-subscribed): give the slot back and park
                    if self.active <= self.nthreads and self._spin():
                        continue
                    self._release_slot()
                    if self.active < self.nthreads:
                        self.on_idle()
                    self.waiting += 1
                    self.before_wait()
                    try:
                        while not self.handoffs and not self.closed:
                            if not self.cond.wait(IDLE_TIMEOUT) and not self.handoffs:
                                return
                    finally:
                        self.waiting -= 1
                    if self.closed:
                        return
                    self.handoffs -= 1
            finally:
                self.threads -= 1
                del modes[ident]

    def _spin(self) -> bool:
        """Lock held. Wait awake a moment, keeping the slot, when work is about to come
        (a client placing tasks one after another): no wake-up when it comes. The
        thread yields its core, the lock and the GIL between looks. True if work came."""
        duration = self.spin_for()
        if duration <= 0:
            return False
        self.before_wait()
        self.lock.release()
        try:
            end = time.perf_counter() + duration
            while not self.work_hint() and not self.closed and time.perf_counter() < end:
                os.sched_yield()
        finally:
            self.lock.acquire()
        return not self.closed and self.has_ready()

    # -- tasks that wait -------------------------------------------------------------------
    def block(self) -> None:
        """The calling task waits on work it cannot do itself: lend its slot."""
        ident = threading.get_ident()
        mode = self.modes.get(ident)
        if mode == "lent":
            self.modes[ident] = "blocked"     # (the watchdog lent it already)
        if mode != "slot":
            return
        self.modes[ident] = "blocked"
        self._release_slot()
        self.notify()
        if self.active < self.nthreads:
            self.on_idle()

    def unblock(self) -> None:
        self.reclaim()

    def reclaim(self) -> None:
        """Take back a slot lent while this thread waited (possibly over-subscribing
        for a moment: the pool parks a thread at its next turn)."""
        ident = threading.get_ident()
        if self.modes.get(ident) in ("blocked", "lent"):
            self.modes[ident] = "slot"
            self.active += 1

    def lend(self, ident: int) -> bool:
        """The watchdog: lend the slot of a thread that waits where we cannot see."""
        if self.modes.get(ident) != "slot":
            return False
        self.modes[ident] = "lent"
        self._release_slot()
        self.notify()
        return True

    def holders(self) -> list[int]:
        """Threads holding a slot."""
        return [ident for ident, mode in self.modes.items() if mode == "slot"]

    def secede(self) -> bool:
        """Leave the pool; False if this is not a pool thread holding a slot."""
        ident = threading.get_ident()
        mode = self.modes.get(ident)
        if mode not in ("slot", "lent"):
            return False
        self.modes[ident] = "seceded"
        if mode == "slot":
            self._release_slot()
            self.notify()
        return True

    def rejoin(self) -> bool:
        """Wait for a free slot and take it; False if this thread had not seceded."""
        ident = threading.get_ident()
        if self.modes.get(ident) != "seceded":
            return False
        self.rejoining += 1
        if self.active >= self.nthreads:
            self.before_wait()
        try:
            while self.active >= self.nthreads and not self.closed:
                self.rejoin_cond.wait()
        finally:
            self.rejoining -= 1
        self.modes[ident] = "slot"
        self.active += 1
        return True

    def in_pool_thread(self) -> bool:
        return threading.get_ident() in self.modes

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.cond.notify_all()
            self.rejoin_cond.notify_all()


_async_funcs: dict[Any, bool] = {}


def is_async(func: Any) -> bool:
    """inspect.iscoroutinefunction, remembered per function (it is slow-ish)."""
    try:
        return _async_funcs[func]
    except (KeyError, TypeError):
        pass
    result = inspect.iscoroutinefunction(func)
    try:
        if len(_async_funcs) > 4096:
            _async_funcs.clear()
        _async_funcs[func] = result
    except TypeError:      # an unhashable callable
        pass
    return result


def configure_process() -> None:
    """Room for deep inline nesting in task threads."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
    try:
        threading.stack_size(64 * 1024 * 1024)
    except (ValueError, RuntimeError):
        pass
