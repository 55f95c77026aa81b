"""client.get_executor(): a concurrent.futures.Executor; the joblib backend."""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import importlib
import math
import operator
import os

import pytest

from tasknest import ClosedClientError, Event, get_client

pytestmark = pytest.mark.timeout(90)



def _test_extra(name: str):
    """A package of the test extra: under CI it must be there (a failure, not a skip)."""
    if os.environ.get("CI") == "true":
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=f"{name} is in the test extra")


joblib = _test_extra("joblib")
import tasknest.joblib  # noqa: E402,F401  (registers the backend)


def test_executor_futures_are_concurrent_futures(client):
    with client.get_executor() as ex:
        fs = [ex.submit(pow, 2, i) for i in range(10)]
        assert all(isinstance(f, cf.Future) for f in fs)
        assert sorted(f.result() for f in cf.as_completed(fs, timeout=30)) == \
            [2 ** i for i in range(10)]
        done, not_done = cf.wait(fs, timeout=30)
        assert len(done) == 10 and not not_done
        bad = ex.submit(operator.truediv, 1, 0)
        assert isinstance(bad.exception(timeout=30), ZeroDivisionError)

        async def wrapped() -> int:
            return await asyncio.wrap_future(ex.submit(sum, [1, 2, 3]))
        assert asyncio.run(wrapped()) == 6
    with pytest.raises(ClosedClientError):
        ex.submit(sum, [1])


def test_executor_map_with_chunks_and_a_timeout(client):
    ex = client.get_executor()
    assert list(ex.map(operator.add, range(20), range(20), timeout=30, chunksize=6)) == \
        [2 * i for i in range(20)]
    results = ex.map(Event("executor-never").wait, [30], timeout=0.05)
    with pytest.raises(cf.TimeoutError):
        next(results)
    Event("executor-never").set()         # let the waiting task end
    ex.shutdown(wait=True)
    Event("executor-never").clear()


def test_shutdown_cancels_pending_futures(client):
    ex = client.get_executor()
    f = ex.submit(Event("executor-hold").wait, 30)
    ex.shutdown(wait=False, cancel_futures=True)
    assert f.cancelled()
    Event("executor-hold").set()
    Event("executor-hold").clear()


def doubled_in_a_task(n: int) -> list:
    ex = get_client().get_executor()
    fs = [ex.submit(operator.mul, i, 2) for i in range(n)]
    done, _ = cf.wait(fs, timeout=30)
    ex.shutdown()
    return sorted(f.result() for f in done)


def test_the_executor_inside_tasks_uses_the_tasks_client(client):
    # two workers of one thread, four parents: children queue behind their parents
    assert client.gather(client.map(doubled_in_a_task, [5, 6, 7, 8]), timeout=60) == \
        [[2 * i for i in range(n)] for n in (5, 6, 7, 8)]


def roots(n: int) -> float:
    with joblib.parallel_config(backend="tasknest"):
        return sum(joblib.Parallel(n_jobs=-1)(joblib.delayed(math.sqrt)(i * i)
                                              for i in range(n)))


def test_joblib_parallel_from_the_client_and_inside_tasks(client):
    with joblib.parallel_config(backend="tasknest"):
        assert joblib.Parallel(n_jobs=-1)(joblib.delayed(math.sqrt)(i) for i in [1, 4, 9]) == \
            [1.0, 2.0, 3.0]
    assert client.gather(client.map(roots, [10, 20, 30]), timeout=60) == [45.0, 190.0, 435.0]


def test_grid_search_under_the_backend(client):
    sklearn = _test_extra("sklearn")
    from sklearn.datasets import load_iris
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC
    X, y = load_iris(return_X_y=True)
    with joblib.parallel_config(backend="tasknest"):
        search = GridSearchCV(SVC(), {"C": [0.1, 1, 10], "kernel": ["linear", "rbf"]}, cv=3,
                              n_jobs=-1).fit(X, y)
    assert len(search.cv_results_["params"]) == 6 and sklearn is not None
    assert search.best_score_ > 0.9
