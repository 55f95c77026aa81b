"""The nanny: a small supervisor process that keeps one worker process alive.

    tasknest worker ADDR ...  (this process)
        └─spawn─> python -m tasknest worker ADDR ... --no-nanny   (the worker)
                    stdout: first line = address ──> printed once on our stdout
                            the rest ──────────────> forwarded to our stdout

* A worker that crashes (killed by a signal, or any exit other than a clean one,
  a usage/authentication error, or giving up on an unreachable scheduler) is
  started again, after a back-off that grows while crashes come quickly; more
  than ``max_restarts`` restarts within a minute and the nanny gives up.
* ``--memory-limit``: the worker's resident memory is sampled several times a
  second and a worker above the limit is killed and restarted (the scheduler
  reruns what it was doing and recomputes what only it held).
* SIGINT/SIGTERM are forwarded to the worker; the nanny exits with it.
* The worker watches the nanny (``TASKNEST_PARENT_PID``) and exits if the nanny
  is killed, so no orphan keeps running; the nanny watches whatever process
  started it (``TASKNEST_PARENT_PID`` as it received it) the same way.
"""
from __future__ import annotations

import argparse
import collections
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import psutil

from ..sizes import parse_size

log = logging.getLogger("tasknest.nanny")

# worker exit codes that mean "do not restart me" (see deploy/cli.py)
EXIT_CLEAN = 0          # closed on request (signal, or the scheduler asked)
EXIT_USAGE = 2          # bad arguments or authentication refused: restarting cannot help
EXIT_UNREACHABLE = 3    # the scheduler stayed unreachable for --reconnect-timeout
EXIT_RESTART = 4        # the scheduler asked for a restart (client.restart())
NO_RESTART = frozenset({EXIT_CLEAN, EXIT_USAGE, EXIT_UNREACHABLE})

POLL_INTERVAL = 0.1      # seconds between liveness/memory checks
STOP_GRACE = 10.0        # seconds a worker gets to exit after a forwarded signal
LONG_LIFE = 3.0          # a worker that lived this long resets the back-off


