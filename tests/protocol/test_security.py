"""Only peers holding the shared secret get in, and nothing they send is unpickled before.

The proof that nothing is read: every refused peer sends a function, arguments and
scattered data whose unpickling would create a directory. An honest peer sending
the same bytes does create it (so the payload works), a refused one never does,
and the cluster keeps running tasks for everyone else.
"""
from __future__ import annotations

import inspect
import operator
import subprocess
import sys

import pytest

from conftest import wait_until
from rawpeer import ProcCluster, RawPeer, child_env, evil_frames, register_client
from tasknest import Client, LocalCluster
from tasknest.deploy.cli import _is_loopback
from tasknest.deploy.local import _first_line
from tasknest.errors import AuthenticationError, CallerError
from tasknest.protocol import auth

TOKEN = auth.new_token()


@pytest.fixture(scope="module")
def procs(tmp_path_factory):
    with ProcCluster(tmp_path_factory.mktemp("logs"), TOKEN, n_workers=1,
                     scheduler_args=("--max-frame-size", "1MiB"),
                     worker_args=("--max-frame-size", "1MiB")) as pc:
        yield pc


def runs_tasks(address: str, token: str | None = TOKEN) -> bool:
    with Client(address, token=token, timeout=10) as c:
        return c.submit(operator.add, 20, 22, pure=False).result(timeout=20) == 42


@pytest.mark.timeout(40)
def test_the_planted_payload_works_for_an_authenticated_peer(procs, tmp_path):
    # control: the same bytes the refused peers send do create the directory when let in
    target = tmp_path / "created-by-unpickling"
    peer = RawPeer(procs.address)
    try:
        assert peer.handshake(TOKEN.encode())
        for data in evil_frames(target):
            peer.send(data)
        wait_until(target.exists, 20, message="the worker unpickles an authenticated payload")
    finally:
        peer.close()
    assert procs.alive()


def _attack(kind: str, address: str, frames: list[bytes]) -> RawPeer:
    if kind == "replay":
        # an eavesdropper recorded an honest handshake; a fresh server nonce voids it
        honest = RawPeer(address)
        assert honest.handshake(TOKEN.encode())
        honest.close()
        peer = RawPeer(address)
        peer.read_challenge()
        peer.send(honest.response)
    else:
        peer = RawPeer(address)
        if kind == "no-handshake":
            pass                                   # straight to frames
        else:
            key = b"" if kind == "no-secret" else b"a-guessed-secret"
            assert not peer.handshake(key), f"the server confirmed a peer with {kind}"
    try:
        for data in frames:
            peer.send(data)
    except OSError:
        pass                                       # already closed on us: fine
    return peer


@pytest.mark.timeout(40)
@pytest.mark.parametrize("target", ["scheduler", "worker"])
@pytest.mark.parametrize("kind", ["no-handshake", "no-secret", "wrong-secret", "replay"])
def test_unauthenticated_peers_are_refused_before_any_pickle_is_read(procs, tmp_path, kind,
                                                                     target):
    evil = tmp_path / "must-not-exist"
    address = procs.address if target == "scheduler" else procs.worker_addresses[0]
    peer = _attack(kind, address, evil_frames(evil))
    try:
        sent = peer.closed_by_server()
        assert sent is not None, "the server kept the connection of an unauthenticated peer"
        # never a confirmation or a message: at most the greeting we did not read
        assert len(sent) <= (auth.CHALLENGE_LEN if kind == "no-handshake" else 0), sent
    finally:
        peer.close()
    assert runs_tasks(procs.address)           # everyone else is still served ...
    assert not evil.exists()                   # ... and the planted pickle was never read
    assert procs.alive()
    which = "scheduler" if target == "scheduler" else "worker-0"
    wait_until(lambda: "authentication failed" in procs.log(which), 10,
               message=f"the {target} logs why it refused the peer")
    assert "Traceback" not in procs.log(which)


@pytest.mark.timeout(30)
def test_client_with_wrong_or_missing_token_gets_a_clear_error(procs, monkeypatch):
    monkeypatch.delenv("TASKNEST_TOKEN", raising=False)
    with pytest.raises(AuthenticationError, match="handshake|token"):
        Client(procs.address, token="not-the-token", timeout=5)
    with pytest.raises(AuthenticationError, match="handshake|token"):
        Client(procs.address, timeout=5)
    assert runs_tasks(procs.address)


@pytest.mark.timeout(30)
def test_worker_with_wrong_token_exits_with_a_message(procs):
    env = child_env("wrong-token")
    out = subprocess.run([sys.executable, "-m", "tasknest", "worker", procs.address,
                          "--no-nanny", "--reconnect-timeout", "5"], env=env,
                         capture_output=True, text=True, timeout=25)
    assert out.returncode == 2, out.stderr
    assert "handshake" in out.stderr and procs.address in out.stderr


@pytest.mark.timeout(30)
def test_oversized_frames_close_only_that_connection(procs):
    for prefix in (2 << 20, (1 << 64) - 1):
        peer = RawPeer(procs.address)
        try:
            assert peer.handshake(TOKEN.encode())
            register_client(peer)
            peer.send(prefix.to_bytes(8, "little"))
            assert peer.closed_by_server() is not None
        finally:
            peer.close()
    wait_until(lambda: "exceeds the limit of 1048576" in procs.log(), 10,
               message="the scheduler logs the oversized frame")
    assert runs_tasks(procs.address)


