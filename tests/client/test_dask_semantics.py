"""The futures semantics dask users (and concurrent.futures) expect, one test each."""
from __future__ import annotations

import collections
import concurrent.futures as cf
import traceback

import pytest

from tasknest import (CallerError, FutureCancelledError, TasknestError, as_completed, wait,
                      worker_client)
from tasknest.timeouts import parse_timeout

from conftest import wait_until
from test_futures import Gate, inc, opened_after


def fail(x):
    raise ValueError(f"bad {x}")


class Point:
    def __init__(self, x):
        self.x = x


def make_point(x):
    return Point(x)


# -- Future ---------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_type_is_the_class_and_repr_its_name(client):
    f = client.submit(inc, 1)
    f.result()
    assert f.type is int and "type: int" in repr(f)
    g = client.submit(make_point, 1)
    wait([g])
    assert g.type is Point and "type: Point" in repr(g)


def nested_failure(x):
    return fail(x)


@pytest.mark.timeout(30)
def test_traceback_is_an_object_and_the_exception_carries_remote_frames(client):
    f = client.submit(nested_failure, 3)
    with pytest.raises(ValueError, match="bad 3") as info:
        f.result()
    text = "".join(traceback.format_tb(f.traceback()))
    assert "nested_failure" in text and "fail" in text
    shown = "".join(traceback.format_exception(info.type, info.value, info.value.__traceback__))
    assert "nested_failure" in shown and "raise ValueError" in shown
    with pytest.raises(ValueError):     # raised again: the frames do not pile up
        f.result()
    assert "".join(traceback.format_tb(f.traceback())).count("nested_failure") == 1


flaky_runs = []


def fail_once(path):
    import os
    if not os.path.exists(path):
        open(path, "w").close()
        raise RuntimeError("first time")
    return "second time"


@pytest.mark.timeout(30)
def test_retry_runs_a_failed_task_again(client, tmp_path):
    f = client.submit(fail_once, str(tmp_path / "ran"))
    with pytest.raises(RuntimeError, match="first time"):
        f.result()
    f.retry()
    assert f.result(timeout=20) == "second time"
    assert f.status == "finished"


@pytest.mark.timeout(30)
def test_release_lets_go_of_the_result(client):
    f = client.submit(inc, 41)
    assert f.result() == 42
    key = f.key
    f.release()
    wait_until(lambda: key not in client.who_has(), 10, message="the result is freed")
    assert key not in client.futures


@pytest.mark.timeout(30)
def test_client_futures_lists_what_it_holds(client):
    fs = client.map(inc, range(3))
    assert {f.key for f in fs} <= set(client.futures)
    del fs


# -- cancel ---------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_cancelled_at_once_and_returns_true_only_when_it_cancelled(client, tmp_path):
    gate = Gate(tmp_path)
    f = client.submit(opened_after, gate.path)
    assert f.cancel() is True
    assert f.cancelled()
    done = client.submit(inc, 1)
    done.result()
    assert done.cancel() is False and not done.cancelled()
    gate.open()


@pytest.mark.timeout(30)
def test_client_cancel_of_a_finished_future_releases_it(client):
    f = client.submit(inc, 10)
    f.result()
    client.cancel([f])
    assert f.cancelled()
    with pytest.raises(FutureCancelledError):
        client.submit(inc, f)
    with pytest.raises(FutureCancelledError):
        f.result()
    wait_until(lambda: f.key not in client.who_has(), 10, message="the result is released")
    assert client.submit(inc, 10).result() == 11      # the key may live again


def test_cancelled_error_is_a_concurrent_futures_cancelled_error():
    assert issubclass(FutureCancelledError, cf.CancelledError)
    assert issubclass(FutureCancelledError, TasknestError)


# -- gather, scatter, map -----------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_gather_skip_leaves_failed_futures_out(client):
    fs = [client.submit(inc, 1), client.submit(fail, 2), client.submit(inc, 3)]
    assert client.gather(fs, errors="skip") == [2, 4]
    assert client.gather({"a": fs[0], "b": fs[1]}, errors="skip") == {"a": 2}


Pair = collections.namedtuple("Pair", "left right")


@pytest.mark.timeout(30)
def test_scatter_hashes_by_default_and_keeps_types(client):
    a, b = client.scatter([b"same", b"same"])
    assert a.key == b.key
    c, d = client.scatter([b"same", b"same"], hash=False)
    assert c.key != d.key != a.key
    for data in ([1, 2], (1, 2), {1, 2}, frozenset({1, 2})):
        futures = client.scatter(data)
        assert type(futures) is type(data)
        assert sorted(client.gather(list(futures))) == [1, 2]
    pair = client.scatter(Pair(1, 2))
    assert isinstance(pair, Pair) and client.gather(list(pair)) == [1, 2]
    assert client.gather(client.scatter({"x": 5})["x"]) == 5
    assert client.gather(client.scatter(range(3))) == [0, 1, 2]
    assert client.gather(client.scatter(x * x for x in range(3))) == [0, 1, 4]


