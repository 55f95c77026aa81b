"""Results travel straight from the worker to the waiting client (one hop, not two
through the scheduler), and a lost worker connection loses no result."""
from __future__ import annotations

import pytest

from conftest import wait_for_file, wait_until


def inc(x: int) -> int:
    return x + 1


@pytest.mark.timeout(60)
def test_results_come_straight_from_workers(client):
    pushed = []
    peers = client._peers
    deliver = peers.on_push
    peers.on_push = lambda msg: (pushed.append(msg.key), deliver(msg))
    try:
        assert client.submit(inc, 0).result(timeout=10) == 1   # opens the streams
        wait_until(lambda: peers.comms, 10, message="a stream to a worker is open")
        futures = client.map(inc, range(50))
        assert client.gather(futures, timeout=20) == list(range(1, 51))
        assert set(pushed) & {f.key for f in futures}, "no result came straight from a worker"
    finally:
        peers.on_push = deliver


@pytest.mark.timeout(60)
def test_a_lost_worker_connection_loses_no_result(client, tmp_path):
    assert client.submit(inc, 0).result(timeout=10) == 1
    peers = client._peers
    wait_until(lambda: peers.comms, 10, message="a stream to a worker is open")
    address = next(iter(peers.comms))
    path = str(tmp_path / "go")
    f = client.submit(wait_for_file, path, workers=[address], pure=False)
    wait_until(lambda: any(f.key in keys for keys in client.processing().values()), 10,
               message="the task is running")
    client.loop.call_soon_threadsafe(lambda: [c.close("cut by the test")
                                              for c in list(peers.comms.values())])
    wait_until(lambda: address not in peers.comms, 10, message="the stream is closed")
    open(path, "w").close()
    assert f.result(timeout=20) in {w["pid"] for w in list(client.scheduler_info(-1)["workers"].values())}
    assert client.submit(inc, 41).result(timeout=10) == 42
