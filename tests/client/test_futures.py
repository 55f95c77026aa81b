"""The Future API on real worker processes: waiting, cancelling, callbacks, shapes, scatter.

Tasks that must stay pending block on a file the test creates (``gate``), so no
test depends on timing.
"""
from __future__ import annotations

import gc
import os
import pickle
import re
import threading

import pytest

from tasknest import (ALL_COMPLETED, FIRST_COMPLETED, Future, FutureCancelledError,
                      as_completed, fire_and_forget, wait, worker_client)

from conftest import wait_for_file, wait_until


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def opened_after(path):
    """Block this task until the test creates ``path``; a str result."""
    wait_for_file(path)
    return "opened"


def write_file(_ready, path):
    with open(path, "w") as f:
        f.write("done")
    return path


def total(nested, k=0):
    return sum(nested["a"]) + sum(nested["b"]) + k


def make_future(x):
    """Return futures made in here: they pickle as keys and re-bind on the client."""
    with worker_client() as c:
        f = c.submit(inc, x)
        return {"future": f, "list": [c.submit(inc, x + 1)]}


class Gate:
    def __init__(self, tmp_path, name="gate"):
        self.path = str(tmp_path / name)

    def open(self):
        with open(self.path, "w"):
            pass


@pytest.mark.timeout(30)
def test_result_timeout_done_status_type_and_repr(client, tmp_path):
    gate = Gate(tmp_path)
    f = client.submit(opened_after, gate.path)
    with pytest.raises(TimeoutError):
        f.result(timeout=0.1)
    assert not f.done() and f.status == "pending"
    assert re.fullmatch(r"<Future: status: pending, key: opened_after-[0-9a-f]{24}>", repr(f))
    gate.open()
    assert f.result(timeout=20) == "opened"
    assert f.done() and f.status == "finished" and f.type is str
    g = client.submit(inc, 1)
    g.result()
    assert re.fullmatch(r"<Future: status: finished, type: int, key: inc-[0-9a-f]{24}>", repr(g))


@pytest.mark.timeout(30)
def test_cancel_a_waiting_future(client, tmp_path):
    gate = Gate(tmp_path)
    blocker = client.submit(opened_after, gate.path)
    dependent = client.submit(inc, blocker)   # a str + 1 would fail: it must never run
    assert dependent.cancel()
    wait_until(dependent.cancelled, 10, message="the future reports cancelled")
    assert dependent.status == "cancelled" and dependent.done()
    with pytest.raises(FutureCancelledError):
        dependent.result()
    gate.open()
    assert blocker.result() == "opened"
    assert not blocker.cancelled()


@pytest.mark.timeout(30)
def test_add_done_callback(client, tmp_path):
    gate = Gate(tmp_path)
    called: list[Future] = []
    event = threading.Event()

    def callback(fut):
        called.append(fut)
        event.set()

    f = client.submit(opened_after, gate.path)
    f.add_done_callback(callback)
    assert not called
    gate.open()
    assert event.wait(20)
    assert called == [f] and called[0].done()
    late: list[Future] = []
    f.add_done_callback(late.append)            # already done: called at once
    assert late == [f]


@pytest.mark.timeout(30)
def test_wait_all_first_and_timeout(client, tmp_path):
    futures = client.map(inc, range(20))
    done, not_done = wait(futures)
    assert len(done) == 20 and not not_done
    assert wait(futures, return_when=ALL_COMPLETED).done == set(futures)

    gate = Gate(tmp_path)
    slow = client.submit(opened_after, gate.path)
    fast = client.submit(inc, 100)
    done, not_done = wait([slow, fast], return_when=FIRST_COMPLETED)
    assert fast in done and slow in not_done
    with pytest.raises(TimeoutError):
        wait([slow, fast], timeout=0.1)
    done, not_done = wait([slow], timeout=0.1, return_when=FIRST_COMPLETED)
    assert not done and not_done == {slow}
    gate.open()
    assert wait([slow, fast], timeout=20).done == {slow, fast}


