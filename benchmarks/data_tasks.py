"""Task functions of the data benchmark (imported by reference in every worker)."""
from __future__ import annotations

from typing import Any

PAGE = 4096


def make(nbytes: int, seed: int = 0) -> Any:
    """A float64 array of ``nbytes`` (every page written, so it is really there)."""
    import numpy as np
    a = np.empty(nbytes // 8)
    a.fill(1.0 + seed)
    return a


def touch(a: Any) -> float:
    """Read one element of every page of the array (it has to be there to be read)."""
    return float(a[:: PAGE // 8].sum())


def inc(x: int) -> int:
    return x + 1


def produce(i: int, parts: int, nbytes: int) -> list:
    """One shuffle producer: ``parts`` arrays of ``nbytes`` each."""
    return [make(nbytes, i) for _ in range(parts)]


def produce_tuple(i: int, parts: int, nbytes: int) -> tuple:
    return tuple(produce(i, parts, nbytes))


def pick(parts: list, j: int) -> Any:
    return parts[j]


def consume(*pieces: Any) -> int:
    """One shuffle consumer: the bytes it received (and read)."""
    for p in pieces:
        touch(p)
    return sum(int(p.nbytes) for p in pieces)
