"""The scheduler is SIGKILLed mid-computation and comes back: results exact, nothing
that had finished runs again, no worker restarts, no future errs."""
import os
import signal
import time

import pytest

from tasknest import Client, LocalCluster, worker_client
from conftest import wait_until


def logged_inc(x, path):
    time.sleep(0.001)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{x}\n".encode())
    finally:
        os.close(fd)
    return x + 1


def fib(n, path):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{n}\n".encode())
    finally:
        os.close(fd)
    if n < 2:
        return n
    with worker_client() as c:
        a, b = c.gather([c.submit(fib, n - 1, path, pure=False),
                         c.submit(fib, n - 2, path, pure=False)])
    return a + b


def kill_scheduler(cluster):
    before = cluster.scheduler_restarts
    os.kill(cluster.scheduler_proc.pid, signal.SIGKILL)
    wait_until(lambda: cluster.scheduler_restarts > before, 30, message="restarted")


@pytest.mark.timeout(120)
def test_a_map_survives_scheduler_kills_and_no_finished_task_runs_again(tmp_path):
    path = str(tmp_path / "runs")
    n = 2000
    with LocalCluster(n_workers=2, threads_per_worker=1, recovery_wait=10) as cluster:
        pids = [p.pid for p in cluster.worker_procs]
        with Client(cluster) as client:
            futures = client.map(logged_inc, range(n), path=path)
            for _ in range(3):
                wait_until(lambda: os.path.exists(path), 30)
                size = os.path.getsize(path)
                kill_scheduler(cluster)
                wait_until(lambda: os.path.getsize(path) > size
                           or all(f.done() for f in futures), 30,
                           message="work went on after the restart")
            assert client.gather(futures) == [x + 1 for x in range(n)]
        with open(path) as f:
            lines = f.read().split()
        assert sorted(map(int, lines)) == list(range(n)), "a task ran twice or never"
        assert [p.pid for p in cluster.worker_procs] == pids
        assert all(p.poll() is None for p in cluster.worker_procs)


@pytest.mark.timeout(120)
def test_a_nested_tree_survives_scheduler_kills(tmp_path):
    path = str(tmp_path / "runs")
    with LocalCluster(n_workers=2, threads_per_worker=2, recovery_wait=10) as cluster:
        with Client(cluster) as client:
            future = client.submit(fib, 14, path, pure=False)
            for _ in range(2):
                wait_until(lambda: os.path.exists(path), 30)
                size = os.path.getsize(path)
                kill_scheduler(cluster)
                wait_until(lambda: os.path.getsize(path) > size or future.done(), 30,
                           message="work went on after the restart")
            assert future.result(timeout=60) == 377
        with open(path) as f:
            lines = f.read().split()
        expected = []

        def calls(k):
            expected.append(k)
            if k >= 2:
                calls(k - 1)
                calls(k - 2)
        calls(14)
        assert sorted(map(int, lines)) == sorted(expected), "a task ran twice or never"


@pytest.mark.timeout(60)
def test_a_client_connecting_after_a_restart_sees_the_restored_state(tmp_path):
    with LocalCluster(n_workers=1, threads_per_worker=1) as cluster:
        with Client(cluster) as client:
            future = client.submit(logged_inc, 1, str(tmp_path / "runs"))
            assert future.result() == 2
            kill_scheduler(cluster)
            assert future.result() == 2
            with Client(cluster) as other:
                wait_until(lambda: other.who_has([future])[future.key], 30)
                assert list(other.has_what().values()) == [[future.key]] or \
                    future.key in sum(other.has_what().values(), [])


@pytest.mark.timeout(60)
def test_a_scheduler_gone_before_its_welcome_is_noticed_at_once():
    """A scheduler killed between the handshake and its welcome: the worker and the
    client hear of it at once (and, reconnecting, try again) instead of waiting out
    their timeouts for a welcome that cannot come."""
    import asyncio

    from tasknest.errors import CommClosedError
    from tasknest.protocol.comm import listen
    from tasknest.worker.server import Worker

    async def main() -> None:
        registrations = []

        def on_comm(comm):
            def handle(msg):
                registrations.append(msg.op)
                comm.close("killed before the welcome")
            comm.start(handle)

        listener = await listen("tcp://127.0.0.1:0", on_comm, "secret")
        worker = Worker(listener.address, token="secret", reconnect_timeout=40, http=False)
        start = time.monotonic()
        with pytest.raises(CommClosedError, match="closed before the welcome"):
            await worker.start()
        assert time.monotonic() - start < 10, "waited for a welcome from a closed connection"
        await worker.close()
        client = Client(listener.address, token="secret", timeout=40, asynchronous=True)
        start = time.monotonic()
        with pytest.raises(Exception, match="closed before the welcome"):
            await client
        assert time.monotonic() - start < 10, "waited for a welcome from a closed connection"
        assert registrations == ["register-worker", "register-client"]
        listener.close()

    asyncio.run(main())
