"""Tasks that submit tasks that submit tasks: Fibonacci, one task per distinct call.

Identical calls get identical keys, so fib(100) takes about 100 tasks, not 2**100.
Run: python examples/fib.py
"""
from __future__ import annotations

import time

from tasknest import Client, worker_client


def fib(n: int) -> int:
    if n < 2:
        return n
    with worker_client() as c:
        a = c.submit(fib, n - 1)
        b = c.submit(fib, n - 2)
        a, b = c.gather([a, b])
        return a + b


def main() -> int:
    with Client() as client:
        t0 = time.perf_counter()
        future = client.submit(fib, 100)
        result = future.result()
        print(future)
        print(result, f"({time.perf_counter() - t0:.3f} s)")
    return result


if __name__ == "__main__":
    main()
