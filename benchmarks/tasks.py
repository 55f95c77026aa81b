"""Task functions shared by tasknest and dask.distributed.

They live in an importable module so that every system pickles them by
reference, not by value.  ``lib`` names the package whose ``worker_client``
a task must use ("tasknest" or "distributed"); it is an ordinary argument so
the same function serves both systems.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import random
from collections.abc import Callable
from typing import Any

ITEM_BYTES = 10 * 1024


def inc(x: int) -> int:
    return x + 1


@functools.cache
def _worker_client(lib: str) -> Callable[[], Any]:
    return importlib.import_module(lib).worker_client  # type: ignore[no-any-return]


def fanout(n: int, lib: str, start: int = 0) -> int:
    """One task maps ``inc`` over ``n`` numbers (from ``start``) from inside its worker."""
    with _worker_client(lib)() as c:
        return sum(c.gather(c.map(inc, range(start, start + n))))


def fib_tree(n: int, lib: str) -> int:
    """The seed's Fibonacci with every call a distinct task (pure=False)."""
    if n < 2:
        return n
    with _worker_client(lib)() as c:
        a = c.submit(fib_tree, n - 1, lib, pure=False)
        b = c.submit(fib_tree, n - 2, lib, pure=False)
        x, y = c.gather([a, b])
    return x + y  # type: ignore[no-any-return]


def chain(n: int, lib: str) -> int:
    """A chain ``n`` deep: each task submits the next and waits on it."""
    if n == 0:
        return 0
    with _worker_client(lib)() as c:
        return c.submit(chain, n - 1, lib, pure=False).result() + 1  # type: ignore[no-any-return]


def fib_dedup(n: int, lib: str) -> int:
    """The seed's Fibonacci as written: pure calls, so identical calls share a key."""
    if n < 2:
        return n
    with _worker_client(lib)() as c:
        a = c.submit(fib_dedup, n - 1, lib)
        b = c.submit(fib_dedup, n - 2, lib)
        x, y = c.gather([a, b])
    return x + y  # type: ignore[no-any-return]


def make_data(n: int, seed: int) -> list[bytes]:
    """``n`` random 10 KB byte strings; seeded so the driver can check the answer."""
    rng = random.Random(seed)
    return [rng.randbytes(ITEM_BYTES) for _ in range(n)]


def score(x: bytes) -> int:
    return len(x) + hashlib.sha256(x).digest()[0]


def process_all(data: list[bytes], lib: str) -> int:
    """The seed's ``process_all``: scatter, map and aggregate from inside a task."""
    with _worker_client(lib)() as c:
        elements = c.scatter(data)
        futures = c.map(score, elements)
        return c.submit(sum, futures).result()  # type: ignore[no-any-return]


def fib(n: int) -> int:
    """Reference answer, computed locally."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def fib_calls(n: int) -> int:
    """Number of calls (= tasks) in the naive recursive tree of ``fib(n)``."""
    return 2 * fib(n + 1) - 1


class Counter:
    """The actor of the ``actor`` workload: a method call that does next to nothing."""

    def __init__(self) -> None:
        self.n = 0

    def increment(self) -> int:
        self.n += 1
        return self.n
