"""Ray remote functions for the same workloads (imported only when Ray runs).

Each remote function wraps a module-level plain function, so Ray's
cloudpickle exports it by reference.  Nested calls block in ``ray.get``, as
Ray's documentation recommends for recursive task graphs.
"""

from __future__ import annotations

import ray

from benchmarks import tasks

inc = ray.remote(tasks.inc)
score = ray.remote(tasks.score)
make_data = ray.remote(tasks.make_data)
Counter = ray.remote(tasks.Counter)


def _total(*xs: int) -> int:
    return sum(xs)


def _fanout(n: int) -> int:
    return sum(ray.get([inc.remote(i) for i in range(n)]))


def _fib_tree(n: int) -> int:
    if n < 2:
        return n
    return sum(ray.get([fib_tree.remote(n - 1), fib_tree.remote(n - 2)]))


def _process_all(data: list[bytes]) -> int:
    elements = [ray.put(x) for x in data]  # Ray's scatter
    results = [score.remote(e) for e in elements]
    return ray.get(total.remote(*results))


total = ray.remote(_total)
fanout = ray.remote(_fanout)
fib_tree = ray.remote(_fib_tree)
process_all = ray.remote(_process_all)