def keyword_echo(x, **kwargs):
    return sorted(kwargs)


@pytest.mark.timeout(30)
def test_map_key_prefix_batch_size_and_no_option_leaks(client):
    fs = client.map(inc, range(5), key="step")
    assert all(f.key.startswith("step-") for f in fs)
    assert client.gather(fs) == [1, 2, 3, 4, 5]
    assert client.gather(client.map(inc, range(10), batch_size=3)) == list(range(1, 11))
    options = dict(workers=None, retries=1, priority=1, fifo_timeout="1 s",
                   allow_other_workers=False, pure=False)
    assert client.submit(keyword_echo, 1, **options).result() == []
    assert client.map(keyword_echo, [1], **options)[0].result() == []
    assert client.submit(keyword_echo, 1, flag=True).result() == ["flag"]
    with pytest.raises(CallerError, match="batch_size"):
        client.map(inc, [1], batch_size=0)


# -- timeouts and messages ---------------------------------------------------------------------
def test_dask_timeout_strings():
    assert parse_timeout("10 ms") == pytest.approx(0.01)
    assert parse_timeout("2 s") == 2.0
    assert parse_timeout("1 min") == 60.0
    assert parse_timeout("1.5h") == 5400.0
    assert parse_timeout(3) == 3.0 and parse_timeout(None) is None
    for bad in ("soon", -1, True, [1]):
        with pytest.raises(CallerError):
            parse_timeout(bad)


@pytest.mark.timeout(30)
def test_timeouts_as_strings_everywhere(client, tmp_path):
    gate = Gate(tmp_path)
    f = client.submit(opened_after, gate.path)
    for call in (lambda: f.result(timeout="20 ms"), lambda: client.gather([f], timeout="20 ms"),
                 lambda: wait([f], timeout="20 ms"),
                 lambda: list(as_completed([f], timeout="20 ms"))):
        with pytest.raises(TimeoutError):
            call()
    gate.open()
    assert f.result(timeout="20 s") == "opened"


def child_inside(timeout):
    with worker_client(timeout=timeout) as c:
        return c.submit(inc, 1).result(timeout="10 s")


@pytest.mark.timeout(30)
def test_worker_client_takes_a_timeout(client):
    assert client.submit(child_inside, "5 s").result() == 2
    with pytest.raises(CallerError):
        client.submit(child_inside, "later").result()


@pytest.mark.timeout(30)
def test_wait_for_workers_says_how_many_came(client):
    with pytest.raises(TimeoutError, match="2/10 workers"):
        client.wait_for_workers(10, timeout="100 ms")


@pytest.mark.timeout(30)
def test_wait_with_futures_not_in_a_list_says_to_pass_a_list(client):
    x, y = client.submit(inc, 1), client.submit(inc, 2)
    with pytest.raises(CallerError, match=r"wait\(\[f1, f2\]\)"):
        wait(x, y)


# -- introspection --------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_scheduler_info_nthreads_has_what_who_has_in_dask_shapes(client):
    info = client.scheduler_info()
    assert set(info) >= {"workers", "started", "address"}
    assert len(info["workers"]) == 2 and info["n_workers"] == 2
    assert len(client.scheduler_info(n_workers=1)["workers"]) == 1
    first, second = sorted(info["workers"])
    assert all(w["address"] == a for a, w in info["workers"].items())
    assert client.nthreads() == {first: 1, second: 1}
    assert client.nthreads([first]) == {first: 1}
    name = info["workers"][first]["name"]
    assert client.nthreads(name) == {first: 1}
    f = client.submit(inc, 5, workers=[first])
    g = client.submit(inc, 6, workers=[second])
    wait([f, g])
    assert f.key in client.has_what([first])[first]
    assert set(client.has_what([first])) == {first}
    assert set(client.who_has([f])) == {f.key}


@pytest.mark.timeout(30)
def test_as_completed_batches_and_cleanup(client):
    fs = client.map(inc, range(20))
    seen = []
    for batch in as_completed(fs).batches():
        assert batch
        seen += batch
    assert sorted(f.key for f in seen) == sorted(f.key for f in fs)
    assert all(not f._state.callbacks for f in fs)
    ac = as_completed(fs, with_results=True)
    assert sorted(r for _, r in ac) == list(range(1, 21))
