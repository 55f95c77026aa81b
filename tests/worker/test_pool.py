"""The worker's thread pool on its own: slots, parking, and waiting awake for work."""
from __future__ import annotations

import collections
import threading

import pytest

from tasknest.worker.pool import Pool

from conftest import wait_until


class Jobs:
    """A queue of jobs the pool runs; each records the thread that ran it."""

    def __init__(self, spin: float = 0.0) -> None:
        self.lock = threading.Lock()
        self.queue: collections.deque = collections.deque()
        self.ran: list[tuple[str, int]] = []
        self.pool = Pool(1, self.lock, lambda: bool(self.queue), self._run_one, lambda: None,
                         name="test-pool", spin_for=lambda: spin,
                         work_hint=lambda: bool(self.queue))

    def _run_one(self) -> bool:          # lock held, as in the worker
        if not self.queue:
            return False
        name = self.queue.popleft()
        self.lock.release()
        try:
            self.ran.append((name, threading.get_ident()))
        finally:
            self.lock.acquire()
        return True

    def add(self, name: str, notify: bool = True) -> None:
        with self.lock:
            self.queue.append(name)
            if notify:
                self.pool.notify()


@pytest.mark.timeout(30)
def test_a_thread_out_of_work_waits_awake_for_more_then_parks():
    jobs = Jobs(spin=5.0)
    try:
        jobs.add("first")
        wait_until(lambda: jobs.ran, 10, message="the first job ran")
        # no notify: only a thread still awake and holding its slot can take it
        jobs.add("second", notify=False)
        wait_until(lambda: len(jobs.ran) == 2, 10, message="the awake thread took it")
        assert jobs.ran[0][1] == jobs.ran[1][1] and jobs.pool.threads == 1
    finally:
        jobs.pool.close()
    wait_until(lambda: jobs.pool.threads == 0, 10, message="closing ends the waiting thread")


@pytest.mark.timeout(30)
def test_without_spinning_a_thread_out_of_work_parks_and_a_notify_wakes_it():
    jobs = Jobs(spin=0.0)
    try:
        jobs.add("first")
        wait_until(lambda: jobs.pool.waiting, 10, message="the thread parks")
        assert jobs.pool.active == 0
        jobs.add("second")
        wait_until(lambda: len(jobs.ran) == 2, 10, message="the parked thread took it")
        assert jobs.pool.threads == 1
    finally:
        jobs.pool.close()
