"""Actor method round trip against a trivial task's round trip, on each system.

    python -m benchmarks.actors [--systems tasknest,dask,ray] [--calls 2000]

One actor (a counter) on a cluster of 2 worker processes x 1 thread; the client
calls ``increment()`` and waits for each answer in turn, and, for comparison,
submits a trivial task and waits for it in turn. Prints the median of 5 batches
per system, in milliseconds per round trip. dask and Ray are measured only if
installed (the ``bench`` extra).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def increment(self) -> int:
        self.n += 1
        return self.n


def _inc(x: int) -> int:
    return x + 1


def _median_ms(fn: Callable[[int], Any], calls: int, batches: int = 5) -> float:
    fn(min(calls, 50))                     # warm up
    times = []
    for _ in range(batches):
        start = time.perf_counter()
        fn(calls)
        times.append((time.perf_counter() - start) / calls * 1000)
    return statistics.median(times)


def tasknest(calls: int) -> dict[str, float]:
    from tasknest import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as c:
        counter = c.submit(Counter, actor=True).result()
        actor = _median_ms(lambda n: [counter.increment().result() for _ in range(n)], calls)
        task = _median_ms(lambda n: [c.submit(_inc, i, pure=False).result()
                                     for i in range(n)], calls)
    return {"actor": actor, "task": task}


def dask(calls: int) -> dict[str, float]:
    from dask.distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as c:
        counter = c.submit(Counter, actor=True).result()
        actor = _median_ms(lambda n: [counter.increment().result() for _ in range(n)], calls)
        task = _median_ms(lambda n: [c.submit(_inc, i, pure=False).result()
                                     for i in range(n)], calls)
    return {"actor": actor, "task": task}


def ray(calls: int) -> dict[str, float]:
    import ray as ray_
    ray_.init(num_cpus=2, include_dashboard=False)
    try:
        counter = ray_.remote(Counter).remote()
        inc = ray_.remote(_inc)
        actor = _median_ms(lambda n: [ray_.get(counter.increment.remote()) for _ in range(n)],
                           calls)
        task = _median_ms(lambda n: [ray_.get(inc.remote(i)) for i in range(n)], calls)
    finally:
        ray_.shutdown()
    return {"actor": actor, "task": task}


SYSTEMS = {"tasknest": tasknest, "dask": dask, "ray": ray}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default="tasknest,dask,ray")
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    print("system      actor call (ms)   task round trip (ms)")
    for name in args.systems.split(","):
        try:
            r = SYSTEMS[name](args.calls)
        except ImportError as exc:
            print(f"{name:<11} not installed ({exc.name})")
            continue
        print(f"{name:<11} {r['actor']:>15.3f}   {r['task']:>20.3f}")


if __name__ == "__main__":
    main()
