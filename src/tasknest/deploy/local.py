"""LocalCluster: a scheduler and workers on this machine, listening on loopback only.

    LocalCluster ──spawn──> `tasknest scheduler` ──first stdout line──> address
                 ──spawn──> `tasknest worker ADDRESS` x n ──first stdout line──> ready

A fresh shared secret is made for every cluster and handed to its processes
through the environment (not the command line, which other users can read).
``processes=False`` runs everything in this process instead, for tests.
"""
from __future__ import annotations

import asyncio
import atexit
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import weakref
from typing import Any

from ..protocol.auth import new_token
from .security import Security, server_ssl_context

_clusters: "weakref.WeakSet[LocalCluster]" = weakref.WeakSet()


class LocalCluster:
    def __init__(self, n_workers: int | None = None, threads_per_worker: int | None = None,
                 processes: bool = True, host: str = "127.0.0.1", scheduler_port: int = 0,
                 token: str | None = None, security: Security | bool | None = None,
                 memory_limit: int | str = 0, nanny: bool = True, timeout: float = 60.0,
                 heartbeat_timeout: float = 30.0, worker_args: list[str] | None = None,
                 max_frame_size: int | str | None = None, allowed_failures: int = 3,
                 resources: dict[str, float] | None = None,
                 shared_memory: bool = True) -> None:
        from ..errors import CallerError
        from .cli import parse_size
        try:
            self.max_frame = None if max_frame_size is None else parse_size(max_frame_size)
        except ValueError:
            self.max_frame = 0
        if self.max_frame is not None and self.max_frame <= 0:
            raise CallerError(f"max_frame_size must be a positive size like '64MiB', "
                              f"got {max_frame_size!r}")
        if n_workers is None:
            n_workers = os.cpu_count() or 1 if threads_per_worker is None else max(
                1, (os.cpu_count() or 1) // threads_per_worker)
        threads_per_worker = threads_per_worker or 1
        if not isinstance(n_workers, int) or n_workers < 0:
            raise CallerError(f"n_workers must be a non-negative integer, got {n_workers!r}")
        if not isinstance(threads_per_worker, int) or threads_per_worker < 1:
            raise CallerError(f"threads_per_worker must be a positive integer, "
                              f"got {threads_per_worker!r}")
        self.n_workers = n_workers
        self.threads_per_worker = threads_per_worker
        self.processes = processes
        self.host = host
        self.token = token or new_token()
        self.security = Security.temporary() if security is True else (security or None)
        self._own_security = security is True      # its temporary files go on close()
        self.memory_limit = memory_limit
        self.nanny = nanny
        self.timeout = timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.allowed_failures = allowed_failures
        self.worker_args = worker_args or []
        self.resources = dict(resources or {})     # each worker has these (resources=)
        self.shared_memory = shared_memory         # workers share results through /dev/shm
        if self.resources:
            self.worker_args = [*self.worker_args, "--resources",
                                ",".join(f"{k}={v}" for k, v in self.resources.items())]
        self.scheduler_address = ""
        self.scheduler_proc: subprocess.Popen | None = None
        self.worker_procs: list[subprocess.Popen] = []
        self._inproc: list[Any] = []
        self.status = "starting"
        _clusters.add(self)
        try:
            if processes:
                self._start_processes()
            else:
                self._start_inprocess()
        except BaseException:
            self.close()
            raise
        self.status = "running"

    # -- subprocesses ---------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["TASKNEST_TOKEN"] = self.token
        env["TASKNEST_PARENT_PID"] = str(os.getpid())
        # the cluster's processes import what this one can (functions pickled by reference)
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        return env

    def _tls_args(self) -> list[str]:
        return self.security.cli_args() if self.security else []

    def _start_processes(self) -> None:
        cmd = [sys.executable, "-m", "tasknest", "scheduler", "--host", self.host,
               "--port", "0", "--heartbeat-timeout", str(self.heartbeat_timeout),
               "--allowed-failures", str(self.allowed_failures),
               *(["--max-frame-size", str(self.max_frame)] if self.max_frame else []),
               *self._tls_args()]
        self.scheduler_proc = _spawn(cmd, self._env())
        self.scheduler_address = _first_line(self.scheduler_proc, self.timeout, "scheduler")
        for i in range(self.n_workers):
            self.add_worker(wait=False, name=f"local-{i}")
        for proc in self.worker_procs:
            _first_line(proc, self.timeout, "worker")

    def add_worker(self, wait: bool = True, name: str | None = None) -> subprocess.Popen:
        """Start one more worker process (used by tests that kill workers)."""
        name = name or f"local-{len(self.worker_procs)}"
        cmd = [sys.executable, "-m", "tasknest", "worker", self.scheduler_address,
               "--nthreads", str(self.threads_per_worker), "--name", name,
               "--host", self.host, *self._tls_args(),
               *(["--max-frame-size", str(self.max_frame)] if self.max_frame else []),
               *self.worker_args]
        if self.memory_limit:
            cmd += ["--memory-limit", str(self.memory_limit)]
        if not self.nanny:
            cmd += ["--no-nanny"]
        if not self.shared_memory:
            cmd += ["--no-shared-memory"]
        proc = _spawn(cmd, self._env())
        self.worker_procs.append(proc)
        if wait:
            _first_line(proc, self.timeout, "worker")
        return proc

    # -- in this process ----------------------------------------------------------------------
    def _start_inprocess(self) -> None:
        from ..client.loop import get_runner
        from ..scheduler.server import Scheduler
        from ..worker.server import Worker, configure_process
        configure_process()
        runner = get_runner()
        ssl_server = server_ssl_context(self.security)
        security = self.security

        async def start() -> None:
            sched = await Scheduler(self.host, 0, self.token, ssl_server,
                                    heartbeat_timeout=self.heartbeat_timeout,
                                    allowed_failures=self.allowed_failures,
                                    max_frame=self.max_frame).start()
            self._inproc.append(sched)
            self.scheduler_address = sched.address
            for i in range(self.n_workers):
                w = Worker(sched.address, self.threads_per_worker, f"local-{i}", self.host,
                           token=self.token, security=security,
                           max_frame=self.max_frame or None, resources=self.resources,
                           shared_memory=self.shared_memory)
                await w.start()
                self._inproc.append(w)
        runner.run(start(), self.timeout)

    # -- stopping ----------------------------------------------------------------------------------
    def close(self, timeout: float = 10.0) -> None:
        if self.status == "closed":
            return
        self.status = "closed"
        if self._inproc:
            from ..client.loop import get_runner

            async def stop() -> None:
                for obj in reversed(self._inproc):
                    await obj.close()
            try:
                get_runner().run(stop(), timeout)
            except Exception:
                pass
            self._inproc.clear()
        procs = [p for p in [*self.worker_procs, self.scheduler_proc] if p is not None]
        pids = _descendants(procs)
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        from ..protocol.sharedmem import remove_segments
        for pid in pids:        # segments of workers killed before they could remove them
            remove_segments(pid)
        if self._own_security and self.security is not None:
            self.security.cleanup()

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "LocalCluster":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    @property
    def workers(self) -> list[subprocess.Popen]:
        return self.worker_procs

    def __repr__(self) -> str:
        return (f"<LocalCluster {self.scheduler_address} workers={self.n_workers} "
                f"threads_per_worker={self.threads_per_worker} status={self.status}>")


def _spawn(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def _first_line(proc: subprocess.Popen, timeout: float, what: str) -> str:
    """The first stdout line of a child (its address), then forward the rest."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()  # type: ignore[union-attr]
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            proc.kill()
            raise TimeoutError(f"the {what} process did not start within {timeout} s")
        if sel.select(remaining):
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"the {what} process exited during start-up "
                                   f"(code {proc.wait()}); see its messages above")
            buf += chunk
    sel.close()
    line, rest = buf.split(b"\n", 1)
    threading.Thread(target=_forward, args=(proc, rest), daemon=True,
                     name=f"tasknest-{what}-stdout").start()
    return line.decode().strip()


def _forward(proc: subprocess.Popen, first: bytes) -> None:
    """Copy what tasks print on the cluster's processes to our stdout."""
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
    fd = proc.stdout.fileno()  # type: ignore[union-attr]
    data = first
    while True:
        if data and out is not None:
            try:
                out.write(data)
                out.flush()
            except (ValueError, OSError):
                out = None
        try:
            data = os.read(fd, 65536)
        except OSError:
            return
        if not data:
            return


@atexit.register
def _close_all() -> None:
    for c in list(_clusters):
        try:
            c.close(timeout=3)
        except Exception:
            pass


def _descendants(procs: list) -> list[int]:
    """The pids of these processes and of all their children (workers under nannies)."""
    import psutil
    pids = []
    for p in procs:
        pids.append(p.pid)
        try:
            pids += [c.pid for c in psutil.Process(p.pid).children(recursive=True)]
        except psutil.Error:
            pass
    return pids
