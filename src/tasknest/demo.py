"""The specification's examples, run on an embedded local cluster: `tasknest demo`."""
from __future__ import annotations

import time
from operator import getitem

from .client.client import Client
from .worker.context import local_executor, worker_client


def download_and_convert_to_list(uri: str) -> list[int]:
    return [len(uri) * i for i in range(20)]


def process_element(x: int) -> int:
    return x * 2 + 1


def aggregate(values: list[int]) -> int:
    return sum(values)


def process_all(data: list[int]) -> int:
    with worker_client() as e:
        elements = e.scatter(data)
        futures = e.map(process_element, elements)
        analysis = e.submit(aggregate, futures)
        return analysis.result()


def expected(uri: str) -> int:
    """The answer all three ways must give, computed here."""
    return aggregate([process_element(x) for x in download_and_convert_to_list(uri)])


def seed_options(e: Client, uri: str) -> dict[str, int]:
    """The seed's three ways to process data that a task produced, each one's answer."""
    future = e.submit(download_and_convert_to_list, uri)
    out = {}
    data = future.result()                              # 1. gather the data locally
    futures = e.map(process_element, data)
    analysis = e.submit(aggregate, futures)
    out["gather the data locally"] = analysis.result()

    n = e.submit(len, future).result()                  # 2. submit tasks from client
    elements = [e.submit(getitem, future, i) for i in range(n)]
    futures = e.map(process_element, elements)
    analysis = e.submit(aggregate, futures)
    out["submit tasks from client"] = analysis.result()

    analysis = e.submit(process_all, data)              # 3. submit tasks from a worker
    out["submit tasks from worker"] = analysis.result()
    return out


def fib(n: int) -> int:
    if n < 2:
        return n
    with local_executor() as ee:
        a = ee.submit(fib, n - 1)
        b = ee.submit(fib, n - 2)
        a, b = ee.gather([a, b])
        return a + b


def main() -> int:
    t0 = time.perf_counter()
    with Client() as e:
        print(f"cluster: {len(list(e.scheduler_info(-1)['workers'].values()))} workers, started in "
              f"{time.perf_counter() - t0:.2f} s")
        for way, result in seed_options(e, "x://d").items():
            print(f"{way + ':':26} {result}")
            assert result == expected("x://d")

        t1 = time.perf_counter()
        future = e.submit(fib, 100)
        result = future.result()
        print(f"fib(100) from tasks that launch tasks: {result} "
              f"({time.perf_counter() - t1:.3f} s)")
        print(future)
        assert result == 354224848179261915075
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
