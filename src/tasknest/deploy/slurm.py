"""SLURMCluster: workers in SLURM batch jobs, the scheduler in this process's machine.

    SLURMCluster ──spawn──> `tasknest scheduler --host 0.0.0.0` (secret in its environment)
                 ──sbatch --array=0-(k-1) job script──> k jobs, each workers_per_job workers
                 ──squeue (every poll_interval)──> jobs that ended are replaced
                 ──scancel──> pending jobs on scale-down, every job on close()

* The secret is written to a file of mode 0600 in ``shared_directory`` (on a file
  system the compute nodes share); the job script names the file, never the secret.
* Workers reach the scheduler at ``scheduler_address``: ``contact_address`` if given,
  else this machine's address on the route to the SLURM controller (the network the
  compute nodes share with it), else ``interface``'s address; never 0.0.0.0.
* A worker knows its job's end: ``--lifetime`` is the walltime less
  ``lifetime_margin``, so it retires gracefully (its results move to other
  workers) before SLURM kills it, and the cluster submits a replacement.
* ``job_script()`` is exactly what ``sbatch`` receives; site quirks go in
  ``job_extra_directives`` / ``job_directives_skip`` / ``job_script_prologue``.
* ``max_submit_failures`` refusals in a row pause the cluster: ``scale`` and
  ``adapt`` then raise SubmissionError with sbatch's message until ``resume()``.
"""
from __future__ import annotations

import atexit
import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from typing import Any

from ..errors import CallerError, SubmissionError
from ..protocol.auth import new_token
from ..protocol.comm import address_towards
from .cluster import Cluster
from .local import _first_line, _spawn, _stop

_clusters: "weakref.WeakSet[SLURMCluster]" = weakref.WeakSet()
ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
         "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def parse_walltime(text: str) -> int:
    """SLURM's time formats -> seconds: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS."""
    t = str(text).strip()
    days = 0
    if "-" in t:
        d, t = t.split("-", 1)
        days = int(d)
        parts = [int(p) for p in t.split(":")]
        parts += [0] * (3 - len(parts))
        h, mnt, s = parts
    else:
        parts = [int(p) for p in t.split(":")]
        if len(parts) == 1:
            h, mnt, s = 0, parts[0], 0
        elif len(parts) == 2:
            h, mnt, s = 0, parts[0], parts[1]
        elif len(parts) == 3:
            h, mnt, s = parts
        else:
            raise ValueError(text)
    return ((days * 24 + h) * 60 + mnt) * 60 + s


def _address_of_interface(name: str) -> str:
    import psutil
    for addr in psutil.net_if_addrs().get(name, []):
        if addr.family == socket.AF_INET:
            return addr.address
    raise CallerError(f"interface {name!r} has no IPv4 address (have: "
                      f"{sorted(psutil.net_if_addrs())})")


def _controller_host() -> str:
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("SlurmctldHost[0]", "ControlMachine", "SlurmctldAddr"):
            value = value.strip()
            m = re.match(r"([^()\s]+)(?:\(([^)]+)\))?", value)
            if m:
                return m.group(2) or m.group(1)
    return ""


