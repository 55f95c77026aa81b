"""LocalCluster: a scheduler and workers on this machine, listening on loopback only.

    LocalCluster ──spawn──> `tasknest scheduler` ──first stdout line──> address
                 ──spawn──> `tasknest worker ADDRESS` x n ──first stdout line──> ready

A fresh shared secret is made for every cluster and handed to its processes
through the environment (not the command line, which other users can read).
``processes=False`` runs everything in this process instead, for tests.
"""
from __future__ import annotations

import atexit
import collections
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import weakref
from typing import IO, Any

from ..protocol.auth import new_token
from ..errors import CallerError, ClusterStartError, TasknestError
from ..dashboard import serve_dashboard
from ..sizes import parse_size
from ..tls import server_ssl_context
from .cluster import Cluster
from .security import Security

_clusters: "weakref.WeakSet[LocalCluster]" = weakref.WeakSet()


class LocalCluster(Cluster):
    name_prefix = "local"

    def __init__(self, n_workers: int | None = None, threads_per_worker: int | None = None,
                 processes: bool = True, host: str = "127.0.0.1", scheduler_port: int = 0,
                 token: str | None = None, security: Security | bool | None = None,
                 memory_limit: int | str = 0, nanny: bool = True, timeout: float = 60.0,
                 heartbeat_timeout: float = 30.0, worker_args: list[str] | None = None,
                 max_frame_size: int | str | None = None, allowed_failures: int = 3,
                 resources: dict[str, float] | None = None,
                 dashboard_address: str | None = "127.0.0.1:8787",
                 dashboard: bool = True,
                 state_dir: str | bool | None = True, recovery_wait: float = 10.0,
                 shared_memory: bool = True) -> None:
        Cluster.__init__(self)
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
        self.token: str = token or new_token()
        self.security = Security.temporary() if security is True else (security or None)
        self._own_security = security is True      # its temporary files go on close()
        self.memory_limit = memory_limit
        self.nanny = nanny
        self.timeout = timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.allowed_failures = allowed_failures
        self.worker_args = worker_args or []
        self.resources = dict(resources or {})     # each worker has these (resources=)
        self.dashboard_address = dashboard_address if dashboard else None
        self._dashboard_link: str | None = None
        self.shared_memory = shared_memory         # workers share results through /dev/shm
        if self.resources:
            self.worker_args = [*self.worker_args, "--resources",
                                ",".join(f"{k}={v}" for k, v in self.resources.items())]
        # the scheduler's journal (processes only): a temporary folder of its own by
        # default; a scheduler that dies is restarted on it, at the same address
        self._own_state_dir = state_dir is True and processes
        if self._own_state_dir:
            import tempfile
            state_dir = tempfile.mkdtemp(prefix="tasknest-state-")
        self.state_dir = state_dir if isinstance(state_dir, str) and processes else None
        self.recovery_wait = recovery_wait
        self.scheduler_restarts = 0
        self._watcher: threading.Thread | None = None
        self.scheduler_address = ""
        self.scheduler_proc: subprocess.Popen | None = None
        self.worker_procs: list[subprocess.Popen] = []
        self._by_name: dict[str, Any] = {}       # worker name -> its process (or Worker)
        self._logs: dict[str, collections.deque[str]] = {}
        self._inproc: list[Any] = []
        self.status = "starting"
        _clusters.add(self)
        try:
            if processes:
                self._start_processes()
            else:
                self._start_inprocess()
        except BaseException as exc:
            self.close()
            if isinstance(exc, Exception) and not isinstance(exc, TasknestError):
                raise ClusterStartError(f"the cluster did not start: {type(exc).__name__}: "
                                        f"{exc}") from exc
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

    def _scheduler_cmd(self, port: int) -> list[str]:
        return [sys.executable, "-m", "tasknest", "scheduler", "--host", self.host,
                "--port", str(port), "--heartbeat-timeout", str(self.heartbeat_timeout),
                "--allowed-failures", str(self.allowed_failures),
                *(["--max-frame-size", str(self.max_frame)] if self.max_frame else []),
                *(["--state-dir", self.state_dir, "--recovery-wait", str(self.recovery_wait)]
                  if self.state_dir else []),
                *(["--dashboard-address", self.dashboard_address] if self.dashboard_address
                  else ["--no-dashboard"]),
                *self._tls_args()]

    def _start_processes(self) -> None:
        cmd = self._scheduler_cmd(0)
        self.scheduler_proc = _spawn(cmd, self._env(), self._log("scheduler"))
        self.scheduler_address = _first_line(self.scheduler_proc, self.timeout, "scheduler")
        if self.state_dir:
            self._watcher = threading.Thread(target=self._watch_scheduler, daemon=True,
                                             name="tasknest-scheduler-watch")
            self._watcher.start()
        names = self._new_names(self.n_workers)
        self._launched.extend(names)
        self._launch(names)

    def _launch(self, names: list[str]) -> None:
        if not self.processes:
            self._launch_inprocess(names)
            return
        procs = [self.add_worker(wait=False, name=name) for name in names]
        for proc in procs:
            _first_line(proc, self.timeout, "worker")

    def _reap(self, names: list[str]) -> None:
        for name in names:
            obj = self._by_name.pop(name, None)
            if isinstance(obj, subprocess.Popen):
                _stop(obj, self.timeout)
            elif obj is not None:
                from ..client.loop import get_runner
                if obj in self._inproc:
                    self._inproc.remove(obj)
                get_runner().run(obj.close("cluster scaled down"), self.timeout)

    def _log(self, name: str) -> "collections.deque[str]":
        # one log per name: a restarted scheduler's lines go after those of the process
        # it replaces, which tell why it died
        log = self._logs.get(name)
        if log is None:
            log = self._logs[name] = collections.deque(maxlen=2000)
        return log

    def logs(self) -> dict[str, str]:
        """What the scheduler and each worker process wrote on stderr (the last 2,000
        lines of each; passed on to this process's stderr as well). A scheduler
        restarted after it died adds to the lines of the processes before it."""
        return {name: "\n".join(log) for name, log in self._logs.items()}

    def add_worker(self, wait: bool = True, name: str | None = None) -> subprocess.Popen:
        """Start one more worker process (used by tests that kill workers).

        Args:
            wait: return once it has started (else at once).
            name: its name (``local-<n>`` by default).

        Returns:
            The worker's process (``subprocess.Popen``).

        Raises:
            ClusterStartError: it did not start.
        """
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
        proc = _spawn(cmd, self._env(), self._log(name))
        self.worker_procs.append(proc)
        self._by_name[name] = proc
        if wait:
            _first_line(proc, self.timeout, "worker")
        return proc

    def _watch_scheduler(self) -> None:
        """Restart a scheduler that died, on the same address and state dir: workers
        and clients reconnect to it and the computation goes on."""
        from ..protocol.comm import parse_address
        port = parse_address(self.scheduler_address)[2]
        while True:
            proc = self.scheduler_proc
            assert proc is not None
            code = proc.wait()
            if self.status == "closed":
                return
            for attempt in range(50):    # (the lock or the port may take a moment to free)
                new = _spawn(self._scheduler_cmd(port), self._env(), self._log("scheduler"))
                try:
                    address = _first_line(new, self.timeout, "scheduler")
                except (RuntimeError, TimeoutError):
                    if self.status == "closed":
                        return
                    time.sleep(0.05)
                    continue
                if self.status == "closed":
                    new.terminate()
                    new.wait()
                    return
                self.scheduler_proc = new
                self.scheduler_restarts += 1
                import logging
                logging.getLogger("tasknest.deploy").warning(
                    "the scheduler died (exit code %s): restarted at %s", code, address)
                break
            else:
                return

    # -- in this process ----------------------------------------------------------------------
    def _start_inprocess(self) -> None:
        from ..client.loop import get_runner
        from ..scheduler.server import Scheduler
        from ..worker.pool import configure_process
        from ..worker.server import Worker
        configure_process()
        runner = get_runner()
        ssl_server = server_ssl_context(self.security)
        security = self.security

        async def start() -> None:
            sched = await Scheduler(self.host, 0, self.token, ssl_server,
                                    heartbeat_timeout=self.heartbeat_timeout,
                                    allowed_failures=self.allowed_failures,
                                    max_frame=self.max_frame,
                                    dashboard_address=self.dashboard_address,
                                    dashboard_factory=serve_dashboard).start()
            self._inproc.append(sched)
            self.scheduler_address = sched.address
        runner.run(start(), self.timeout)
        names = self._new_names(self.n_workers)
        self._launched.extend(names)
        self._launch_inprocess(names)

    def _launch_inprocess(self, names: list[str]) -> None:
        from ..client.loop import get_runner
        from ..worker.server import Worker

        async def start() -> None:
            for name in names:
                w = Worker(self.scheduler_address, self.threads_per_worker, name, self.host,
                           token=self.token, security=self.security,
                           max_frame=self.max_frame or None, resources=self.resources,
                           shared_memory=self.shared_memory)
                await w.start()
                self._inproc.append(w)
                self._by_name[name] = w
        get_runner().run(start(), self.timeout)

    # -- stopping ----------------------------------------------------------------------------------
    def close(self, timeout: float = 10.0) -> None:
        """Stop the workers and the scheduler (SIGTERM, then SIGKILL after ``timeout``).

        Closing twice is harmless.

        Args:
            timeout: seconds the processes get to exit.
        """
        if self.status == "closed":
            return
        self._close_common()
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
        if self._watcher is not None:
            self._watcher.join(timeout)
        procs = [p for p in [self.scheduler_proc] if p is not None and p.poll() is None]
        for p in procs:     # (one the watcher started as we closed)
            p.kill()
            p.wait()
        if self._own_state_dir and self.state_dir:
            import shutil
            shutil.rmtree(self.state_dir, ignore_errors=True)
        if self._own_security and self.security is not None:
            self.security.cleanup()

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard's URL with its key (None without a dashboard)."""
        if self._dashboard_link is None and self.dashboard_address and self.status == "running":
            if self._inproc:
                board = self._inproc[0].dashboard
                self._dashboard_link = board.link if board is not None else None
            else:                      # ask the scheduler (it may have taken the next port)
                from ..client.client import Client
                with Client(self.scheduler_address, token=self.token, security=self.security,
                            set_as_default=False) as c:
                    self._dashboard_link = c.dashboard_link
        return self._dashboard_link

    @property
    def workers(self) -> list[subprocess.Popen]:
        return self.worker_procs

    def __repr__(self) -> str:
        return (f"<LocalCluster {self.scheduler_address} workers={len(self._launched)} "
                f"threads_per_worker={self.threads_per_worker} status={self.status}>")


