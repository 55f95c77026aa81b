"""Placed tasks: a client sends a dependency-free task straight to a worker it is
connected to, and the scheduler hears of it afterwards. Real processes and sockets:
the answers, the scheduler's view right after, failures, and lost connections."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import psutil
import pytest

from tasknest import Client, LocalCluster

from conftest import wait_for_file, wait_until


def inc(x: int) -> int:
    return x + 1


def boom(x: int) -> int:
    raise ValueError(f"boom {x}")


def counting_places(client: Client) -> list[str]:
    """The keys this client places from now on (a wrapper around its Placing.place)."""
    placed: list[str] = []
    original = client._placing.place

    def place(key, *args, **kwargs):
        placed.append(key)
        return original(key, *args, **kwargs)
    client._placing.place = place  # type: ignore[method-assign]
    return placed


def open_lanes(client: Client, n: int = 2) -> None:
    """Run tasks until the client has a connection to ``n`` workers (a client connects
    to a worker once a result of its comes through the scheduler)."""
    for i in range(100):
        if len(client._peers.comms) >= n:
            return
        xs = range(-1000 * (i + 1), -1000 * (i + 1) + 20)
        assert client.gather(client.map(inc, xs), timeout=10) == [x + 1 for x in xs]
    raise AssertionError(f"the client did not connect to {n} workers")


@pytest.mark.timeout(60)
def test_round_trips_go_straight_to_a_worker_and_the_scheduler_knows_right_after(client):
    open_lanes(client, 1)
    placed = counting_places(client)
    for i in range(50):
        f = client.submit(inc, i)
        assert f.result(timeout=10) == i + 1
        holders = client.who_has(f)[f.key]          # where it is, even straight after
        assert len(holders) == 1 and f.key in client.has_what()[holders[0]]
    assert len(placed) == 50


@pytest.mark.timeout(60)
def test_a_placed_task_that_fails_raises_its_own_error_and_the_next_one_runs(client):
    open_lanes(client, 1)
    placed = counting_places(client)
    f = client.submit(boom, 7)
    with pytest.raises(ValueError, match="boom 7"):
        f.result(timeout=10)
    assert f.status == "error" and placed == [f.key]
    assert client.submit(inc, 41).result(timeout=10) == 42


@pytest.mark.timeout(60)
def test_placed_and_scheduled_submissions_of_one_key_agree(client):
    """Another client submits the same pure call through the scheduler meanwhile."""
    open_lanes(client, 2)
    with Client(client.scheduler_address, token=client._token) as other:
        for i in range(30):
            a = client.submit(inc, 10_000 + i)
            b = other.submit(inc, 10_000 + i)
            assert a.key == b.key
            assert (a.result(timeout=10), b.result(timeout=10)) == (10_001 + i, 10_001 + i)
            del a, b


@pytest.mark.timeout(60)
def test_a_broken_lane_loses_no_placed_task(client, tmp_path):
    open_lanes(client, 2)
    placed = counting_places(client)
    gate = str(tmp_path / "go")
    f = client.submit(wait_for_file, gate, pure=False)
    assert placed == [f.key]
    peers = client._peers
    client.loop.call_soon_threadsafe(lambda: [c.transport.abort()   # a reset, not a goodbye
                                              for c in list(peers.comms.values())])
    wait_until(lambda: not peers.comms, 10, message="the lanes are down")
    open(gate, "w").close()
    assert f.result(timeout=20) in {p.pid for w in _workers(client) for p in [w]}
    assert client.submit(inc, 1).result(timeout=10) == 2


def _workers(client: Client) -> list[psutil.Process]:
    return [psutil.Process(w["pid"]) for w in list(client.scheduler_info(-1)["workers"].values())]


@pytest.mark.timeout(120)
def test_a_task_placed_on_a_worker_that_dies_runs_again_elsewhere(tmp_path):
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
        open_lanes(client, 2)
        placed = counting_places(client)
        gate = str(tmp_path / "go")
        f = client.submit(wait_for_file, gate, pure=False)
        assert placed == [f.key]
        victim = next(p for p in _workers(client)
                      if f.key in client.processing().get(
                          next(w["address"] for w in list(client.scheduler_info(-1)["workers"].values())
                               if w["pid"] == p.pid), []))
        victim.kill()
        wait_until(lambda: victim.pid not in {w["pid"] for w in list(client.scheduler_info(-1)["workers"].values())}, 20,
                   message="the scheduler notices the dead worker")
        open(gate, "w").close()
        assert f.result(timeout=30) != victim.pid
        assert client.submit(inc, 1).result(timeout=10) == 2


CLIENT_THAT_DIES = textwrap.dedent("""
    import os, sys
    from tasknest import Client
    sys.path[:0] = {paths!r}
    from conftest import wait_for_file
    from test_placed import inc
    with Client({address!r}, token={token!r}) as c:
        while len(c._peers.comms) < 2:
            c.gather(c.map(inc, range(20), pure=False))
        f = c.submit(wait_for_file, {gate!r}, pure=False)
        assert c._placing.placed, "the task was not placed"
        print("placed", flush=True)
        os._exit(0)              # gone, with its placed task running and unconfirmed
""")


@pytest.mark.timeout(60)
def test_a_client_that_dies_with_a_placed_task_leaves_the_cluster_clean(tmp_path):
    # workers in this process, so that their state machines can be looked at
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False) as cluster:
        gate = str(tmp_path / "go")
        here = os.path.dirname(os.path.abspath(__file__))     # test_placed; above it, conftest
        code = CLIENT_THAT_DIES.format(paths=[here, os.path.dirname(here)],
                                       address=cluster.scheduler_address, token=cluster.token,
                                       gate=gate)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=40)
        assert "placed" in out.stdout, out.stderr[-2000:]
        open(gate, "w").close()
        workers = [w for w in cluster._inproc if hasattr(w, "pool")]

        def clean() -> bool:
            return all(not w.state.tasks and not w.state.placing.places and not w.state.placing.early
                       and not w.data for w in workers)
        wait_until(clean, 20, message="the workers drop what the dead client placed")
        with Client(cluster) as c:
            assert not any(c.has_what().values()) and not any(c.processing().values())
            assert c.submit(inc, 1).result(timeout=10) == 2
