"""Several hosts on one machine: network namespaces joined by a bridge; a link is cut mid-run.

    host (this test: the client) ── veth ──┐
    ns "sched": scheduler ──────── veth ───┤ bridge, in a namespace of its own
    ns "a": worker A ───────────── veth ───┤
    ns "b": worker B ───────────── veth ───┘

Needs root and iproute2 (``ip``); CI runs as root. Every name carries a random
suffix and every address is in 10.231.X.0/24 with a random X, so runs do not
collide; the namespaces (and with them every veth) are removed even when the
test fails.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tasknest import Client

from conftest import wait_until
from netns import Network, missing


if missing() and os.environ.get("CI") == "true":     # in CI a missing component fails
    def test_network_namespaces_are_available() -> None:
        pytest.fail(f"the multi-host tests cannot run: {missing()}")
else:
    pytestmark = pytest.mark.skipif(bool(missing()), reason=missing())


@pytest.fixture
def network():
    net = Network(["sched", "a", "b"])
    try:
        yield net.up()
    finally:
        net.down()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert net.tag not in left, f"namespaces left behind: {left}"


class Procs:
    def __init__(self, network: Network, token: str) -> None:
        self.network = network
        self.env = dict(os.environ, TASKNEST_TOKEN=token, PYTHONPATH=os.pathsep.join(
            p for p in sys.path if p and os.path.isdir(p)))
        self.env.pop("TASKNEST_PARENT_PID", None)
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, *args: str) -> str:
        cmd = ["ip", "netns", "exec", self.network.ns[name], sys.executable, "-m", "tasknest",
               *args]
        proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        line = proc.stdout.readline().decode().strip()
        assert line, f"{name}: {' '.join(args)} exited during start-up with code {proc.wait()}"
        return line

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def slow_inc(x):
    time.sleep(0.05)
    return x + 1, b"." * 100_000    # too big to travel inline: fetched from the worker


def total(pairs):
    return sum(x for x, _ in pairs)


@pytest.mark.timeout(90)
def test_cut_link_mid_run_still_gives_the_complete_result(network):
    token = "netns-test-token"
    procs = Procs(network, token)
    try:
        sched = procs.start("sched", "scheduler", "--host", network.addr["sched"],
                            "--heartbeat-timeout", "3")
        workers = {n: procs.start(n, "worker", sched, "--host", network.addr[n],
                                  "--no-nanny") for n in ("a", "b")}
        with Client(sched, token=token, timeout=20) as client:
            client.wait_for_workers(2, timeout=30)
            incs = client.map(slow_inc, range(120))
            result = client.submit(total, incs)
            wait_until(lambda: sum(f.done() for f in incs) >= 30, 30,
                       message="a quarter of the tasks finished")
            held_by_a = [k for k, who in client.who_has(incs).items() if workers["a"] in who]
            network.cut("a")
            t0 = time.monotonic()
            assert result.result(timeout=60) == sum(range(1, 121))
            print(f"\ncut worker A holding {len(held_by_a)} results; the sum came "
                  f"{time.monotonic() - t0:.1f} s later")
            assert held_by_a, "worker A held results when its link went down"
            assert [w["address"] for w in list(client.scheduler_info(-1)["workers"].values())] == [workers["b"]]
    finally:
        procs.stop()


def block(kind: str, n: int) -> bytes:
    return bytes(n) if kind == "zeros" else os.urandom(n)


def digest(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()


@pytest.mark.timeout(90)
def test_values_between_hosts_go_compressed_where_it_pays(network):
    """Between namespaces (hosts, to tasknest) the links negotiate lz4: a compressible and
    an incompressible value arrive whole worker to worker and worker to client."""
    pytest.importorskip("lz4.block")
    token = "netns-test-token"
    procs = Procs(network, token)
    try:
        sched = procs.start("sched", "scheduler", "--host", network.addr["sched"])
        workers = {n: procs.start(n, "worker", sched, "--host", network.addr[n],
                                  "--no-nanny") for n in ("a", "b")}
        with Client(sched, token=token, timeout=20) as client:
            client.wait_for_workers(2, timeout=30)
            for kind in ("zeros", "noise"):
                made = client.submit(block, kind, 8 << 20, workers=[workers["a"]], pure=False)
                there = client.submit(digest, made, workers=[workers["b"]], pure=False)
                here = made.result(timeout=60)
                assert len(here) == 8 << 20 and there.result(timeout=60) == digest(here)
            comm = client._peers.comms[workers["a"]]
            assert comm.codec == "lz4" and comm.codecs_offered == ["lz4"]
    finally:
        procs.stop()
