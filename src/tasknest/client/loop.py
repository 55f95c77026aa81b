"""One background event-loop thread per process, shared by synchronous clients."""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Coroutine

from ..errors import BlockingCallError

_runner: "LoopRunner | None" = None
_lock = threading.Lock()


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:  # uvloop is optional (not on Windows)
        return asyncio.new_event_loop()


class LoopRunner:
    def __init__(self) -> None:
        self.loop = new_event_loop()
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._run, name="tasknest-io", daemon=True)
        self.thread.start()
        self._started.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        self.loop.run_forever()

    def run(self, coro: Coroutine, timeout: float | None = None) -> Any:
        """Run a coroutine on the loop thread and wait for its result."""
        if threading.get_ident() == self.thread.ident:
            coro.close()        # never to run: no "was never awaited" warning
            raise BlockingCallError("cannot block the tasknest event loop thread on itself")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise


def get_runner() -> LoopRunner:
    global _runner
    with _lock:
        if _runner is None or not _runner.thread.is_alive():
            _runner = LoopRunner()
        return _runner
