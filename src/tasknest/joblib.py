"""joblib backend ``"tasknest"``: ``import tasknest.joblib``, then

    with joblib.parallel_config(backend="tasknest"):
        Parallel(n_jobs=-1)(delayed(f)(x) for x in xs)

    Parallel ──batches──> client.get_executor() ──tasks──> cluster ──cf.Future──> Parallel

runs each batch as a task through the current client (a task's own client inside
a task). While joblib waits for the results inside a task, the task leaves its
worker's thread pool, so nested Parallel calls never deadlock the workers.
joblib itself is not a dependency of tasknest: install it to use this module.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from joblib.parallel import AutoBatchingMixin, ParallelBackendBase, register_parallel_backend

from .client.client import Client
from .registry import default_client
from .errors import CallerError


class TasknestBackend(AutoBatchingMixin, ParallelBackendBase):
    supports_retrieve_callback = True
    supports_timeout = True
    default_n_jobs = -1

    def __init__(self, client: Client | None = None, nesting_level: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(nesting_level=nesting_level, **kwargs)
        self._given = client
        self.client: Client | None = None
        self.executor: Any = None

    def __reduce__(self) -> tuple:
        # nested Parallel calls in a task get a fresh backend on the task's client
        return (TasknestBackend, (None, self.nesting_level))

    def _get_client(self) -> Client:
        return self._given if self._given is not None else default_client()

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise CallerError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None or n_jobs < 0:
            client = self._get_client()
            threads = client.nthreads()
            total = sum(threads.values()) if isinstance(threads, dict) else 1
            return max(1, total + 1 + (n_jobs if n_jobs is not None else -1))
        return n_jobs

    def configure(self, n_jobs: int = 1, parallel: Any = None, **kwargs: Any) -> int:
        self.client = self._get_client()
        self.executor = self.client.get_executor(pure=False)
        self.parallel = parallel
        return self.effective_n_jobs(n_jobs)

    def submit(self, func: Any, callback: Any = None) -> Any:
        future = self.executor.submit(func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, future: Any) -> Any:
        return future.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None
        if ensure_ready and self.parallel is not None:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel)

    def terminate(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False)
            self.executor = None
        self.reset_batch_stats()

    def get_nested_backend(self) -> tuple:
        return TasknestBackend(self._given, (self.nesting_level or 0) + 1), None

    @contextlib.contextmanager
    def retrieval_context(self) -> Iterator[None]:
        yield        # (inside a task the executor already left the pool until shutdown)


register_parallel_backend("tasknest", TasknestBackend)