def _spawn(cmd: list[str], env: dict[str, str],
           log: "collections.deque[str] | None" = None) -> subprocess.Popen:
    """Start a cluster process; with ``log``, its stderr is both passed on to ours and
    kept (its last lines) for ``cluster.logs()``."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            stderr=None if log is None else subprocess.PIPE,
                            start_new_session=True)
    if log is not None:
        threading.Thread(target=_tee, args=(proc, log), daemon=True,
                         name="tasknest-stderr").start()
    return proc


def _pipe(stream: IO[bytes] | None) -> IO[bytes]:
    """A child's stream that was opened with PIPE (so it is set)."""
    assert stream is not None, "the stream was not opened with subprocess.PIPE"
    return stream


def _tee(proc: subprocess.Popen, log: "collections.deque[str]") -> None:
    out = sys.stderr.buffer if hasattr(sys.stderr, "buffer") else None
    for line in iter(_pipe(proc.stderr).readline, b""):
        log.append(line.decode(errors="replace").rstrip("\n"))
        if out is not None:
            try:
                out.write(line)
                out.flush()
            except (ValueError, OSError):
                out = None


def _stop(proc: subprocess.Popen, timeout: float) -> None:
    """A retired worker exits by itself; one that does not is stopped."""
    try:
        proc.wait(timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _first_line(proc: subprocess.Popen, timeout: float, what: str) -> str:
    """The first stdout line of a child (its address), then forward the rest."""
    sel = selectors.DefaultSelector()
    stdout = _pipe(proc.stdout)
    sel.register(stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buf = b""
    fd = stdout.fileno()
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            proc.kill()
            raise ClusterStartError(f"the {what} process did not start within {timeout} s")
        if sel.select(remaining):
            chunk = os.read(fd, 4096)
            if not chunk:
                raise ClusterStartError(f"the {what} process exited during start-up "
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
    fd = _pipe(proc.stdout).fileno()
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