class Nanny:
    def __init__(self, cmd: list[str], memory_limit: int = 0, max_restarts: int = 30,
                 env: dict[str, str] | None = None) -> None:
        self.cmd = cmd
        self.memory_limit = memory_limit
        self.max_restarts = max_restarts
        self.env = dict(os.environ if env is None else env)
        self.watch_pid = self.env.get("TASKNEST_PARENT_PID")
        self.env["TASKNEST_PARENT_PID"] = str(os.getpid())
        self.proc: subprocess.Popen | None = None
        self.stopping: str | None = None
        self.restarts: collections.deque[float] = collections.deque()
        self.quick_crashes = 0
        self.announced = False
        self.started_at = 0.0
        self.stop_time = 0.0
        self.stop_grace = STOP_GRACE
        self._out = sys.stdout.buffer
        self._out_lock = threading.Lock()

    # -- the worker process --------------------------------------------------------------
    def _spawn(self) -> None:
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        self.started_at = time.monotonic()
        threading.Thread(target=self._forward, args=(self.proc,), daemon=True,
                         name="tasknest-nanny-stdout").start()

    def _forward(self, proc: subprocess.Popen) -> None:
        """Announce the first worker's address once; pass everything else through."""
        assert proc.stdout is not None
        first = True
        for line in iter(proc.stdout.readline, b""):
            if first:
                first = False
                if self.announced:
                    log.warning("worker restarted at %s", line.decode().strip())
                    continue
                self.announced = True
            with self._out_lock:
                try:
                    self._out.write(line)
                    self._out.flush()
                except (ValueError, OSError):
                    pass

    @property
    def _child(self) -> subprocess.Popen:
        """The worker's process: set from the first spawn on, before any use here."""
        assert self.proc is not None, "the worker was not spawned yet"
        return self.proc

    def _rss(self) -> int:
        try:
            return psutil.Process(self._child.pid).memory_info().rss
        except psutil.Error:
            return 0

    def _cleanup(self) -> None:
        """Remove the spill files and shared-memory segments of a worker that could not
        (it was killed)."""
        import shutil
        from ..protocol.sharedmem import remove_segments
        from ..worker.spill import spill_directories
        for path in spill_directories(self._child.pid):
            shutil.rmtree(path, ignore_errors=True)
        remove_segments(self._child.pid)

    def _kill(self) -> None:
        proc = self._child
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        proc.wait()

    # -- supervision -----------------------------------------------------------------------
    def stop(self, reason: str, sig: int = signal.SIGTERM) -> None:
        if self.stopping is None:
            self.stopping = reason
            self.stop_time = time.monotonic()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def _parent_gone(self) -> bool:
        pid = self.watch_pid
        return bool(pid and not psutil.pid_exists(int(pid)))

    def run(self) -> int:
        self._spawn()
        last_parent_check = time.monotonic()
        while True:
            code = self._supervise()
            if code is not None:
                return code
            now = time.monotonic()
            if now - last_parent_check > 1.0:
                last_parent_check = now
                if self._parent_gone():
                    self.stop("the process that started the nanny is gone")

    def _supervise(self) -> int | None:
        """One check of the worker; an exit code when the nanny should exit."""
        proc = self.proc
        assert proc is not None
        try:
            code = proc.wait(POLL_INTERVAL)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            if self.stopping is not None:
                if time.monotonic() - self.stop_time > self.stop_grace:
                    log.warning("worker did not stop within %s s; killing it",
                                self.stop_grace)
                    self._kill()
                    return 1
                return None
            if self.memory_limit:
                rss = self._rss()
                if rss > self.memory_limit:
                    log.warning("worker pid %d uses %d bytes, above its memory limit of %d "
                                "bytes: restarting it", proc.pid, rss, self.memory_limit)
                    self._kill()
                    self._cleanup()
                    return self._restart("exceeded its memory limit")
            return None
        self._cleanup()
        if self.stopping is not None:
            return code
        if code in NO_RESTART:
            return code
        if code == EXIT_RESTART:
            log.info("worker exited for a restart: starting a new one")
            self._spawn()
            return None
        return self._restart(_describe_exit(code))

    def _restart(self, why: str) -> int | None:
        now = time.monotonic()
        lived = now - self.started_at
        self.quick_crashes = 0 if lived >= LONG_LIFE else self.quick_crashes + 1
        while self.restarts and now - self.restarts[0] > 60.0:
            self.restarts.popleft()
        if len(self.restarts) >= self.max_restarts:
            print(f"tasknest nanny: the worker {why}; it was restarted {len(self.restarts)} "
                  "times in the last minute, giving up", file=sys.stderr, flush=True)
            return 1
        self.restarts.append(now)
        delay = 0.0 if self.quick_crashes <= 1 else min(3.0, 0.1 * 2 ** (self.quick_crashes - 2))
        log.warning("worker %s after %.1f s; restarting it in %.1f s", why, lived, delay)
        deadline = now + delay
        while self.stopping is None and time.monotonic() < deadline:
            time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))
        if self.stopping is not None:
            return 0
        self._spawn()
        return None


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def worker_command(argv: list[str]) -> list[str]:
    """The command line of the supervised worker: ours, without a nanny."""
    return [sys.executable, "-m", "tasknest", *argv, "--no-nanny"]


def run_nanny(argv: list[str], args: argparse.Namespace) -> int:
    """Entry point of ``tasknest worker`` (unless --no-nanny): supervise a worker."""
    nanny = Nanny(worker_command(argv), memory_limit=parse_size(args.memory_limit),
                  max_restarts=int(os.environ.get("TASKNEST_NANNY_MAX_RESTARTS", "30")))
    # a SIGTERM'd worker retires: it may drain for --retire-timeout before it exits
    nanny.stop_grace = max(STOP_GRACE, getattr(args, "retire_timeout", 0.0) + 15.0)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, _f: nanny.stop(f"received {signal.Signals(s).name}", s))
    try:
        return nanny.run()
    except KeyboardInterrupt:
        nanny.stop("interrupted")
        return 130
