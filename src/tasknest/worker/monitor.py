"""What a worker tells the scheduler for people to see: runs, spawns, output, logs, stats.

Recorded by task threads (an append under the GIL: no lock, no loop wake-up) and
sent as one lazy ``monitor`` message every FLUSH seconds, with the next batch:
a task stream row per execution, the edges of the spawn tree (a task that
submitted a child), what tasks printed or logged, the worker's recent log lines,
and its CPU and memory. Every buffer is bounded; what overflows is counted, not kept.
"""
from __future__ import annotations

import io
import logging
import sys
import threading
import time
from collections import deque
from typing import Any

from ..protocol import messages as m
from ..protocol.monitoring import aggregate, pack_runs
from .context import current_task

FLUSH = 0.25          # seconds between monitor messages (only when something happened)
STATS_EVERY = 1.0     # seconds between CPU/memory samples sent even when idle
MAX_RUNS = 20_000     # rows kept between two flushes (a flood is cut, and counted)
MAX_LINES = 2_000     # output lines kept between two flushes
LOG_LINES = 200       # the worker's own recent log lines (shown on the workers page)


class Monitor:
    def __init__(self) -> None:
        self.runs: list[list] = []       # [key, thread, start, stop, ok]
        self.spawns: list[list] = []     # [parent, child]
        self.output: list[list] = []     # [key, stream, text]
        self.logs: deque[str] = deque(maxlen=LOG_LINES)
        self.new_logs: list[str] = []
        self.events: list[list] = []     # [kind, start, stop, peer, keys, bytes]
        self._spilled = 0
        self.dropped = 0
        self._threads: dict[int, int] = {}    # thread ident -> small row number
        self.stats: dict[str, Any] = {}
        self.counts = [0, 0]                  # executions here: finished, erred

    # -- from task threads -------------------------------------------------------------
    def ran(self, key: str, start: float, stop: float, ok: bool) -> None:
        self.counts[0 if ok else 1] += 1
        if len(self.runs) >= MAX_RUNS:
            self.dropped += 1
            return
        ident = threading.get_ident()
        row = self._threads.get(ident)
        if row is None:
            row = self._threads[ident] = len(self._threads)
        self.runs.append([key, row, start, stop, ok])

    def spawned(self, child: str) -> None:
        t = current_task.get()
        if t is not None and len(self.spawns) < MAX_RUNS:
            self.spawns.append([t.key, child])

    def transferred(self, peer: str, keys: int, nbytes: int, start: float, stop: float) -> None:
        if len(self.events) < MAX_LINES:
            self.events.append(["transfer", start, stop, peer, keys, nbytes])

    def wrote(self, key: str, stream: str, text: str) -> None:
        if len(self.output) < MAX_LINES:
            self.output.append([key, stream, text])
        else:
            self.dropped += 1

    def logged(self, line: str) -> None:
        self.logs.append(line)
        if len(self.new_logs) < LOG_LINES:
            self.new_logs.append(line)

    # -- from the event loop ------------------------------------------------------------
    def pending(self) -> bool:
        return bool(self.runs or self.spawns or self.output or self.new_logs or self.events)

    def take(self) -> m.Message:
        """Everything recorded since the last call, as one message."""
        runs, self.runs = self.runs, []
        spawns, self.spawns = self.spawns, []
        output, self.output = self.output, []
        logs, self.new_logs = self.new_logs, []
        events, self.events = self.events, []
        stats = dict(self.stats, dropped=self.dropped)
        if runs:
            stats.update(aggregate(runs))
        return m.Monitor(runs=pack_runs(runs) if runs else b"", nruns=len(runs),
                         spawns=spawns, output=output, logs=logs, stats=stats, events=events)


class _TaskStream(io.TextIOBase):
    """sys.stdout / sys.stderr: what a task writes goes to its monitor, line by line;
    everything else to the real stream."""

    def __init__(self, real: Any, name: str) -> None:
        self.real = real
        self.name = name
        self._partial: dict[str, str] = {}

    def write(self, text: str) -> int:
        t = current_task.get()
        if t is None or not hasattr(t.worker, "monitor"):
            return self.real.write(text)
        buf = self._partial.pop(t.key, "") + text
        *lines, rest = buf.split("\n")
        for line in lines:
            t.worker.monitor.wrote(t.key, self.name, line)
        if rest:
            self._partial[t.key] = rest[-10_000:]
        return len(text)

    def flush(self) -> None:
        self.real.flush()

    def fileno(self) -> int:
        return self.real.fileno()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.real, "encoding", "utf-8")


def _outside_tasks(record: logging.LogRecord) -> bool:
    return current_task.get() is None


class _TaskLogs(logging.Handler):
    """Records logged inside a task go to its monitor (and so to its client)."""

    def emit(self, record: logging.LogRecord) -> None:
        t = current_task.get()
        if t is None or not hasattr(t.worker, "monitor"):
            return
        try:
            t.worker.monitor.wrote(t.key, "log", f"{record.levelname} {record.name}: "
                                                 f"{record.getMessage()}")
        except Exception:
            pass


class _WorkerLogs(logging.Handler):
    """The worker's own log lines (tasknest.*), kept for the dashboard."""

    def __init__(self, monitor: Monitor) -> None:
        super().__init__(logging.INFO)
        self.monitor = monitor
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if current_task.get() is None:
            try:
                self.monitor.logged(self.format(record))
            except Exception:
                pass


_installed = False


def install(monitor: Monitor) -> logging.Handler:
    """Capture task output in this process (once), and this worker's log lines."""
    global _installed
    if not _installed:
        _installed = True
        sys.stdout = _TaskStream(sys.stdout, "stdout")
        sys.stderr = _TaskStream(sys.stderr, "stderr")
        root = logging.getLogger()
        for h in root.handlers:     # a task's records reach its client, not these too
            h.addFilter(_outside_tasks)
        root.addHandler(_TaskLogs())
    handler = _WorkerLogs(monitor)
    logging.getLogger("tasknest").addHandler(handler)
    return handler


def sample(monitor: Monitor, process: Any, worker: Any) -> None:
    """CPU, memory and what the worker holds, for the status page and /metrics."""
    try:
        monitor.stats["cpu"] = process.cpu_percent(None)
        monitor.stats["memory"] = process.memory_info().rss
    except Exception:
        pass
    data = worker.data
    spilled = getattr(data, "spilled", None)
    monitor.stats["spilled"] = len(spilled) if isinstance(spilled, (set, frozenset)) else 0
    count = getattr(data, "spilled_count", 0)
    if count > monitor._spilled:      # results spilled since the last sample: a mark
        now = time.time()
        monitor.events.append(["spill", now, now, "", count - monitor._spilled, 0])
        monitor._spilled = count
    monitor.stats["keys"] = len(data)
    monitor.stats["time"] = time.time()
