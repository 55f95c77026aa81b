"""Test helpers that speak the wire protocol by hand, and a cluster whose logs we can read.

``RawPeer`` is a blocking socket that can run the handshake honestly, with a wrong
key, or not at all, and then send any bytes: what an attacker or a broken peer
would do. ``ProcCluster`` starts ``python -m tasknest scheduler|worker`` with
stderr captured to files, so tests can check what the servers logged and that
they are still alive.
"""
from __future__ import annotations

import os
import pickle
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack

from tasknest.deploy.local import _first_line
from tasknest.protocol import auth
from tasknest.protocol.comm import parse_address


class RawPeer:
    """One connection driven byte by byte."""

    def __init__(self, address: str, timeout: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        _, host, port = parse_address(address)
        sock = socket.create_connection((host, port), timeout=timeout)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.nonce_s = b""
        self.response = b""

    # -- handshake ------------------------------------------------------------------------
    def read_challenge(self) -> bytes:
        data = self.recv_exactly(auth.CHALLENGE_LEN)
        self.nonce_s = data[len(auth.MAGIC) + 1:]
        return data

    def handshake(self, key: bytes) -> bool:
        """Answer the server's challenge with ``key``; True if the server confirmed."""
        reply = auth.respond(key, self.read_challenge())
        assert reply is not None, "the server's greeting is not a tasknest challenge"
        nonce_c, self.response = reply
        self.sock.sendall(self.response)
        try:
            confirm = self.recv_exactly(auth.CONFIRM_LEN)
        except ConnectionError:
            return False
        return auth.verify_confirm(key, self.nonce_s, nonce_c, confirm)

    # -- bytes and frames -----------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_msgs(self, msgs: list) -> None:
        self.send(frame(msgs))

    def recv_exactly(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"closed by the server after {len(buf)} of {n} bytes")
            buf += chunk
        return buf

    def recv_msgs(self) -> list:
        n = int.from_bytes(self.recv_exactly(8), "little")
        return msgpack.unpackb(self.recv_exactly(n), raw=False)

    def recv_until(self, op: str) -> list:
        while True:
            for msg in self.recv_msgs():
                if msg[0] == op:
                    return msg

    def closed_by_server(self, timeout: float = 5.0) -> bytes | None:
        """Everything the server sent until it closed, or None if it stayed open."""
        self.sock.settimeout(timeout)
        got = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                return got
            except socket.timeout:
                return None
            if not chunk:
                return got
            got += chunk

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def frame(msgs: list) -> bytes:
    payload = msgpack.packb(msgs, use_bin_type=True)
    return len(payload).to_bytes(8, "little") + payload


class MakeDir:
    """Unpickling this creates a directory: proof that a pickle was read."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.mkdir, (self.path,))


def planted_pickle(path: Path) -> bytes:
    return pickle.dumps(MakeDir(str(path)), protocol=5)


def register_client(peer: RawPeer, name: str = "raw") -> str:
    cid = f"c-{name}-{os.urandom(6).hex()}"
    peer.send_msgs([["register-client", cid, "0"]])
    welcome = peer.recv_until("welcome")
    assert welcome[1] == cid
    return cid


def evil_frames(path: Path, key: str = "evil") -> list[bytes]:
    """A registration then a function, arguments and scattered data that each unpickle
    to something creating ``path``."""
    evil = planted_pickle(path)
    return [frame([["register-client", f"c-evil-{os.urandom(4).hex()}", "0"]]),
            frame([["define-func", 0, evil],
                   ["submit", key, 0, evil, [], [0, 0, 0], 0, None, None, False],
                   ["scatter", 1, [key + "-data"], [[evil]], False, None]])]


# -- a cluster of real processes with readable logs --------------------------------------------
def child_env(token: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TASKNEST_TOKEN", None)
    if token is not None:
        env["TASKNEST_TOKEN"] = token
    env["TASKNEST_PARENT_PID"] = str(os.getpid())
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


class ProcCluster:
    """``tasknest scheduler`` and ``tasknest worker`` subprocesses, stderr kept in files."""

    def __init__(self, logdir: Path, token: str | None, n_workers: int = 1,
                 scheduler_args: tuple[str, ...] = (), worker_args: tuple[str, ...] = (),
                 timeout: float = 30.0) -> None:
        self.logdir = logdir
        self.token = token
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.timeout = timeout
        try:
            self.scheduler = self._spawn("scheduler", ["scheduler", "--port", "0",
                                                       *scheduler_args])
            self.address = _first_line(self.scheduler, timeout, "scheduler")
            self.workers = [self._spawn(f"worker-{i}", ["worker", self.address, "--no-nanny",
                                                        "--name", f"w{i}", *worker_args])
                            for i in range(n_workers)]
            self.worker_addresses = [_first_line(w, timeout, "worker") for w in self.workers]
        except BaseException:
            self.close()
            raise

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = self.logdir / f"{name}.log"
        self.logs.append(log)
        with open(log, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "tasknest", *args],
                                    env=child_env(self.token), stdout=subprocess.PIPE,
                                    stderr=err, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc

    def log(self, which: str = "scheduler") -> str:
        return (self.logdir / f"{which}.log").read_text(errors="replace")

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def __enter__(self) -> "ProcCluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
