"""Measure what launching tasks from tasks costs here: the figures quoted in
docs/tasks-from-tasks.md.

Run: python examples/nesting_costs.py [N]     (N: size of the Fibonacci trees, default 15)
"""
from __future__ import annotations

import statistics
import sys
import threading
import time

import psutil

from tasknest import Client, LocalCluster, worker_client


def enter_cost(n: int) -> float:
    """Median seconds to enter and leave worker_client() inside one task."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        with worker_client():
            pass
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def fib(n: int) -> int:
    """Every call is its own task (pure=False): fib(15) is 1,973 tasks."""
    if n < 2:
        return n
    with worker_client() as c:
        a, b = c.gather([c.submit(fib, n - 1, pure=False), c.submit(fib, n - 2, pure=False)])
        return a + b


def calls(n: int) -> int:
    return 1 if n < 2 else 1 + calls(n - 1) + calls(n - 2)


def peak_threads(pid: int, stop: threading.Event, out: list[int]) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        out[0] = max(out[0], proc.num_threads())
        stop.wait(0.01)


def tree(client: Client, n: int, repeats: int = 3) -> tuple[float, int]:
    """Best wall time of fib(n) over a few runs, and the peak thread count of a worker."""
    pid = list(client.scheduler_info(-1)["workers"].values())[0]["pid"]
    stop, peak = threading.Event(), [0]
    sampler = threading.Thread(target=peak_threads, args=(pid, stop, peak), daemon=True)
    sampler.start()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        client.submit(fib, n, pure=False).result()
        best = min(best, time.perf_counter() - t0)
    stop.set()
    sampler.join()
    return best, peak[0]


def main(n: int = 15) -> None:
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1) as cluster, \
                Client(cluster) as client:
            if workers == 1:
                cost = client.submit(enter_cost, 10_000, pure=False).result()
                print(f"entering worker_client(): median {cost * 1e6:.1f} us")
            for size in (n, n + 3):
                seconds, threads = tree(client, size)
                print(f"fib({size}) on {workers} worker(s) x 1 thread: {calls(size):,} tasks "
                      f"in {seconds:.3f} s = {calls(size) / seconds:,.0f} tasks/s; "
                      f"peak {threads} threads in a worker process")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
