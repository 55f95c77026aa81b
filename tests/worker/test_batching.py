"""Messages from task threads travel in batches; none is ever left behind.

A task thread's messages wait a moment for company and go out at once when the
thread waits on tasknest (gather, result, parking). These tests cover the
cases no wait follows: the batch must still leave on its own.
"""
from __future__ import annotations


import pytest

from tasknest import fire_and_forget, get_client
from tasknest.protocol.serialize import dumps_value, loads_value, plain_nbytes

from conftest import wait_for_file


def _touch(path: str) -> str:
    with open(path, "w") as f:
        f.write("done")
    return path


def _parent_that_never_waits_on_tasknest(path: str) -> str:
    # The child is claimed into this worker's queue, and this thread then blocks
    # outside tasknest: only the other worker can run it, which it can only do
    # once the claim has reached the scheduler (so the batch left unprompted).
    fire_and_forget(get_client().submit(_touch, path, pure=False))
    wait_for_file(path, timeout=20)   # polling a file: the situation under test
    return "ok"


@pytest.mark.timeout(60)
def test_claim_leaves_without_the_task_waiting_on_tasknest(client, tmp_path):
    path = str(tmp_path / "child-ran")
    assert client.submit(_parent_that_never_waits_on_tasknest, path).result(timeout=30) == "ok"
    assert open(path).read() == "done"


def _big_plain(n: int) -> list:
    return [bytes([i % 256]) * 10_000 for i in range(n)]


def _total(chunks: list) -> int:
    return sum(len(c) + c[0] for c in chunks)


@pytest.mark.timeout(60)
def test_large_plain_result_is_pickled_only_when_it_moves(client):
    # 200 chunks of 10 kB: not pickled when it finishes, pickled for the peer or the
    # client that asks for it; both get it whole.
    workers = sorted(client.nthreads())
    big = client.submit(_big_plain, 200, workers=[workers[0]])
    total = client.submit(_total, big, workers=[workers[1]])
    expected = sum(10_000 + i % 256 for i in range(200))
    assert total.result(timeout=30) == expected
    assert big.result(timeout=30) == _big_plain(200)


@pytest.mark.timeout(10)
def test_plain_nbytes_estimates_plain_values_and_refuses_the_rest():
    assert plain_nbytes(b"x" * 1000) == 1000
    assert plain_nbytes("abc") == 3
    assert plain_nbytes(7) == 9
    assert plain_nbytes([b"ab", b"cde"]) == 5 + 2 * 5
    assert plain_nbytes((1, 2.0, None)) == 27
    for other in ([b"x", 1], [[1]], {"a": 1}, object(), [object()]):
        assert plain_nbytes(other) is None
    # whatever it accepts really pickles
    for value in (b"x" * 100, [b"a", b"b"], (1, 2.5, True, None)):
        assert loads_value(dumps_value(value)) == value
