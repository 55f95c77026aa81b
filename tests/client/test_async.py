"""The asynchronous client, and ``async def`` tasks that launch tasks."""
from __future__ import annotations

import asyncio

import pytest

from tasknest import Client, Future, worker_client

from conftest import wait_until


def inc(x):
    return x + 1


def add(x, y):
    return x + y


async def async_parent(x):
    async with worker_client() as c:
        a = c.submit(inc, x)
        b = c.submit(inc, x + 1)
        return await a + sum(await c.gather([b]))


async def async_fib(n):
    if n < 2:
        return n
    async with worker_client() as c:
        a, b = await c.gather([c.submit(async_fib, n - 1), c.submit(async_fib, n - 2)])
        return a + b


async def blocking_in_async_task(x, other):
    async with worker_client() as c:
        return c.submit(inc, x, workers=[other]).result()   # should be awaited


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 50))


@pytest.mark.timeout(60)
def test_async_client_against_a_running_cluster(cluster):
    async def main():
        async with Client(cluster.scheduler_address, asynchronous=True,
                          token=cluster.token) as c:
            f = c.submit(inc, 1)
            assert await f == 2
            assert await c.gather([f, c.submit(add, 2, 3)]) == [2, 5]
            assert await c.gather({"x": [f], "y": (f,)}) == {"x": [2], "y": (2,)}
            xs = await c.scatter([10, 20])
            assert all(isinstance(x, Future) for x in xs)
            assert set((await c.who_has(xs)).keys()) == {x.key for x in xs}
            assert await c.gather(c.map(inc, xs)) == [11, 21]
            one = await c.scatter(5)
            assert await c.submit(inc, one) == 6
            d = await c.scatter({"k": 1})
            assert await d["k"] == 1
            await c.wait_for_workers(2, timeout=10)
            assert len(await c.nthreads()) == 2
            return True
    assert run(main())
    with Client(cluster) as c:   # nothing left behind once the async client closed
        wait_until(lambda: not any(c.has_what().values()), 10,
                   message="workers free what the async client held")


@pytest.mark.timeout(60)
def test_async_client_with_no_address_starts_and_stops_a_cluster():
    async def main():
        async with Client(asynchronous=True, n_workers=1, threads_per_worker=1) as c:
            assert await c.submit(add, 1, 2) == 3
            cluster = c._cluster
            assert cluster is not None and cluster.status == "running"
        return cluster
    cluster = run(main())
    assert cluster.status == "closed"
    assert all(p.poll() is not None for p in [cluster.scheduler_proc, *cluster.worker_procs])


@pytest.mark.timeout(60)
def test_async_def_tasks_use_async_worker_client(client):
    assert client.submit(async_parent, 1).result() == 2 + 3
    assert client.submit(async_fib, 12).result() == 144


@pytest.mark.timeout(60)
def test_blocking_call_in_async_task_is_a_clear_error_not_a_hang(client):
    a, b = sorted(client.nthreads())
    f = client.submit(blocking_in_async_task, 1, b, workers=[a])
    with pytest.raises(RuntimeError, match="await it instead"):
        f.result(timeout=20)


@pytest.mark.timeout(60)
def test_await_client_then_close(cluster):
    async def main():
        c = await Client(cluster, asynchronous=True)
        try:
            return await c.submit(inc, 41)
        finally:
            await c.close()
    assert run(main()) == 42
