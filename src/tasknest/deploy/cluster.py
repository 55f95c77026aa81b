"""The interface every cluster shares (LocalCluster, SSHCluster, SLURMCluster).

    cluster.scale(n) ──up──> _launch(names)            (processes, SSH sessions, jobs)
                     ──down─> least useful workers ──retire (graceful)──> _reap(names)
    cluster.adapt(minimum=, maximum=) ──> deploy/adaptive.py calls scale() from demand

A subclass starts the scheduler (``scheduler_address``, ``token``) and knows how
to launch and stop named workers; scale-down always goes through graceful
retirement, so a worker leaves only once what it alone holds is elsewhere.
"""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from ..errors import CallerError

RETIRE_TIMEOUT = 60.0


class Cluster:
    """Base class: ``scale``, ``adapt``, ``close``, a context manager, ``logs``."""

    scheduler_address: str = ""
    token: str | None = None
    security: Any = None
    threads_per_worker: int = 1
    workers_per_unit = 1       # workers started together (a batch job may run several)
    name_prefix = "worker"

    def __init__(self) -> None:
        self.status = "starting"
        self._lock = threading.RLock()
        self._serial = 0
        self._launched: list[str] = []     # worker names asked for, in order (not yet reaped)
        self._client_obj: Any = None
        self.adaptive: Any = None
        self.retire_timeout = RETIRE_TIMEOUT

    # -- what a subclass provides -----------------------------------------------------------
    def _launch(self, names: list[str]) -> None:
        raise NotImplementedError

    def _reap(self, names: list[str]) -> None:
        """Make sure these workers are gone (they were retired, or never started)."""
        raise NotImplementedError

    def _pending(self) -> list[str]:
        """Launched workers that have not started yet (queued jobs): scaled down first."""
        return []

    def logs(self) -> dict[str, str]:
        """The output of the scheduler and of each worker, by name."""
        return {}

    # -- scaling ---------------------------------------------------------------------------
    def _new_names(self, n: int) -> list[str]:
        names = []
        for _ in range(n):
            names.append(f"{self.name_prefix}-{self._serial}")
            self._serial += 1
        return names

    @property
    def plan(self) -> list[str]:
        """The units (workers, or jobs of ``workers_per_unit`` workers) asked for and
        not retired: running or on their way."""
        return list(self._launched)

    @property
    def threads_per_unit(self) -> int:
        return self.threads_per_worker * self.workers_per_unit

    def _worker_names(self, unit: str) -> list[str]:
        if self.workers_per_unit == 1:
            return [unit]
        return [f"{unit}.{i}" for i in range(self.workers_per_unit)]

    def scale(self, n: int) -> None:
        """Have ``n`` workers: start more, or retire the least useful ones gracefully
        (a batch cluster rounds up to whole jobs).

        Args:
            n: the number of workers wanted.

        Raises:
            CallerError: ``n`` is not a non-negative integer.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise CallerError(f"scale() takes a non-negative number of workers, got {n!r}")
        if self.adaptive is not None:
            self.adaptive.stop()            # an explicit scale ends adaptive scaling
            self.adaptive = None
        self._scale_units(-(-n // self.workers_per_unit))

    def _scale_units(self, n: int) -> None:
        with self._lock:
            self._check_open()
            have = len(self._launched)
            if n > have:
                names = self._new_names(n - have)
                self._launched.extend(names)
                self._launch(names)
                return
            if n < have:
                self._scale_down(have - n)

    def _scale_down(self, k: int) -> None:
        pending = [w for w in self._pending() if w in self._launched][-k:]
        if pending:
            for w in pending:
                self._launched.remove(w)
            self._reap(pending)
            k -= len(pending)
        if k <= 0:
            return
        chosen = self.least_useful(k)
        for w in chosen:
            self._launched.remove(w)
        if chosen:
            self.retire(chosen)

    def least_useful(self, k: int) -> list[str]:
        """The k workers the cluster misses least: fewest tasks to do, then fewest bytes
        of results held (those are copied away on retirement), then the newest.

        Args:
            k: how many to name.

        Returns:
            The names of those units.
        """
        rows: dict[str, dict] = {}
        for w in self._query("demand")["workers"]:      # summed over each unit's workers
            row = rows.setdefault(w["name"].split(".")[0], {"processing": 0, "nbytes": 0,
                                                            "retiring": False})
            row["processing"] += w["processing"]
            row["nbytes"] += w["nbytes"]
            row["retiring"] = row["retiring"] or w["retiring"]
        order = {name: i for i, name in enumerate(self._launched)}
        cands = [n for n in self._launched if n not in rows or not rows[n]["retiring"]]
        cands.sort(key=lambda n: (n in rows, rows[n]["processing"] if n in rows else 0,
                                  rows[n]["nbytes"] if n in rows else 0, -order[n]))
        return cands[:k]

    def retire(self, names: list[str], timeout: float | None = None) -> list[str]:
        """Retire these units' workers gracefully, then make sure they are gone.

        Args:
            names: the units (workers, or jobs of a batch cluster) to retire.
            timeout: seconds their running tasks get (the cluster's default if None).

        Returns:
            The addresses of the workers that left.
        """
        timeout = self.retire_timeout if timeout is None else timeout
        done: list[str] = []
        try:
            workers = [w for n in names for w in self._worker_names(n)]
            done = self._client().retire_workers(workers, timeout=timeout)
        finally:
            self._reap(names)
        return done

    def adapt(self, minimum: int = 0, maximum: int = 10, **options: Any) -> Any:
        """Scale with demand between ``minimum`` and ``maximum`` workers (see
        deploy/adaptive.py for ``interval``, ``cooldown``, ``step``, ``wait_count``).

        Args:
            minimum: the fewest workers kept.
            maximum: the most workers started.
            options: the policy's settings (``interval``, ``cooldown``, ``step``,
                ``wait_count``).

        Returns:
            The Adaptive object (its ``stop()`` ends adaptive scaling).
        """
        from .adaptive import Adaptive
        if self.adaptive is not None:
            self.adaptive.stop()
        self.adaptive = Adaptive(self, minimum=minimum, maximum=maximum, **options)
        self.adaptive.start()
        return self.adaptive

    # -- the cluster's own client ----------------------------------------------------------------
    def _client(self) -> Any:
        if self._client_obj is None or self._client_obj.status == "closed":
            from ..client.client import Client
            self._client_obj = Client(self.scheduler_address, token=self.token,
                                      security=self.security, name="cluster",
                                      set_as_default=False)
        return self._client_obj

    def _query(self, what: str) -> Any:
        c = self._client()
        return c._request(_query_msg(what), c.timeout)

    def wait_for_workers(self, n: int, timeout: float = 60.0) -> None:
        """Block until ``n`` workers have joined.

        Args:
            n: the number of workers to wait for.
            timeout: seconds to wait.

        Raises:
            TimedOutError: fewer had joined by then.
        """
        self._client().wait_for_workers(n, timeout=timeout)

    # -- closing ---------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.status == "closed":
            raise CallerError(f"{type(self).__name__} is closed")

    def _close_common(self) -> None:
        if self.adaptive is not None:
            self.adaptive.stop()
            self.adaptive = None
        if self._client_obj is not None:
            try:
                self._client_obj.close()
            except Exception:
                pass
            self._client_obj = None

    def close(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.scheduler_address} "
                f"workers={len(self._launched)} status={self.status}>")


def _query_msg(what: str) -> Any:
    from ..protocol import messages as m
    return m.Query(0, what, None)


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(delay)
        delay = min(0.2, delay * 1.5)