class SLURMCluster(Cluster):
    """Workers in SLURM jobs. ``scale(n)`` asks for n workers (whole jobs of
    ``workers_per_job``); ``adapt`` sizes by demand; jobs are submitted as arrays."""

    name_prefix = "job"

    def __init__(self, cores: int = 1, memory: str | None = None, walltime: str = "01:00:00",
                 queue: str | None = None, account: str | None = None,
                 workers_per_job: int = 1, n_workers: int = 0,
                 job_name: str = "tasknest-worker", job_script_prologue: list[str] | None = None,
                 job_extra_directives: list[str] | None = None,
                 job_directives_skip: list[str] | None = None,
                 worker_options: dict | None = None, python: str | None = None,
                 contact_address: str | None = None, interface: str | None = None,
                 shared_directory: str | None = None, lifetime_margin: float | None = None,
                 retire_timeout: float | None = None, max_submit_failures: int = 3,
                 poll_interval: float = 2.0, timeout: float = 60.0,
                 token: str | None = None) -> None:
        super().__init__()
        if not isinstance(cores, int) or cores < 1:
            raise CallerError(f"cores must be a positive integer, got {cores!r}")
        if not isinstance(workers_per_job, int) or not 1 <= workers_per_job <= cores:
            raise CallerError(f"workers_per_job must be between 1 and cores ({cores}), "
                              f"got {workers_per_job!r}")
        try:
            self.walltime_seconds = parse_walltime(walltime)
        except ValueError:
            raise CallerError(f"walltime {walltime!r} is not a SLURM time "
                              "(e.g. 30, 01:00:00, 1-12:00:00)") from None
        self.cores, self.memory, self.walltime = cores, memory, walltime
        self.queue, self.account = queue, account
        self.workers_per_unit = workers_per_job
        self.threads_per_worker = max(1, cores // workers_per_job)
        self.job_name = job_name
        self.job_script_prologue = list(job_script_prologue or [])
        self.job_extra_directives = list(job_extra_directives or [])
        self.job_directives_skip = list(job_directives_skip or [])
        self.worker_options = dict(worker_options or {})
        self.python = python or sys.executable
        margin = lifetime_margin if lifetime_margin is not None else \
            min(300.0, max(10.0, 0.1 * self.walltime_seconds))
        self.lifetime = max(1.0, self.walltime_seconds - margin)
        self.retire_timeout = retire_timeout if retire_timeout is not None else \
            max(1.0, min(margin / 2, 120.0))
        self.max_submit_failures = max_submit_failures
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.token: str = token or new_token()
        self.id = uuid.uuid4().hex[:8]
        base = shared_directory or os.path.join(os.path.expanduser("~"), ".tasknest", "slurm")
        os.makedirs(base, mode=0o700, exist_ok=True)
        self.directory = tempfile.mkdtemp(prefix=f"cluster-{self.id}-", dir=base)
        self.token_file = os.path.join(self.directory, "token")
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.token)
        self.jobs: dict[str, str] = {}        # unit name -> its job id (array element)
        self._states: dict[str, str] = {}     # unit name -> last state squeue showed
        self.failures = 0
        self.paused_error: SubmissionError | None = None
        self.replaced = 0                     # jobs that ended and were submitted anew
        self.scheduler_proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        _clusters.add(self)
        try:
            self._start_scheduler(contact_address, interface)
            if n_workers:
                self.scale(n_workers)
            self._monitor = threading.Thread(target=self._watch, daemon=True,
                                             name="tasknest-slurm-monitor")
            self._monitor.start()
        except BaseException:
            self.close()
            raise
        self.status = "running"

    # -- the scheduler ---------------------------------------------------------------------
    def _start_scheduler(self, contact: str | None, interface: str | None) -> None:
        if contact is None and interface is not None:
            contact = _address_of_interface(interface)
        if contact is None:
            controller = _controller_host()
            contact = (address_towards(controller) if controller else "") or \
                address_towards(socket.gethostname()) or "127.0.0.1"
        env = dict(os.environ)
        env["TASKNEST_TOKEN"] = self.token
        env["TASKNEST_PARENT_PID"] = str(os.getpid())
        self.scheduler_proc = _spawn([sys.executable, "-m", "tasknest", "scheduler",
                                      "--host", "0.0.0.0", "--port", "0"], env)
        address = _first_line(self.scheduler_proc, self.timeout, "scheduler")
        port = address.rsplit(":", 1)[1]
        self.scheduler_address = f"tcp://{contact}:{port}"

    # -- the job script ---------------------------------------------------------------------
    def _directives(self) -> list[str]:
        d = [f"-J {self.job_name}",
             f"-o {self.directory}/%x-%A_%a.out", f"-e {self.directory}/%x-%A_%a.out",
             "-n 1", f"--cpus-per-task={self.cores}", f"-t {self.walltime}"]
        if self.memory:
            d.append(f"--mem={_slurm_memory(self.memory)}")
        if self.queue:
            d.append(f"-p {self.queue}")
        if self.account:
            d.append(f"-A {self.account}")
        d = [x for x in d if not any(skip in x for skip in self.job_directives_skip)]
        return [*d, *self.job_extra_directives]

    def _worker_command(self) -> str:
        opts = {"nthreads": self.threads_per_worker, "host": "0.0.0.0",
                "lifetime": f"{self.lifetime:g}", "retire-timeout": f"{self.retire_timeout:g}",
                **self.worker_options}
        args = [self.python, "-m", "tasknest", "worker", self.scheduler_address,
                "--token-file", self.token_file]
        for k, v in opts.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        return shlex.join(args)

    def job_script(self, names: list[str] | None = None) -> str:
        """The script ``sbatch`` gets for these units (one array element each)."""
        names = names or ["job-N"]
        lines = ["#!/usr/bin/env bash", *(f"#SBATCH {d}" for d in self._directives()),
                 "", *self.job_script_prologue, "",
                 "# which of this submission's units this array element is",
                 f"NAMES=({' '.join(shlex.quote(n) for n in names)})",
                 "NAME=${NAMES[${SLURM_ARRAY_TASK_ID:-0}]}",
                 "unset TASKNEST_PARENT_PID     # (the cluster's process is not on this node)",
                 "pids=()"]
        worker = self._worker_command()
        if self.workers_per_unit == 1:
            lines.append(f'{worker} --name "$NAME" & pids+=($!)')
        else:
            lines += [f"for i in $(seq 0 {self.workers_per_unit - 1}); do",
                      f'    {worker} --name "$NAME.$i" & pids+=($!)', "done"]
        lines += ["# (SLURM's end-of-job SIGTERM reaches the workers too: they retire)",
                  'wait "${pids[@]}"', ""]
        return "\n".join(lines)

    # -- submitting ---------------------------------------------------------------------------
    def _launch(self, names: list[str]) -> None:
        if self.paused_error is not None:
            for n in names:
                self._launched.remove(n)
            raise self.paused_error
        path = os.path.join(self.directory, f"submit-{names[0]}.sh")
        with open(path, "w") as f:
            f.write(self.job_script(names))
        cmd = ["sbatch", "--parsable", f"--array=0-{len(names) - 1}", path]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
            ok, message = out.returncode == 0, (out.stderr or out.stdout).strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            ok, message = False, str(exc)
            out = None
        job = out.stdout.strip().split(";")[0].strip() if ok and out is not None else ""
        if not ok or not job:
            for n in names:
                self._launched.remove(n)
            self.failures += 1
            error = SubmissionError(f"sbatch refused the job ({self.failures} failure(s) in "
                                    f"a row): {message or 'no job id'}")
            if self.failures >= self.max_submit_failures:
                self.paused_error = SubmissionError(
                    f"the cluster is paused after {self.failures} failed submissions in a "
                    f"row; the last: {message or 'no job id'}. Fix the cause, then call "
                    "cluster.resume()")
                raise self.paused_error from error
            raise error
        self.failures = 0
        for i, n in enumerate(names):
            self.jobs[n] = f"{job}_{i}"
            self._states[n] = "PENDING"

    def resume(self) -> None:
        """Submit again after a pause for repeated failures."""
        self.paused_error = None
        self.failures = 0

    def _reap(self, names: list[str]) -> None:
        ids = [self.jobs.pop(n) for n in names if n in self.jobs]
        for n in names:
            self._states.pop(n, None)
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=self.timeout)

    def _pending(self) -> list[str]:
        return [n for n in self._launched if self._states.get(n) == "PENDING"]

    # -- watching the queue ----------------------------------------------------------------------
    def _squeue(self) -> dict[str, str] | None:
        """{job id: state} of our jobs (array elements one per line); None if unknown."""
        if not self.jobs:
            return {}
        bases = sorted({j.split("_")[0] for j in self.jobs.values()})
        try:
            out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(bases)],
                                 capture_output=True, text=True, timeout=self.timeout)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if out.returncode != 0 and "Invalid job id" not in out.stderr:
            return None
        states = {}
        for line in out.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2:
                states[parts[0]] = parts[1]
        return states

    def poll(self) -> None:
        """One look at the queue: jobs that ended (walltime, failure, vanished) are
        forgotten and, unless the cluster is shrinking, submitted anew."""
        with self._lock:
            if self.status == "closed":
                return
            states = self._squeue()
            if states is None:
                return
            ended = []
            for unit, job in list(self.jobs.items()):
                state = states.get(job)
                if state is None or state in ENDED:
                    ended.append(unit)
                else:
                    self._states[unit] = state
            if not ended:
                return
            for unit in ended:
                self.jobs.pop(unit, None)
                self._states.pop(unit, None)
                if unit in self._launched:
                    self._launched.remove(unit)
            if self.paused_error is None:
                names = self._new_names(len(ended))
                self._launched.extend(names)
                try:
                    self._launch(names)
                    self.replaced += len(names)
                except SubmissionError:
                    pass      # (counted: enough of them pause the cluster)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.poll()
            except Exception:   # pragma: no cover - keep watching
                pass

    def logs(self) -> dict[str, str]:
        out = {}
        for unit, job in self.jobs.items():
            base, _, idx = job.partition("_")
            path = os.path.join(self.directory, f"{self.job_name}-{base}_{idx}.out")
            try:
                with open(path, errors="replace") as f:
                    out[unit] = f.read()
            except OSError:
                out[unit] = ""
        return out

    # -- closing -----------------------------------------------------------------------------------
    def close(self, timeout: float = 30.0) -> None:
        if self.status == "closed":
            return
        self._stop.set()
        self._close_common()
        with self._lock:
            self.status = "closed"
            ids = list(self.jobs.values())
            self.jobs.clear()
            self._launched.clear()
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=timeout)
            deadline = time.monotonic() + timeout
            bases = ",".join(sorted({j.split("_")[0] for j in ids}))
            while time.monotonic() < deadline:
                out = subprocess.run(["squeue", "-h", "-j", bases, "-o", "%i"],
                                     capture_output=True, text=True, timeout=timeout)
                if not out.stdout.strip():
                    break
                time.sleep(0.2)
        if self.scheduler_proc is not None and self.scheduler_proc.poll() is None:
            self.scheduler_proc.terminate()
            _stop(self.scheduler_proc, 10)
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(10)
        shutil.rmtree(self.directory, ignore_errors=True)


def _slurm_memory(memory: str) -> str:
    """'4GB' / '512MiB' / bytes -> SLURM's megabytes ('3815M')."""
    from ..sizes import parse_size
    return f"{max(1, math.ceil(parse_size(memory) / 2**20))}M"


@atexit.register
def _close_all() -> None:
    for c in list(_clusters):
        try:
            c.close(timeout=10)
        except Exception:
            pass
