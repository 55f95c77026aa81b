"""The client that tasks use: it shares its worker's connection and queue.

    task thread ──submit──> worker queue (claim) ──batched claim──> scheduler
    task thread ──gather──> run queued children inline ──> wait (slot lent) ──> value

Entering it costs no connection: it is one object per worker, made at start.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..client.client import Client
from ..client.placing import Placing
from ..client.future import Future, FutureState, flatten_futures, rebuild
from ..errors import BlockingCallError, CallerError, TimedOutError
from ..names import content_key, funcname, hasher
from ..protocol import messages as m
from .context import current_task
from .records import UNCOUNTED

if TYPE_CHECKING:
    from .server import Worker

MAX_INLINE = 40          # nested inline runs per thread before waiting instead
CONFIRM_SPIN = 0.0005  # seconds a task waits awake for the scheduler to accept a claim
LINGER = 0.25            # seconds a pure call's result outlives its last future here


class WorkerClient(Client):
    _worker_side = True

    def __init__(self, worker: "Worker") -> None:   # no network of its own
        self.worker = worker
        self.id = "w-pending"
        self.asynchronous = False
        self.timeout = 30.0
        self.status = "new"
        self._lock = threading.RLock()
        self._states: dict[str, FutureState] = {}
        self._placing = Placing(self)    # (tasks submit through claims, never place)
        self._requests: dict = {}
        self._recipes: dict[str, tuple] = {}   # keys our futures wait on: how to claim them
        self._shared: set[str] = set()         # pure keys claimed here (see _release)
        self._lingering: collections.deque = collections.deque()   # (due, key, state)
        self._replies: dict[int, asyncio.Future] = {}
        self._rid = 0
        self._cluster = None
        self._owns_cluster = False
        self.loop = None
        self._loop_thread = None
        self.scheduler_address = worker.scheduler_address
        self.forward_output = False
        self._info: dict = {}

    def _bind(self) -> None:
        w = self.worker
        self.id = w.id
        self.loop = w.loop
        self._loop_thread = w.loop_thread
        self._peers = w.peers
        self.status = "running"

    @property
    def _comm(self) -> Any:  # type: ignore[override]
        return self.worker.comm

    def _send(self, msg: m.Message) -> None:
        self.worker.send(msg)

    def _wake(self) -> None:
        # a task about to wait on its children: its frames are written by the loop, so
        # that the thread gets on with running whatever it can meanwhile
        self.worker._wake(here=False)

    def _run(self, coro: Any, timeout: float | None = None) -> Any:
        if threading.get_ident() == self._loop_thread:
            raise BlockingCallError("blocking call on the worker's event loop: in an async "
                                    "task, await it instead")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore

    def close(self, timeout: float | None = None) -> None:
        """Inside a task this is a no-op: the worker owns this client."""
        return None

    def _await_running(self, timeout: float | None) -> None:
        """Wait (up to ``timeout``) for the worker to be connected to its scheduler."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while self.status != "running":
            if self.worker.closing:
                raise CallerError("the worker is closing")
            if deadline is not None and time.monotonic() >= deadline:
                raise TimedOutError(f"the worker was not connected to its scheduler within "
                                   f"{timeout} s")
            time.sleep(delay)      # (a rare path: the worker is reconnecting)
            delay = min(2 * delay, 0.05)

    def _depth(self) -> int:
        t = current_task.get()
        return 0 if t is None else t.depth + 1

    def _impure_key(self, func: Any, fbytes: bytes, abytes: bytes) -> str:
        """The n-th ``pure=False`` call of a task gets the same key each time the task
        runs (with the same function and arguments), so a task rerun after its worker
        died finds the children its first run launched instead of redoing them."""
        t = current_task.get()
        if t is None:
            return super()._impure_key(func, fbytes, abytes)
        t.impure += 1
        return content_key(funcname(func), hasher(
            f"{t.key}\0{t.attempt}\0{t.impure}\0".encode(), fbytes, abytes))

    # -- submitting: straight into this worker's queue ----------------------------------
    def _submit_key(self, key: str, fbytes: bytes, abytes: bytes, deps: list[str],
                    priority: list, retries: int, workers: list | None,
                    resources: dict | None = None, loose: bool = False,
                    fresh: bool = False, recipe: tuple | None = None) -> Future:
        """``fresh``: a ``pure=False`` key, which no other task can be claiming: it runs
        at once. Any other key may be claimed on another worker at the same moment, so
        it runs once the scheduler has said the claim is ours (one round trip later).
        (``recipe`` is the top-level client's: this one keeps its own, below.)"""
        fut, new = self._new_future(key)
        if not new:
            return fut
        w = self.worker
        w.monitor.spawned(key)
        if workers is not None or resources:   # the scheduler decides where it may run
            w.send(m.Submit(key, fbytes, abytes, deps, priority, retries, workers, resources,
                            loose))
            return fut
        with w.lock:
            self._recipes[key] = (fbytes, abytes, deps, priority, retries, not fresh)
            t = w.state.tasks.get(key)
            if t is not None and t.state not in ("erred", "cancelled") and t.attempt != UNCOUNTED:
                # here already: want it
                w.send(m.Want([key]))
                done = w.settle_from_state([key])
            else:       # (a copy a client placed here, uncounted yet, is claimed too)
                if not fresh:
                    self._shared.add(key)
                done = self._claim(key, fbytes, abytes, deps, priority, retries, not fresh)
                if t is not None:
                    done += w.settle_from_state([key])
        w.settle(done)
        return fut

    def _claim(self, key: str, fbytes: bytes, abytes: bytes, deps: list[str], priority: list,
               retries: int, confirm: bool) -> list:
        """Queue a task here and tell the scheduler (worker lock held)."""
        w = self.worker
        locations = {d: self._states[d].who_has for d in deps if d in self._states}
        return w.apply(w.state.claim(key, fbytes, abytes, deps, priority, retries, locations,
                                     confirm))

    def _handle(self, msg: m.Message) -> None:
        if self._recipes and isinstance(msg, (m.KeyMemory, m.KeyErred, m.KeyCancelled)):
            self._recipes.pop(msg.key, None)
        super()._handle(msg)

    # The scheduler may drop a key our future waits on before it reads our want or
    # claim of it: a release of ours went first (it then answers ``unknown``), or it
    # freed an earlier life of the key here (a client submitted it, then let go). Its
    # free reaches us before anything it says after, so the record here is gone (or a
    # run of it cancelled) by then: a future still waiting claims the task anew.
    def _unknown(self, key: str) -> None:
        w = self.worker
        with w.lock:
            done = self._claim_again(key)
        w.settle(done)

    def _freed(self, keys: list[str]) -> list:
        """The scheduler freed these here (worker lock held)."""
        done: list = []
        if self._recipes:
            for key in keys:
                if key in self._recipes:
                    done += self._claim_again(key)
        return done

    def _claim_again(self, key: str) -> list:
        recipe = self._recipes.get(key)
        st = self._states.get(key)
        t = self.worker.state.tasks.get(key)
        if recipe is None or st is None or st.done() or (t is not None
                                                         and t.state != "cancelled"):
            return []           # nobody waits, or it runs here (a stale answer)
        return self._claim(key, *recipe)

    # A pure call's result released by its last future here stays wanted a moment
    # (LINGER): a sibling task that asks for the same call a moment later (one stolen
    # by another worker that starts it late) shares it instead of running it again.
    def _release(self, key: str, state: FutureState | None = None) -> None:
        if key in self._shared and state is not None and state.status == "finished" \
                and state.refs == 1 and self._states.get(key) is state \
                and self.status == "running":
            with self._lock:
                first = not self._lingering
                self._lingering.append((time.monotonic() + LINGER, key, state))
            if first:
                try:
                    self.loop.call_soon_threadsafe(self._arm_linger)  # type: ignore[union-attr]
                except RuntimeError:          # the loop closed: the worker is going
                    pass
            return
        self._let_go(key, state)

    def _let_go(self, key: str, state: FutureState | None) -> None:
        if state is None or self._states.get(key) is state:
            self._recipes.pop(key, None)
            self._shared.discard(key)
        super()._release(key, state)

    def _arm_linger(self) -> None:
        """(loop thread) Release what lingered long enough; come back for the rest."""
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._lingering:
                    return
                due, key, state = self._lingering[0]
                if due > now and self.status == "running":
                    break
                self._lingering.popleft()
            self._let_go(key, state)
        self.loop.call_later(due - now, self._arm_linger)  # type: ignore[union-attr]

    def scatter(self, data: Any, broadcast: bool = False, workers: Any = None,
                timeout: Any = None, hash: bool = True, direct: bool | None = None) -> Any:
        """From a task: the data stays on this worker (unless broadcast or workers=)."""
        return super().scatter(data, broadcast, workers, timeout, hash, direct)

    def _scatter(self, keys: list[str], values: list, broadcast: bool, workers: list | None,
                 timeout: float | None, frames: list | None = None) -> list[Future]:
        if broadcast or workers is not None:
            return super()._scatter(keys, values, broadcast, workers, timeout, frames)
        w = self.worker
        futures = [self._new_future(k)[0] for k in keys]
        nbytes = [_sizeof(v) for v in values]
        with w.lock:
            for k, v in zip(keys, values):
                w.data[k] = v
            done = w.apply(w.state.put_data(keys, nbytes))
            w.send(m.AddKeys(keys, nbytes))
        w.settle(done)
        return futures

    # -- waiting: help first, then lend the slot --------------------------------------------
    def gather(self, futures: Any, errors: str = "raise", timeout: Any = None,
               direct: bool | None = None, asynchronous: bool | None = None) -> Any:
        if threading.get_ident() == self._loop_thread:      # an async task: await it
            flat = flatten_futures(futures)

            async def _g() -> Any:
                vals = await self._gather_async(flat, errors=errors)
                return rebuild(futures, self._by_key(flat, vals, errors))
            return _g()
        return super().gather(futures, errors, timeout)

    def _in_own_loop(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def _gather_sync(self, futures: list[Future], timeout: float | None = None,
                     errors: str = "raise") -> list:
        self._help_and_wait(futures, timeout)
        return super()._gather_sync(futures, timeout, errors)

    def _help(self, futures: list[Future], satisfied: Callable[[], bool]) -> bool:
        """Run queued tasks of these futures here, in order, until ``satisfied()``."""
        w = self.worker
        t = current_task.get()
        if not w.pool.in_pool_thread() or (t is not None and t.inline >= MAX_INLINE):
            return False
        ran = False
        for f in futures:
            if f._state.status != "pending":
                continue
            with w.lock:
                w.pool.reclaim()
                task = w.state.helpable([f.key])
            if task is not None:
                w.execute(task, inline=True)
                ran = True
                if satisfied():
                    break
        return ran

    @contextlib.contextmanager
    def _lend(self) -> Iterator[None]:
        if threading.get_ident() == self._loop_thread:   # waiting here would stop the loop
            raise BlockingCallError("blocking call on the worker's event loop: in an async "
                                    "task, await it instead")
        w = self.worker
        with w.lock:
            w.pool.block()
        self._wake()         # after block(): what it says (idle) leaves with the rest
        try:
            yield
        finally:
            with w.lock:
                w.pool.unblock()

    _lending = _lend       # (the coordination primitives' name for it)

    def _wait_states(self, states: list[FutureState], timeout: float | None) -> None:
        pending = [st for st in states if not st.done()]
        if pending:
            self._block_on(pending, timeout)

    def _help_and_wait(self, futures: list[Future], timeout: float | None) -> None:
        """Wait for each future in turn, first running it here if it is queued here."""
        w = self.worker
        t = current_task.get()
        can_help = w.pool.in_pool_thread() and (t is None or t.inline < MAX_INLINE)
        deadline = None if timeout is None else time.monotonic() + timeout
        for f in futures:
            st = f._state
            while st.status == "pending":
                confirming = False
                if can_help:
                    with w.lock:
                        w.pool.reclaim()
                        task = w.state.helpable([f.key])
                        confirming = task is None and w.state.awaits_confirm([f.key])
                    if task is not None:
                        w.execute(task, inline=True)
                        continue
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimedOutError(f"results not ready after {timeout} s")
                if confirming:
                    self._await_confirm(f.key, st, remaining, [g.key for g in futures])
                else:
                    self._block_on([st], remaining)

    def _await_confirm(self, key: str, st: FutureState, timeout: float | None,
                       siblings: list[str]) -> None:
        """A claim of ``key`` (or of what it waits on) waits for the scheduler's word:
        wait for it (or for the result), then help. The word comes within about a
        round trip, so the thread waits awake that long, keeping its slot, before it
        lends the slot and sleeps. Meanwhile neither it nor the other keys this task
        waits for (``siblings``) are given to a thief: they run here next, and they
        share their own children (pure calls) with each other."""
        w = self.worker
        tasks = w.state.tasks
        with w.lock:
            held = [t for t in map(tasks.get, dict.fromkeys(siblings)) if t is not None]
            for h in held:
                h.awaited += 1
            t = tasks.get(key)
        w._wake(here=True)                     # the claim leaves now
        try:
            if t is not None and t.state == "confirming":   # (else: its inputs are)
                end = time.perf_counter() + CONFIRM_SPIN
                while st.status == "pending" and time.perf_counter() < end:
                    os.sched_yield()           # (gives up the GIL and the core)
                    if t.state != "confirming":
                        return
            deadline = None if timeout is None else time.monotonic() + timeout
            with self._lend():
                with w.lock:
                    while st.status == "pending" and w.state.awaits_confirm([key]):
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            return
                        w.confirm_waiters += 1
                        try:  # (bounded: a word that changes the record unseen is re-checked)
                            w.confirmed.wait(1.0 if remaining is None else min(remaining, 1.0))
                        finally:
                            w.confirm_waiters -= 1
        finally:
            with w.lock:
                for h in held:
                    h.awaited -= 1

    def get_executor(self, **submit_options: Any) -> Any:
        """In a task, the executor's task leaves the thread pool until shutdown (waits in
        concurrent.futures.wait cannot lend its slot)."""
        from ..client.executor import ClientExecutor
        from .context import current_task, rejoin, secede
        if current_task.get() is None or not self.worker.pool.in_pool_thread():
            return ClientExecutor(self, **submit_options)
        return ClientExecutor(self, leave=secede, back=rejoin, **submit_options)

    def _block_on(self, states: list[FutureState], timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lend():
            for st in states:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not st.wait(remaining):
                    raise TimedOutError(f"results not ready after {timeout} s")

    def _fetch_sync(self, missing: list) -> None:
        w = self.worker
        still = []
        for key, st in missing:
            v = w.data.get(key, _MISSING)
            if v is not _MISSING:
                st.value = v
            else:
                still.append((key, st))
        if still:
            self._run(self._fetch(still))


_MISSING = object()


def _sizeof(v: Any) -> int:
    try:
        return len(memoryview(v).cast("B"))
    except TypeError:
        return sys.getsizeof(v)
