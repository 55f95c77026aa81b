"""SSHCluster: a scheduler on the first host, workers on the others, over OpenSSH.

    SSHCluster ──ssh hosts[0] remote.py scheduler──> address (first stdout line)
               ──ssh hosts[i] remote.py worker ADDRESS──> one worker per host (scale cycles)
    each ssh: stdin line 1 = the secret; stdin then stays open as the lifeline

Why the OpenSSH client rather than asyncssh: it is already on every machine that
can reach the hosts, and it honours the user's ``~/.ssh/config``, agent, jump
hosts, Kerberos and site policies with no code of ours; asyncssh would need all
of that configured again (and a dependency). The price is a process per
connection, which is small next to the remote process it runs.

The secret reaches the remote process on stdin, never on a command line. The
open stdin is also the lifeline: when this process ends (closing the cluster,
or being killed), ssh forwards EOF and the remote side stops its process.
"""
from __future__ import annotations

import atexit
import collections
import shlex
import subprocess
import sys
import threading
import time
import weakref
from typing import Any

from ..errors import CallerError
from ..protocol.auth import new_token
from .cluster import Cluster

_clusters: "weakref.WeakSet[SSHCluster]" = weakref.WeakSet()
LOG_LINES = 2000


class Remote:
    """One ssh session running one tasknest process; its output kept as its log."""

    def __init__(self, name: str, cmd: list[str], token: str, timeout: float) -> None:
        self.name = name
        self.log: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        assert self.proc.stdin is not None
        self.proc.stdin.write(token.encode() + b"\n")
        self.proc.stdin.flush()
        self._first = threading.Event()
        self.address = ""
        threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True).start()
        self.timeout = timeout

    def _read(self, stream: Any, is_stdout: bool) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            if is_stdout and not self._first.is_set():
                self.address = line.strip()
                self._first.set()
                continue
            self.log.append(line)
        if is_stdout:
            self._first.set()

    def wait_address(self) -> str:
        if not self._first.wait(self.timeout):
            self.stop(0)
            raise TimeoutError(f"{self.name} did not start within {self.timeout} s:\n"
                               + "\n".join(self.log))
        if not self.address:
            code = self.proc.wait()
            time.sleep(0.05)   # (let the stderr reader take the last lines; best effort)
            raise RuntimeError(f"{self.name} exited during start-up (ssh exit code {code}):\n"
                               + "\n".join(self.log))
        return self.address

    def cut_lifeline(self) -> None:
        stdin = self.proc.stdin
        if stdin is not None and not stdin.closed:
            try:
                stdin.close()
            except OSError:
                pass

    def stop(self, timeout: float) -> None:
        self.cut_lifeline()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _ssh_args(host: str, options: dict) -> list[str]:
    args = ["ssh", "-T", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=3"]
    unknown = set(options) - {"port", "username", "identity_file", "client_keys",
                              "known_hosts", "options", "config_file"}
    if unknown:
        raise CallerError(f"connect_options: unknown keys {sorted(unknown)} (port, username, "
                          "identity_file, known_hosts, options, config_file)")
    if options.get("config_file"):
        args += ["-F", str(options["config_file"])]
    if options.get("port"):
        args += ["-p", str(int(options["port"]))]
    if options.get("username"):
        args += ["-l", str(options["username"])]
    keys = options.get("identity_file") or options.get("client_keys") or []
    for key in [keys] if isinstance(keys, str) else keys:
        args += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
    if "known_hosts" in options:
        if options["known_hosts"] is None:      # (asyncssh's spelling of "do not check")
            args += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                     "-o", "LogLevel=ERROR"]
        else:
            args += ["-o", f"UserKnownHostsFile={options['known_hosts']}"]
    for k, v in (options.get("options") or {}).items():
        args += ["-o", f"{k}={v}"]
    return [*args, host]


def _cli_options(options: dict) -> list[str]:
    out: list[str] = []
    for k, v in options.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            out.append(flag)
        elif v is not False and v is not None:
            out += [flag, str(v)]
    return out


