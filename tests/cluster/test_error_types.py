"""Every way an error leaves the public API raises a TasknestError (errors.py's promise),
and a subclass that says who is at fault and is also what stdlib-minded code catches.

A task's own exception is the one exception to the rule: it is re-raised as itself.
Paths checked elsewhere, with these same classes: KilledWorker (test_resilience),
LostError (test_resilience, test_actors), SchedulerLostError (test_resilience),
AuthenticationError (test_security, test_tls), SerializationError (test_core).
"""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import socket
import threading

import pytest

import tasknest
from tasknest import (CallerError, Client, ClosedClientError, ClusterStartError, ConnectError,
                      FutureCancelledError, LocalCluster, NotFoundError, TasknestError,
                      TimedOutError, as_completed, wait)
from tasknest.errors import BlockingCallError
from tasknest.sizes import parse_size

pytestmark = pytest.mark.timeout(60)

RELEASE = threading.Event()    # in-process workers: tasks wait on it, tests set it


def blocked(x):
    RELEASE.wait(30)
    return x


def inc(x):
    return x + 1


@pytest.fixture
def hold():
    """Tasks calling blocked() wait until the test ends."""
    RELEASE.clear()
    yield
    RELEASE.set()


def check(info, cls, *also):
    """The raised error is a TasknestError, of ``cls``, and of the stdlib ``also``."""
    assert isinstance(info.value, TasknestError), type(info.value).__mro__
    assert isinstance(info.value, cls)
    for base in also:
        assert isinstance(info.value, base)


# -- the caller's mistakes --------------------------------------------------------------
def test_bad_arguments_are_caller_errors(inproc):
    with pytest.raises(CallerError) as info:
        inproc.submit(42)
    check(info, CallerError, ValueError, TypeError)
    with pytest.raises(CallerError) as info:
        inproc.submit(inc, 1).result(timeout="soon")
    check(info, CallerError, ValueError)
    with pytest.raises(CallerError) as info:
        wait([], return_when="never")
    check(info, CallerError)
    with pytest.raises(CallerError) as info:
        inproc.get_executor().map(inc, [1], chunksize=0)
    check(info, CallerError, ValueError)
    with pytest.raises(CallerError) as info:
        inproc.upload_file("/no/such/dir/module.py")
    check(info, CallerError)


def test_sizes_and_addresses_are_checked():
    with pytest.raises(CallerError) as info:
        parse_size("lots")
    check(info, CallerError, ValueError)
    with pytest.raises(CallerError) as info:
        Client("not-an-address", timeout=1)
    check(info, CallerError, ValueError)
    with pytest.raises(CallerError) as info:
        Client("tls://127.0.0.1:1", timeout=1)    # tls:// without TLS settings
    check(info, CallerError)
    with pytest.raises(CallerError) as info:
        LocalCluster(n_workers=0, processes=False, max_frame_size="lots")
    check(info, CallerError)


def test_no_default_client_is_a_caller_error():
    from tasknest import registry
    token = registry.current_client.set(None)
    saved = registry._default
    registry._default = None
    try:
        with pytest.raises(CallerError) as info:
            tasknest.default_client()
        check(info, CallerError)
        with pytest.raises(CallerError) as info:
            tasknest.get_worker()         # not inside a task
        check(info, CallerError)
    finally:
        registry._default = saved
        registry.current_client.reset(token)


def test_a_closed_client_says_so(inproc):
    c = Client(inproc.cluster, set_as_default=False)
    c.close()
    with pytest.raises(ClosedClientError) as info:
        c.submit(inc, 1)
    check(info, ClosedClientError, CallerError)


def test_pending_futures_of_a_client_closed_meanwhile_fail(inproc, hold):
    c = Client(inproc.cluster, set_as_default=False)
    fut = c.submit(blocked, 1, pure=False)
    c.close()
    with pytest.raises(ClosedClientError) as info:
        fut.result(timeout=10)
    check(info, ClosedClientError)


def test_blocking_on_the_event_loop_thread():
    from tasknest.client.loop import get_runner
    runner = get_runner()

    async def nested() -> None:
        runner.run(asyncio.sleep(0))

    with pytest.raises(BlockingCallError) as info:
        asyncio.run_coroutine_threadsafe(nested(), runner.loop).result(10)
    check(info, BlockingCallError, CallerError, RuntimeError)


