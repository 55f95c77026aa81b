"""Workload definitions: sizes, how each is measured, and how it is reported.

Each ``measure`` function runs only the measured region on a started, warmed
system, checks the answer (raising ``WrongAnswer``) and returns its metrics.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks import tasks
from benchmarks.systems import System

SEED = 20240601


class WrongAnswer(AssertionError):
    pass


def _check(got: object, expected: object) -> None:
    if got != expected:
        raise WrongAnswer(f"wrong answer: got {str(got)[:80]}, expected {str(expected)[:80]}")


def _latency(s: System, n: int) -> dict[str, float]:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        r = s.inc_roundtrip(i)
        times.append(time.perf_counter() - t0)
        _check(r, i + 1)
    ms = sorted(t * 1e3 for t in times)
    p99 = ms[max(0, math.ceil(0.99 * len(ms)) - 1)]  # nearest rank
    return {"median_ms": statistics.median(ms), "p99_ms": p99, "elapsed_s": sum(times)}


def _actor(s: System, n: int) -> dict[str, float]:
    """Method calls on one actor, one after another (the actor is made and called
    once before the measured region); the ``latency`` workload is the task's figure."""
    s.actor_start()
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        r = s.actor_call()
        times.append(time.perf_counter() - t0)
        _check(r, i + 2)
    ms = sorted(t * 1e3 for t in times)
    p99 = ms[max(0, math.ceil(0.99 * len(ms)) - 1)]  # nearest rank
    return {"median_ms": statistics.median(ms), "p99_ms": p99, "elapsed_s": sum(times)}


REPEAT_UNTIL_S = 1.0   # a short region is repeated (on the same cluster) until this much
MAX_REPS = 5           # time has passed, at most this often; the run reports the median


def _timed(s: System, fn: Callable[[], object], expected: object) -> float:
    """Median time of ``fn()`` over its repetitions; each answer is checked outside
    the timed region. Slow systems get one repetition, fast ones up to MAX_REPS:
    a 0.1 s region on a shared machine is too noisy to stand alone. Each repetition
    starts on a cluster that holds nothing (waited for outside the timed region):
    a pure call repeated must be computed again, not found in memory."""
    times: list[float] = []
    while True:
        s.quiesce()
        t0 = time.perf_counter()
        got = fn()
        times.append(time.perf_counter() - t0)
        _check(got, expected)
        if sum(times) >= REPEAT_UNTIL_S or len(times) >= MAX_REPS:
            return statistics.median(times)


def _flat(s: System, n: int) -> dict[str, float]:
    el = _timed(s, lambda: s.flat(n), list(range(1, n + 1)))
    return {"tasks_per_s": n / el, "elapsed_s": el}


def _fanout(s: System, n: int) -> dict[str, float]:
    el = _timed(s, lambda: s.fanout(n), n * (n + 1) // 2)
    return {"children_per_s": n / el, "elapsed_s": el}


def _fib_tree(s: System, n: int) -> dict[str, float]:
    el = _timed(s, lambda: s.fib_tree(n), tasks.fib(n))
    count = tasks.fib_calls(n)
    return {"tasks": count, "tasks_per_s": count / el, "elapsed_s": el}


def _chain(s: System, n: int) -> dict[str, float]:
    el = _timed(s, lambda: s.chain(n), n)
    return {"tasks": n + 1, "tasks_per_s": (n + 1) / el, "elapsed_s": el}


def _fib_dedup(s: System, n: int) -> dict[str, float]:
    el = _timed(s, lambda: s.fib_dedup(n), tasks.fib(n))
    return {"elapsed_ms": el * 1e3}


def _expected_process_all(n: int) -> int:
    return sum(tasks.score(x) for x in tasks.make_data(n, SEED))


def _process_all(s: System, n: int) -> dict[str, float]:
    el = _timed(s, lambda: s.process_all(n, SEED), _expected_process_all(n))
    return {"elapsed_s": el, "items_per_s": n / el}


def _process_all_gathered(s: System, n: int) -> dict[str, float]:
    el = _timed(s, lambda: s.process_all_gathered(n, SEED), _expected_process_all(n))
    return {"elapsed_s": el, "items_per_s": n / el}


@dataclass(frozen=True)
class Column:
    metric: str
    header: str
    fmt: str  # format spec for the value


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    measure: Callable[[System, int], dict[str, float]]
    sizes: tuple[int, ...]
    quick: int
    size_label: str
    primary: Column  # the figure the tasknest-vs-rival ratio is computed on
    higher_is_better: bool
    extra: tuple[Column, ...] = ()
    group: str = ""  # workloads sharing a table (process_all and its variant)


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("latency", "latency: sequential `submit(inc, i).result()` round trips",
                 _latency, (300,), 5, "round trips",
                 Column("median_ms", "median ms", ".2f"), False,
                 (Column("p99_ms", "p99 ms", ".2f"),)),
        Workload("actor", "actor: sequential `counter.increment().result()` round trips "
                 "to one actor", _actor, (300,), 5, "calls",
                 Column("median_ms", "median ms", ".2f"), False,
                 (Column("p99_ms", "p99 ms", ".2f"),)),
        Workload("flat", "flat: `gather(map(inc, range(n)))` from the driver",
                 _flat, (10_000,), 100, "tasks",
                 Column("tasks_per_s", "tasks/s", ",.0f"), True,
                 (Column("elapsed_s", "s", ".3g"),)),
        Workload("fanout", "fanout: one task maps `inc` over n numbers from inside its worker",
                 _fanout, (2_000,), 50, "children",
                 Column("children_per_s", "children/s", ",.0f"), True,
                 (Column("elapsed_s", "s", ".3g"),)),
        Workload("fib_tree", "fib_tree: the seed's Fibonacci, every call a distinct task",
                 _fib_tree, (15, 18), 6, "n",
                 Column("tasks_per_s", "tasks/s", ",.0f"), True,
                 (Column("tasks", "tasks", ",.0f"), Column("elapsed_s", "s", ".3g"))),
        Workload("chain", "chain: each task submits the next and waits on it",
                 _chain, (1_000,), 20, "depth",
                 Column("tasks_per_s", "tasks/s", ",.0f"), True,
                 (Column("elapsed_s", "s", ".3g"),)),
        Workload("fib_dedup", "fib_dedup: the seed's `fib(n)` with deterministic (pure) keys",
                 _fib_dedup, (100,), 30, "n",
                 Column("elapsed_ms", "ms", ",.1f"), False),
        Workload("process_all", "process_all: scatter + map + aggregate from inside a task",
                 _process_all, (5_000,), 50, "items",
                 Column("elapsed_s", "s", ".3g"), False,
                 (Column("items_per_s", "items/s", ",.0f"),), group="process_all"),
        Workload("process_all_gathered",
                 "process_all, gathered: the same work after gathering the list to the driver",
                 _process_all_gathered, (5_000,), 50, "items",
                 Column("elapsed_s", "s", ".3g"), False,
                 (Column("items_per_s", "items/s", ",.0f"),), group="process_all"),
    )
}


def select(names: list[str]) -> list[Workload]:
    """Resolve workload names; a group name (``process_all``) selects its variants."""
    out: list[Workload] = []
    for name in names:
        matched = [w for w in WORKLOADS.values() if w.name == name or w.group == name]
        if not matched:
            raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
        out += [w for w in matched if w not in out]
    return out
