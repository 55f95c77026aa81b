"""Adaptive scaling: size a cluster by its demand, without flapping.

Every ``interval`` seconds the scheduler's demand is read: tasks that are queued
or running on workers (those that tasks launched included; a parent blocked on
its children does not count) plus tasks waiting for any worker at all. The
target is that many threads' worth of workers (or batch jobs), between ``minimum`` and
``maximum``, moving at most ``step`` workers at a time.

* Up at once when demand exceeds the plan (work is waiting), then not again
  until ``cooldown`` has passed, so the new workers can take their share first.
* Down only after ``wait_count`` consecutive looks all said "fewer" and
  ``cooldown`` after the last change: a burst followed by a short lull keeps its
  workers. The least useful workers go first, through graceful retirement.

``decide`` is pure (the numbers in, the new size out); the thread only reads
demand and calls ``cluster.scale``. ``events`` records every change.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from ..errors import CallerError

log = logging.getLogger("tasknest.adaptive")


class Adaptive:
    def __init__(self, cluster: Any, minimum: int = 0, maximum: int = 10,
                 interval: float = 1.0, cooldown: float = 5.0, step: int = 0,
                 wait_count: int = 3) -> None:
        for name, v in (("minimum", minimum), ("maximum", maximum), ("step", step),
                        ("wait_count", wait_count)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise CallerError(f"adapt(): {name} must be a non-negative integer, got {v!r}")
        if maximum < minimum:
            raise CallerError(f"adapt(): maximum ({maximum}) is below minimum ({minimum})")
        if interval <= 0 or cooldown < 0:
            raise CallerError("adapt(): interval must be positive and cooldown non-negative")
        self.cluster = cluster
        self.minimum, self.maximum = minimum, maximum
        self.interval, self.cooldown = interval, cooldown
        self.step = step or max(1, maximum)     # 0: as far as needed at once
        self.wait_count = max(1, wait_count)
        self.events: list[tuple[float, int, int]] = []   # (when, from, to)
        self.error: BaseException | None = None
        self._below = 0
        self._last_change = -math.inf
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the policy (pure) -----------------------------------------------------------------
    def target(self, tasks: int, threads_per_worker: int) -> int:
        want = math.ceil(tasks / max(1, threads_per_worker))
        return max(self.minimum, min(self.maximum, want))

    def decide(self, current: int, tasks: int, threads_per_worker: int, now: float) -> int:
        """The size to scale to now (``current`` if no change)."""
        goal = self.target(tasks, threads_per_worker)
        if current < self.minimum or current > self.maximum:
            goal = max(self.minimum, min(self.maximum, current))
            self._below = 0
            return goal
        if goal > current:
            self._below = 0
            if now - self._last_change < self.cooldown and self.events \
                    and self.events[-1][2] > self.events[-1][1]:
                return current       # the last scale-up has not had its effect yet
            return min(goal, current + self.step)
        if goal < current:
            self._below += 1
            if self._below < self.wait_count or now - self._last_change < self.cooldown:
                return current
            self._below = 0
            return max(goal, current - self.step)
        self._below = 0
        return current

    # -- the thread -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tasknest-adaptive",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.adapt_once()
            except Exception as exc:     # the cluster may be closing: say so, keep trying
                if self._stop.is_set():
                    return
                self.error = exc
                log.warning("adaptive scaling: %s", exc)
            self._stop.wait(self.interval)

    def adapt_once(self) -> None:
        cluster = self.cluster
        demand = cluster._query("demand")
        current = len(cluster.plan)
        new = self.decide(current, demand["tasks"], cluster.threads_per_unit,
                          time.monotonic())
        if new != current and not self._stop.is_set():
            log.info("adaptive: %d -> %d workers (%d tasks)", current, new, demand["tasks"])
            self.events.append((time.time(), current, new))
            self._last_change = time.monotonic()
            cluster._scale_units(new)
            self._last_change = time.monotonic()

    def __repr__(self) -> str:
        return f"<Adaptive minimum={self.minimum} maximum={self.maximum}>"