class SSHCluster(Cluster):
    """``hosts[0]`` runs the scheduler, each of the others a worker (``scale`` cycles
    through them). ``connect_options``: a dict for every host or a list of one per
    host (port, username, identity_file, known_hosts, options, config_file);
    ``scheduler_options`` / ``worker_options``: their command-line options
    (``{"port": 8786}``, ``{"nthreads": 4, "memory_limit": "4GB"}``);
    ``remote_python``: the Python on the hosts (one, or one per host);
    ``remote_env``: environment for the remote processes (not secret: it is on
    their command line)."""

    name_prefix = "ssh"

    def __init__(self, hosts: list[str], connect_options: dict | list[dict] | None = None,
                 scheduler_options: dict | None = None, worker_options: dict | None = None,
                 remote_python: str | list[str] | None = None,
                 remote_env: dict[str, str] | None = None, token: str | None = None,
                 timeout: float = 60.0, retire_timeout: float = 60.0) -> None:
        super().__init__()
        if isinstance(hosts, str) or not hosts or not all(isinstance(h, str) for h in hosts):
            raise CallerError("SSHCluster needs a list of host names: the scheduler's first")
        self.hosts = list(hosts)
        n = len(self.hosts)
        if isinstance(connect_options, list):
            if len(connect_options) != n:
                raise CallerError("connect_options: one dict per host, or one for all")
            self.connect_options = [dict(o) for o in connect_options]
        else:
            self.connect_options = [dict(connect_options or {}) for _ in range(n)]
        if isinstance(remote_python, list):
            if len(remote_python) != n:
                raise CallerError("remote_python: one per host, or one for all")
            self.remote_python = list(remote_python)
        else:
            self.remote_python = [remote_python or sys.executable] * n
        self.scheduler_options = {"host": "0.0.0.0", **(scheduler_options or {})}
        self.worker_options = {"host": "0.0.0.0", **(worker_options or {})}
        self.threads_per_worker = int(self.worker_options.get("nthreads", 1))
        self.worker_options.setdefault("nthreads", self.threads_per_worker)
        self.remote_env = dict(remote_env or {})
        self.token: str = token or new_token()
        self.timeout = timeout
        self.retire_timeout = retire_timeout
        self.scheduler: Remote | None = None
        self.remotes: dict[str, Remote] = {}
        self._host_of: dict[str, int] = {}
        _clusters.add(self)
        try:
            for i, options in enumerate(self.connect_options):
                _ssh_args(self.hosts[i], options)     # (bad options fail before any ssh)
            self._start_scheduler()
            names = self._new_names(max(0, n - 1))
            self._launched.extend(names)
            self._launch(names)
        except BaseException:
            self.close()
            raise
        self.status = "running"

    def _command(self, i: int, role: str, args: list[str]) -> list[str]:
        remote = [self.remote_python[i], "-m", "tasknest.deploy.remote", role, *args]
        if self.remote_env:
            remote = ["env", *(f"{k}={v}" for k, v in self.remote_env.items()), *remote]
        return [*_ssh_args(self.hosts[i], self.connect_options[i]), shlex.join(remote)]

    def _start_scheduler(self) -> None:
        args = _cli_options({"port": 0, **self.scheduler_options})
        self.scheduler = Remote("scheduler", self._command(0, "scheduler", args), self.token,
                                self.timeout)
        address = self.scheduler.wait_address()
        host = address.split("://", 1)[-1].rsplit(":", 1)[0]
        if host in ("0.0.0.0", "::", "[::]", ""):     # listening everywhere: name the host
            address = address.replace(f"//{host}:", f"//{self.hosts[0]}:")
        self.scheduler_address = address

    def _launch(self, names: list[str]) -> None:
        started = []
        workers = len(self.hosts) - 1 or 1
        for name in names:
            i = 1 + int(name.rsplit("-", 1)[1]) % workers if len(self.hosts) > 1 else 0
            args = [self.scheduler_address, "--name", name,
                    *_cli_options(self.worker_options)]
            self._host_of[name] = i
            self.remotes[name] = Remote(name, self._command(i, "worker", args), self.token,
                                        self.timeout)
            started.append(self.remotes[name])
        for r in started:
            r.wait_address()

    def _reap(self, names: list[str]) -> None:
        gone = [self.remotes.pop(n) for n in names if n in self.remotes]
        for r in gone:
            r.cut_lifeline()
        for r in gone:
            r.stop(self.timeout)

    def logs(self) -> dict[str, str]:
        out = {"scheduler": "\n".join(self.scheduler.log)} if self.scheduler else {}
        out.update({n: "\n".join(r.log) for n, r in self.remotes.items()})
        return out

    def close(self, timeout: float = 10.0) -> None:
        if self.status == "closed":
            return
        self._close_common()
        self.status = "closed"
        remotes = list(self.remotes.values()) + ([self.scheduler] if self.scheduler else [])
        self.remotes.clear()
        for r in remotes:
            r.cut_lifeline()
        deadline = time.monotonic() + timeout
        for r in remotes:
            r.stop(max(0.1, deadline - time.monotonic()))


@atexit.register
def _close_all() -> None:
    for c in list(_clusters):
        try:
            c.close(timeout=3)
        except Exception:
            pass
