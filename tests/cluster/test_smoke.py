import pytest

from tasknest import worker_client


def inc(x):
    return x + 1


def fib(n):
    if n < 2:
        return n
    with worker_client() as c:
        a, b = c.gather([c.submit(fib, n - 1, pure=False), c.submit(fib, n - 2, pure=False)])
        return a + b


@pytest.mark.timeout(60)
def test_submit_result(client):
    assert client.submit(inc, 1).result() == 2


@pytest.mark.timeout(60)
def test_fib_tree_frees_everything(client):
    assert client.submit(fib, 12, pure=False).result() == 144


@pytest.mark.timeout(60)
def test_inproc(inproc):
    assert inproc.gather(inproc.map(inc, range(100))) == list(range(1, 101))
    assert inproc.submit(fib, 10).result() == 55