# -- waiting ----------------------------------------------------------------------------------
def test_waits_that_run_out_are_timed_out_errors(inproc, hold):
    fut = inproc.submit(blocked, 1, pure=False)
    with pytest.raises(TimedOutError) as info:
        fut.result(timeout=0.05)
    check(info, TimedOutError, TimeoutError)
    with pytest.raises(TimedOutError) as info:
        inproc.gather([fut], timeout=0.05)
    check(info, TimedOutError, TimeoutError)
    with pytest.raises(TimedOutError) as info:
        wait([fut], timeout=0.05)
    check(info, TimedOutError, TimeoutError)
    with pytest.raises(TimedOutError) as info:
        next(iter(as_completed([fut], timeout=0.05)))
    check(info, TimedOutError, TimeoutError)
    with pytest.raises(TimedOutError) as info:
        fut.exception(timeout=0.05)
    check(info, TimedOutError, TimeoutError)
    with pytest.raises(TimedOutError) as info:
        inproc.wait_for_workers(10, timeout=0.2)
    check(info, TimedOutError, TimeoutError)


def test_coordination_waits_that_run_out(inproc):
    with pytest.raises(TimedOutError) as info:
        tasknest.Queue("empty-queue", client=inproc).get(timeout=0.05)
    check(info, TimedOutError, TimeoutError)
    with pytest.raises(TimedOutError) as info:
        tasknest.Variable("unset-variable", client=inproc).get(timeout=0.05)
    check(info, TimedOutError, TimeoutError)


def test_missing_datasets(inproc):
    with pytest.raises(NotFoundError) as info:
        inproc.get_dataset("never-published")
    check(info, NotFoundError, KeyError, CallerError)
    assert str(info.value) == "no dataset named 'never-published' is published"
    with pytest.raises(NotFoundError) as info:
        inproc.unpublish_dataset("never-published")
    check(info, NotFoundError, KeyError)


# -- cancelling, as concurrent.futures does ----------------------------------------------------
def test_cancel_is_as_in_concurrent_futures(inproc, hold):
    done = inproc.submit(inc, 1)
    assert done.result(timeout=10) == 2
    assert done.cancel() is False          # finished: cannot be cancelled
    assert not done.cancelled() and done.result() == 2
    pending = inproc.submit(blocked, 2, pure=False)
    assert pending.cancel() is True        # pending: cancelled when it returns
    assert pending.cancelled() and pending.done()
    assert pending.cancel() is True        # cancelling again: still cancelled
    with pytest.raises(FutureCancelledError) as info:
        pending.result(timeout=10)
    check(info, FutureCancelledError, cf.CancelledError)
    with pytest.raises(FutureCancelledError) as info:
        pending.exception(timeout=10)
    check(info, FutureCancelledError, cf.CancelledError)


def test_wait_removes_its_callbacks(inproc, hold):
    slow = inproc.submit(blocked, 3, pure=False)
    fast = inproc.submit(inc, 3)
    done, not_done = wait([slow, fast], return_when=tasknest.FIRST_COMPLETED, timeout=10)
    assert done == {fast} and not_done == {slow}
    assert slow._state.callbacks == []      # nothing of the wait left on the pending one
    with pytest.raises(TimedOutError):
        wait([slow], timeout=0.05)
    assert slow._state.callbacks == []
    for _ in range(3):                       # repeated waits do not pile up callbacks
        wait([slow, fast], return_when=tasknest.FIRST_COMPLETED, timeout=10)
    assert slow._state.callbacks == []


# -- connecting and starting -------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_listening_is_a_connect_error():
    with pytest.raises(ConnectError) as info:
        Client(f"tcp://127.0.0.1:{_closed_port()}", timeout=0.3, set_as_default=False)
    check(info, ConnectError, TimeoutError, ConnectionError, tasknest.CommClosedError)


def test_a_cluster_that_cannot_bind_is_a_cluster_start_error():
    # 192.0.2.0/24 is TEST-NET-1: no interface of this machine has such an address
    with pytest.raises(ClusterStartError) as info:
        LocalCluster(n_workers=0, processes=False, host="192.0.2.1", timeout=10)
    check(info, ClusterStartError, RuntimeError)
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.timeout(120)
def test_a_worker_that_exits_at_start_is_a_cluster_start_error():
    with pytest.raises(ClusterStartError, match="worker process exited during start-up") as info:
        LocalCluster(n_workers=1, nanny=False, worker_args=["--no-such-option"], timeout=60)
    check(info, ClusterStartError, RuntimeError)