@pytest.mark.timeout(30)
def test_as_completed(client):
    futures = client.map(inc, range(30))
    assert {f.result() for f in as_completed(futures)} == set(range(1, 31))
    pairs = list(as_completed(client.map(add, range(10), range(10)), with_results=True))
    assert sorted(r for _, r in pairs) == [2 * i for i in range(10)]
    assert all(f.result() == r for f, r in pairs)
    ac = as_completed([client.submit(inc, 1)])
    seen = []
    for f in ac:
        seen.append(f.result())
        if len(seen) == 1:
            ac.add(client.submit(inc, 2))       # more while iterating
    assert seen == [2, 3]


@pytest.mark.timeout(30)
def test_fire_and_forget_runs_without_a_kept_future(client, tmp_path):
    gate = Gate(tmp_path)
    blocker = client.submit(opened_after, gate.path)
    out = str(tmp_path / "written.txt")
    f = client.submit(write_file, blocker, out)
    fire_and_forget(f)
    del f
    gc.collect()
    gate.open()                                 # the task can run only now, unobserved
    wait_until(lambda: os.path.exists(out), 20, message="the fire-and-forget task ran")
    with open(out) as fh:
        assert fh.read() == "done"


@pytest.mark.timeout(30)
def test_futures_nested_in_arguments_and_gather_keeps_shapes(client):
    f1, f2, f3, f4 = client.map(inc, [1, 2, 3, 4])   # 2, 3, 4, 5
    nested = {"a": [f1, f2], "b": (f3,)}
    assert client.submit(total, nested, k=f4).result() == 2 + 3 + 4 + 5
    assert client.gather({"x": [f1, (f2, f3)], "y": f4, "z": 7}) == \
        {"x": [2, (3, 4)], "y": 5, "z": 7}
    out = client.gather((f1, [f2, {"k": f3}]))
    assert out == (2, [3, {"k": 4}]) and isinstance(out, tuple)


@pytest.mark.timeout(30)
def test_scatter_list_dict_single_and_broadcast(client):
    xs = client.scatter([1, 2, 3])
    assert isinstance(xs, list) and all(isinstance(f, Future) for f in xs)
    assert client.gather(xs) == [1, 2, 3]
    d = client.scatter({"left": 10, "right": 20})
    assert set(d) == {"left", "right"}
    assert client.submit(add, d["left"], d["right"]).result() == 30
    one = client.scatter(41)
    assert isinstance(one, Future) and client.submit(inc, one).result() == 42
    assert client.gather(client.map(inc, xs)) == [2, 3, 4]

    b = client.scatter(99, broadcast=True)
    workers = set(client.has_what())
    assert len(workers) == 2
    assert set(client.who_has(b)[b.key]) == workers
    assert client.gather(client.map(add, [b] * 4, range(4))) == [99, 100, 101, 102]


@pytest.mark.timeout(30)
def test_who_has_has_what_and_wait_for_workers(client):
    client.wait_for_workers(2, timeout=10)
    with pytest.raises(TimeoutError):
        client.wait_for_workers(3, timeout=0.2)
    f = client.submit(inc, 5)
    f.result()
    holders = client.who_has(f)[f.key]
    assert len(holders) == 1
    assert f.key in client.has_what()[holders[0]]
    assert f.key in client.who_has()          # all keys


@pytest.mark.timeout(30)
def test_futures_pickle_as_keys_and_rebind(client):
    f = client.submit(inc, 10)
    data = pickle.dumps(f)
    assert len(data) < 200 and f.key.encode() in data
    g = pickle.loads(data)
    assert g == f and g.client is client and g.result() == 11
    # futures made inside a task, returned in its result, are usable here
    out = client.submit(make_future, 1).result()
    assert isinstance(out["future"], Future)
    assert out["future"].result() == 2
    assert client.gather(out["list"]) == [3]
