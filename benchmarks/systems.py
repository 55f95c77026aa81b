"""One adapter per system; each imports its library only when constructed.

Cluster shape is the same everywhere: 2 worker processes x 1 thread
(Ray: ``num_cpus=2``), default configuration otherwise.
"""

from __future__ import annotations

import importlib
import os
import time
from typing import Any

from benchmarks import tasks

SYSTEMS = ("tasknest", "dask", "ray")
N_WORKERS = 2
# (system, workload) pairs with no equivalent; reported as "n/a (reason)".
UNSUPPORTED = {("ray", "fib_dedup"): "no dedup",
               # a task blocked in ray.get holds a worker process: a chain n deep
               # starts n processes (~100 MiB each), more than this machine has
               ("ray", "chain"): "not run: one process per blocked task"}


class NotSupported(Exception):
    """The system has no equivalent of the workload (reported as n/a)."""


class FuturesSystem:
    """tasknest and dask.distributed share one API, hence one adapter."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lib = "distributed" if name == "dask" else name  # package inside tasks
        self.mod: Any = importlib.import_module(self.lib)
        self.cluster: Any = None
        self.client: Any = None

    def start(self) -> None:
        kw: dict[str, Any] = {"n_workers": N_WORKERS, "threads_per_worker": 1}
        if self.name == "dask":
            kw["processes"] = True
        self.cluster = self.mod.LocalCluster(**kw)
        self.client = self.mod.Client(self.cluster)

    def warm(self) -> None:
        assert self.client.submit(tasks.inc, -1, pure=False).result() == 0

    def worker_pids(self) -> list[int] | None:
        """Pids of the processes that run tasks (not nannies); None lets the sampler guess."""
        try:
            if self.name == "dask":  # dask runs its nannies inside the driver
                return sorted(self.client.run(os.getpid).values())
            info = list(self.client.scheduler_info(-1)["workers"].values())  # tasknest: a list of worker records
            return sorted(int(w["pid"]) for w in info) or None
        except Exception:  # only an aid to the sampler, never fatal
            return None

    def quiesce(self, timeout: float = 30.0) -> None:
        """Wait until the workers hold no result (earlier repetitions' are released)."""
        deadline = time.monotonic() + timeout
        while any(self.client.has_what().values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} still holds results after {timeout} s")
            time.sleep(0.005)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    # -- workloads: each returns the answer, checked by the caller ---------
    def inc_roundtrip(self, i: int) -> int:
        return self.client.submit(tasks.inc, i).result()  # type: ignore[no-any-return]

    def actor_start(self) -> None:
        self.counter = self.client.submit(tasks.Counter, actor=True).result()
        assert self.counter.increment().result() == 1

    def actor_call(self) -> int:
        return self.counter.increment().result()  # type: ignore[no-any-return]

    def flat(self, n: int) -> list[int]:
        return self.client.gather(self.client.map(tasks.inc, range(n)))  # type: ignore[no-any-return]

    def fanout(self, n: int) -> int:
        return self.client.submit(tasks.fanout, n, self.lib).result()  # type: ignore[no-any-return]

    def fib_tree(self, n: int) -> int:
        return self.client.submit(tasks.fib_tree, n, self.lib, pure=False).result()  # type: ignore[no-any-return]

    def chain(self, n: int) -> int:
        return self.client.submit(tasks.chain, n, self.lib, pure=False).result()  # type: ignore[no-any-return]

    def fib_dedup(self, n: int) -> int:
        return self.client.submit(tasks.fib_dedup, n, self.lib).result()  # type: ignore[no-any-return]

    def process_all(self, n: int, seed: int) -> int:
        data = self.client.submit(tasks.make_data, n, seed)
        return self.client.submit(tasks.process_all, data, self.lib).result()  # type: ignore[no-any-return]

    def process_all_gathered(self, n: int, seed: int) -> int:
        # The seed's first option: bring the data to the driver, then map/submit.
        data = self.client.submit(tasks.make_data, n, seed).result()
        futures = self.client.map(tasks.score, data)
        return self.client.submit(sum, futures).result()  # type: ignore[no-any-return]


class RaySystem:
    name = "ray"

    def __init__(self) -> None:
        os.environ.pop("RAY_ADDRESS", None)  # always a fresh local instance
        self.ray: Any = importlib.import_module("ray")
        self.rt: Any = importlib.import_module("benchmarks.ray_tasks")

    def start(self) -> None:
        self.ray.init(num_cpus=N_WORKERS)

    def warm(self) -> None:
        assert self.ray.get(self.rt.inc.remote(-1)) == 0

    def worker_pids(self) -> list[int] | None:
        return None  # Ray starts workers on demand; the sampler finds them

    def quiesce(self) -> None:
        """Nothing to wait for: Ray does not share results between identical calls."""

    def close(self) -> None:
        self.ray.shutdown()

    def inc_roundtrip(self, i: int) -> int:
        return self.ray.get(self.rt.inc.remote(i))  # type: ignore[no-any-return]

    def actor_start(self) -> None:
        self.counter = self.rt.Counter.remote()
        assert self.ray.get(self.counter.increment.remote()) == 1

    def actor_call(self) -> int:
        return self.ray.get(self.counter.increment.remote())  # type: ignore[no-any-return]

    def flat(self, n: int) -> list[int]:
        return self.ray.get([self.rt.inc.remote(i) for i in range(n)])  # type: ignore[no-any-return]

    def fanout(self, n: int) -> int:
        return self.ray.get(self.rt.fanout.remote(n))  # type: ignore[no-any-return]

    def fib_tree(self, n: int) -> int:
        return self.ray.get(self.rt.fib_tree.remote(n))  # type: ignore[no-any-return]

    def chain(self, n: int) -> int:
        raise NotSupported(UNSUPPORTED["ray", "chain"])

    def fib_dedup(self, n: int) -> int:
        raise NotSupported(UNSUPPORTED["ray", "fib_dedup"])

    def process_all(self, n: int, seed: int) -> int:
        data = self.rt.make_data.remote(n, seed)
        return self.ray.get(self.rt.process_all.remote(data))  # type: ignore[no-any-return]

    def process_all_gathered(self, n: int, seed: int) -> int:
        data = self.ray.get(self.rt.make_data.remote(n, seed))
        results = [self.rt.score.remote(x) for x in data]
        return self.ray.get(self.rt.total.remote(*results))  # type: ignore[no-any-return]


System = FuturesSystem | RaySystem


def open_system(name: str) -> System:
    if name == "ray":
        return RaySystem()
    if name in ("tasknest", "dask"):
        return FuturesSystem(name)
    raise ValueError(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")