@pytest.mark.timeout(30)
def test_a_worker_refuses_oversized_frames_from_peers(procs):
    peer = RawPeer(procs.worker_addresses[0])
    try:
        assert peer.handshake(TOKEN.encode())
        peer.send((2 << 20).to_bytes(8, "little"))
        assert peer.closed_by_server() is not None
    finally:
        peer.close()
    wait_until(lambda: "exceeds the limit of 1048576" in procs.log("worker-0"), 10,
               message="the worker logs the oversized frame")
    assert runs_tasks(procs.address)


@pytest.mark.timeout(40)
def test_scheduler_generates_a_token_and_says_how_to_pass_it(tmp_path):
    err = tmp_path / "scheduler.log"
    with open(err, "wb") as f:
        sched = subprocess.Popen([sys.executable, "-m", "tasknest", "scheduler", "--port", "0"],
                                 env=child_env(None), stdout=subprocess.PIPE, stderr=f,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    worker = None
    try:
        address = _first_line(sched, 30, "scheduler")
        assert address.startswith("tcp://127.0.0.1:")          # loopback unless told
        text = wait_until(lambda: "token" in err.read_text() and err.read_text(), 10,
                          message="the scheduler prints its generated token")
        assert "--token" in text and "TASKNEST_TOKEN" in text and "token file" in text
        token = text.strip().splitlines()[-1].strip()
        assert len(token) >= 32
        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        worker = subprocess.Popen([sys.executable, "-m", "tasknest", "worker", address,
                                   "--no-nanny", "--token-file", str(token_file)],
                                  env=child_env(None), stdout=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        assert _first_line(worker, 30, "worker").startswith("tcp://127.0.0.1:")
        assert runs_tasks(address, token)
    finally:
        for p in (worker, sched):
            if p is not None:
                p.terminate()
                p.wait(10)


@pytest.mark.timeout(40)
def test_insecure_mode_must_be_chosen_on_both_ends(tmp_path, monkeypatch):
    monkeypatch.delenv("TASKNEST_TOKEN", raising=False)
    with ProcCluster(tmp_path, None, n_workers=1, scheduler_args=("--insecure",),
                     worker_args=("--insecure",)) as pc:
        assert runs_tasks(pc.address, token=None)
        with pytest.raises(AuthenticationError):
            Client(pc.address, token="a-token-the-scheduler-does-not-have", timeout=5)
        assert "WITHOUT authentication" not in pc.log()      # loopback: no warning needed


@pytest.mark.timeout(30)
def test_scheduler_refuses_an_empty_token_rather_than_running_open(tmp_path):
    empty = tmp_path / "token"
    empty.write_text("\n")
    out = subprocess.run([sys.executable, "-m", "tasknest", "scheduler", "--port", "0",
                          "--token-file", str(empty)], env=child_env(None),
                         capture_output=True, text=True, timeout=25)
    assert out.returncode != 0
    assert "empty" in out.stderr and str(empty) in out.stderr


def test_loopback_detection_and_defaults():
    assert _is_loopback("127.0.0.1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0")
    assert inspect.signature(LocalCluster).parameters["host"].default == "127.0.0.1"


@pytest.mark.timeout(30)
def test_local_cluster_max_frame_size():
    with pytest.raises(CallerError, match="max_frame_size must be a positive size"):
        LocalCluster(n_workers=0, processes=False, max_frame_size="lots")
    with LocalCluster(n_workers=0, processes=False, max_frame_size="64KiB") as lc:
        peer = RawPeer(lc.scheduler_address)
        try:
            assert peer.handshake(lc.token.encode())
            register_client(peer)
            peer.send((64 * 1024 + 1).to_bytes(8, "little"))
            assert peer.closed_by_server() is not None
        finally:
            peer.close()
        with Client(lc) as c:          # others are still served
            assert list(c.scheduler_info(-1)["workers"].values()) == []


def test_each_local_cluster_makes_its_own_secret():
    a = LocalCluster(n_workers=0, processes=False)
    b = LocalCluster(n_workers=0, processes=False)
    try:
        assert a.token != b.token and len(a.token) >= 32
        # a client of one cluster cannot join the other
        with pytest.raises(AuthenticationError):
            Client(b.scheduler_address, token=a.token, timeout=5)
    finally:
        a.close()
        b.close()


def test_a_generated_token_never_reads_as_an_option():
    """`tasknest worker ADDRESS --token TOKEN` must accept any token we print: one in 64
    url-safe tokens would start with "-" and argparse would take it for an option."""
    from tasknest.protocol.auth import new_token
    tokens = [new_token() for _ in range(3000)]
    assert not [t for t in tokens if t.startswith("-")]
    assert len(set(tokens)) == len(tokens)


@pytest.mark.timeout(10)
def test_a_server_without_a_certificate_is_a_caller_error():
    from tasknest import TasknestError
    from tasknest.deploy.security import Security
    with pytest.raises(CallerError, match="tls_cert") as info:
        Security().server_context()
    assert isinstance(info.value, TasknestError)
