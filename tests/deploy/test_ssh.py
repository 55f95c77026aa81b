"""SSHCluster on real OpenSSH servers: one per "host", each in its own network
namespace (scheduler host and two worker hosts joined by a bridge), throwaway keys.

Runs the seeds' examples and a nested Fibonacci tree; checks the secret is on no
process's command line; kills the process that made the cluster and checks that
nothing of the cluster survives it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid

import pytest

from tasknest import Client, SSHCluster
from tasknest.demo import expected, seed_options

import netns
import sshd
from conftest import wait_until
from nested_tasks import fib_tasks

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)                       # the shared helpers (nested_tasks, sshd)
SRC = os.path.join(os.path.dirname(TESTS), "src")

_missing = sshd.missing() or netns.missing()
if _missing and os.environ.get("CI") == "true":
    pytestmark = pytest.mark.timeout(10)     # in CI a missing component is a failure

    def test_ssh_components_are_installed():
        pytest.fail(f"SSH tests cannot run: {_missing}")
else:
    pytestmark = pytest.mark.skipif(bool(_missing), reason=_missing)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    keys = sshd.Keys(str(tmp_path_factory.mktemp("ssh")))
    net = netns.Network(["sched", "a", "b"])
    servers = []
    try:
        net.up()
        for name in ("sched", "a", "b"):
            servers.append(sshd.Sshd(keys, net.addr[name], 22, net.ns[name]))
        for s in servers:
            s.wait_ready(keys, [])
        yield net, keys
    finally:
        for s in servers:
            s.stop()
        net.down()


def options(net, keys, tag):
    return dict(
        hosts=[net.addr["sched"], net.addr["a"], net.addr["b"]],
        connect_options={"port": 22, "identity_file": keys.user_key, "known_hosts": None},
        worker_options={"nthreads": 2}, remote_python=sys.executable,
        remote_env={"PYTHONPATH": os.pathsep.join([SRC, TESTS, HERE]), "TASKNEST_VALIDATE": "1",
                    "TASKNEST_TEST_TAG": tag})


def tagged(tag: str) -> list[int]:
    """Processes whose environment carries this tag (the cluster's, on every host)."""
    found = []
    needle = f"TASKNEST_TEST_TAG={tag}".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            pass
    return found


def command_lines_with(secret: str) -> list[str]:
    hits = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                line = f.read()
        except OSError:
            continue
        if secret.encode() in line:
            shown = line.replace(b"\0", b" ").decode(errors="replace")
            hits.append(f"{pid}: {shown}")
    return hits


@pytest.mark.timeout(90)
def test_ssh_cluster_runs_the_seeds_and_a_nested_tree(hosts):
    net, keys = hosts
    tag = uuid.uuid4().hex
    with SSHCluster(**options(net, keys, tag)) as cluster, Client(cluster) as c:
        c.wait_for_workers(2, timeout=30)
        workers = c.scheduler_info(-1)["workers"]
        assert sorted(a.split("//")[1].split(":")[0] for a in workers) == \
            sorted([net.addr["a"], net.addr["b"]])            # one worker on each host
        assert cluster.scheduler_address.startswith(f"tcp://{net.addr['sched']}:")
        uri = "ssh://seed"
        assert set(seed_options(c, uri).values()) == {expected(uri)}
        assert c.submit(fib_tasks, 12, pure=False).result(timeout=60) == 144
        assert tagged(tag), "the cluster's processes carry the tag"
        assert command_lines_with(cluster.token) == []
        cluster.scale(1)                                   # graceful, through retirement
        assert len(c.scheduler_info(-1)["workers"]) == 1
        assert set(cluster.logs()) == {"scheduler", *cluster.plan}
    wait_until(lambda: not tagged(tag), 30, message="every remote process ends with close()")


@pytest.mark.timeout(90)
def test_killing_the_client_process_leaves_no_remote_process(hosts, tmp_path):
    net, keys = hosts
    tag = uuid.uuid4().hex
    script = tmp_path / "make_cluster.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path[:0] = {[SRC, TESTS, HERE]!r}
        from tasknest import Client, SSHCluster
        from test_ssh import options
        from netns import Network
        import sshd
        net = Network.__new__(Network)
        net.addr = {net.addr!r}
        keys = sshd.Keys.__new__(sshd.Keys)
        keys.user_key = {keys.user_key!r}
        cluster = SSHCluster(**options(net, keys, {tag!r}))
        c = Client(cluster)
        c.wait_for_workers(2, timeout=30)
        assert c.submit(sum, [1, 2]).result() == 3
        print("ready", flush=True)
        sys.stdin.read()
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, cwd=TESTS)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        assert len(tagged(tag)) >= 6     # scheduler, 2 nannies, 2 workers, their sessions
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        wait_until(lambda: not tagged(tag), 30,
                   message="no process of the cluster survives its maker")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in tagged(tag):
            os.kill(pid, signal.SIGKILL)
