"""Caller mistakes raise a CallerError (a ValueError and a TypeError) that names the problem."""
from __future__ import annotations

import pytest

from tasknest import Client, LocalCluster
from tasknest.client.future import wait
from tasknest.errors import CallerError, ClosedClientError, FutureCancelledError


def inc(x):
    return x + 1


@pytest.mark.timeout(30)
@pytest.mark.parametrize("bad", [42, "inc", None])
def test_submit_needs_a_callable(client, bad):
    with pytest.raises(CallerError, match=r"submit\(\) needs a callable.*" + type(bad).__name__):
        client.submit(bad, 1)
    with pytest.raises(CallerError, match=r"map\(\) needs a callable"):
        client.map(bad, [1, 2])


def test_caller_error_is_both_a_value_and_a_type_error(client):
    with pytest.raises(TypeError):
        client.submit(42)
    with pytest.raises(ValueError):
        client.submit(42)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("key", [123, "", b"bytes", ("tuple",)])
def test_bad_key(client, key):
    with pytest.raises(CallerError, match=r"key must be a non-empty string, got " +
                       __import__("re").escape(repr(key))):
        client.submit(inc, 1, key=key)


@pytest.mark.timeout(30)
def test_other_bad_arguments_name_the_argument(client):
    with pytest.raises(CallerError, match="retries must be a non-negative integer, got -1"):
        client.submit(inc, 1, retries=-1)
    with pytest.raises(CallerError, match="workers must be addresses or names"):
        client.submit(inc, 1, workers=[1, 2])
    with pytest.raises(CallerError, match="errors must be 'raise' or 'skip', got 'ignore'"):
        client.gather([], errors="ignore")
    with pytest.raises(CallerError, match="map\\(\\) got 1 keys for 2 items"):
        client.map(inc, [1, 2], key=["a"])
    with pytest.raises(CallerError, match="address must be"):
        Client(12345)
    with pytest.raises(CallerError, match="n_workers must be a non-negative integer, got -1"):
        LocalCluster(n_workers=-1)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("timeout", [-1, -0.5, "soon"])
def test_negative_or_non_numeric_timeout(client, cluster, timeout):
    fut = client.submit(inc, 1)
    message = (r"timeout must be None or a non-negative number of seconds, got " +
               __import__("re").escape(repr(timeout))) if not isinstance(timeout, str) else \
        r"timeout 'soon' is not a duration: use seconds or a string such as '10 ms'"
    with pytest.raises(CallerError, match=message):
        fut.result(timeout=timeout)
    with pytest.raises(CallerError, match=message):
        client.gather([fut], timeout=timeout)
    with pytest.raises(CallerError, match=message):
        wait([fut], timeout=timeout)
    with pytest.raises(CallerError, match=message):
        client.scatter([1], timeout=timeout)
    with pytest.raises(CallerError, match=message):
        client.wait_for_workers(1, timeout=timeout)
    with pytest.raises(CallerError, match=message):
        Client(cluster, timeout=timeout)
    assert fut.result(timeout=20) == 2


@pytest.mark.timeout(30)
def test_use_of_a_closed_client(cluster):
    c = Client(cluster, set_as_default=False)
    fut = c.submit(inc, 1, workers=["nowhere"])       # stays pending: no such worker
    c.close()
    for call in (lambda: c.submit(inc, 1), lambda: c.map(inc, [1]),
                 lambda: c.gather([fut]), lambda: c.scatter([1]), lambda: c.cancel([fut])):
        with pytest.raises(ClosedClientError, match="the client is closed"):
            call()
    with pytest.raises(ClosedClientError, match="the client was closed"):
        fut.result(timeout=5)
    assert isinstance(ClosedClientError("x"), CallerError)
    c.close()                                          # closing twice is fine


@pytest.mark.timeout(60)
def test_future_from_another_cluster(client):
    with LocalCluster(n_workers=1, processes=False) as other_cluster:
        with Client(other_cluster, set_as_default=False) as other:
            theirs = other.submit(inc, 1)
            assert theirs.result(timeout=20) == 2
            ours = client.submit(inc, 10)
            for call in (lambda: client.submit(inc, theirs), lambda: client.gather([theirs]),
                         lambda: client.map(inc, [theirs]), lambda: other.gather({"x": ours}),
                         lambda: other.submit(inc, [1, {"deep": ours}])):
                with pytest.raises(CallerError, match=r"future '[^']+' of the cluster at tcp://"):
                    call()
            with pytest.raises(CallerError, match=theirs.key):
                client.submit(inc, theirs)
            assert client.gather(ours) == 11 and other.gather(theirs) == 2
            del theirs, ours


@pytest.mark.timeout(30)
def test_result_of_a_cancelled_future_names_the_key(client):
    fut = client.submit(inc, 1, workers=["nowhere"])    # never runs: no such worker
    dependent = client.submit(inc, fut)
    fut.cancel()
    with pytest.raises(FutureCancelledError, match=f"^{fut.key} was cancelled"):
        fut.result(timeout=10)
    with pytest.raises(FutureCancelledError, match=f"^{dependent.key} was cancelled"):
        dependent.result(timeout=10)
    with pytest.raises(FutureCancelledError, match=fut.key):
        fut.exception(timeout=10)
    assert fut.cancelled() and fut.status == "cancelled"
    with pytest.raises(FutureCancelledError, match=fut.key):
        client.gather([fut, dependent])
