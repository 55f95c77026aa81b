"""map() beyond one chunk streams: it returns before every task was sent, and keeps
every meaning of an eager map (keys, dedup, options, errors, release, close)."""
from __future__ import annotations

import asyncio
import gc
import threading

import pytest

from tasknest import Client, Event, as_completed, wait
from tasknest.client import streaming
from tasknest.client.future import Future
from tasknest.client.streaming import StreamedFuture
from tasknest.errors import CallerError, ClosedClientError, SerializationError

from conftest import wait_until

N = 2 * streaming.CHUNK + 500       # three chunks


def inc(x: int) -> int:
    return x + 1


def add(x: int, y: int) -> int:
    return x + y


def fail_on(x: int, bad: int = -1) -> int:
    if x == bad:
        raise ValueError(f"bad {x}")
    return x


@pytest.fixture
def held_back(monkeypatch):
    """The sender holds back as if the connection were always full."""
    monkeypatch.setattr(streaming, "UNSENT_BOUND", -1)
    return monkeypatch


def _sender_idle(client: Client) -> bool:
    sender = getattr(client, "_sender", None)
    return sender is None or sender.thread is None


def test_keys_dedup_and_results_match_an_eager_map(client) -> None:
    futures = client.map(inc, range(N))
    assert type(futures) is list and len(futures) == N
    assert all(isinstance(f, Future) for f in futures)
    small = client.map(inc, range(10))            # one chunk: the eager path
    assert [f.key for f in futures[:10]] == [f.key for f in small]
    assert futures[N - 1].key == client.submit(inc, N - 1).key
    assert client.gather(futures) == list(range(1, N + 1))
    same = client.map(inc, [7] * N)               # equal calls share one task
    assert len({f.key for f in same}) == 1 and client.gather(same[-1]) == 8
    fresh = client.map(inc, range(N), pure=False)
    assert len({f.key for f in fresh}) == N
    prefixed = client.map(add, range(N), range(N), key="sum")
    assert prefixed[-1].key.startswith("sum-")
    assert prefixed[-1].key == client.map(add, [N - 1], [N - 1], key="sum")[0].key
    listed = client.map(inc, range(N), key=[f"k-{i}" for i in range(N)])
    assert listed[1234].key == "k-1234"
    assert client.gather(prefixed[-1]) == 2 * (N - 1)
    assert client.gather(listed[1234]) == 1235
    assert sum(client.gather(fresh)) == sum(range(1, N + 1))


def test_returns_before_the_rest_is_sent_and_a_future_sends_its_own_chunk(
        client, held_back) -> None:
    futures = client.map(inc, range(N), key="held")
    assert futures[0].result(timeout=30) == 1          # the first chunk went at once
    last = futures[-1]
    assert type(last) is StreamedFuture and not last.done()
    assert last.status == "pending" and "not sent yet" in repr(last)
    assert last.result(timeout=30) == N                # sends its own chunk
    assert type(last) is Future
    assert type(futures[streaming.CHUNK]) is StreamedFuture   # the middle one still waits
    held_back.undo()
    assert client.gather(futures, timeout=60) == list(range(1, N + 1))
    wait_until(lambda: _sender_idle(client), 30, message="the sender finishes")


def test_futures_dropped_before_their_chunk_are_never_sent(client, held_back) -> None:
    futures = client.map(inc, range(N), key="dropped")
    kept = futures[:streaming.CHUNK]
    del futures
    gc.collect()
    held_back.undo()
    wait_until(lambda: _sender_idle(client), 30, message="the sender finishes")
    assert client.gather(kept) == list(range(1, streaming.CHUNK + 1))
    ran = {r["key"] for r in client.get_task_stream() if r["key"].startswith("dropped-")}
    assert ran == {f.key for f in kept}


def test_bad_arguments_raise_at_the_call_or_fail_their_own_future(client) -> None:
    with pytest.raises(SerializationError):
        client.map(inc, [threading.Lock()] + list(range(N)))
    with pytest.raises(CallerError, match="retries"):
        client.map(inc, range(N), retries=-1)
    with pytest.raises(CallerError, match="key"):
        client.map(inc, range(N), key=[f"k-{i}" for i in range(N - 1)] + [3])
    with pytest.raises(CallerError, match="resources"):
        client.map(inc, range(N), resources={"GPU": -1})
    items: list = list(range(N))
    items[-1] = threading.Lock()                  # in the last chunk: its future fails
    futures = client.map(inc, items)
    with pytest.raises(SerializationError):
        futures[-1].result(timeout=30)
    client.retry(futures[-1])                     # it never left: nothing to run again
    assert futures[-1].status == "error"
    assert client.gather(futures[:-1]) == list(range(1, N))
    erred = client.map(fail_on, range(N), bad=N - 1, retries=1)
    with pytest.raises(ValueError, match=f"bad {N - 1}"):
        client.gather(erred)
    assert client.gather(erred[:-1]) == list(range(N - 1))


def test_options_futures_as_arguments_and_cancel(client) -> None:
    first = list(client.scheduler_info(-1)["workers"])[0]
    pinned = client.map(inc, range(N), workers=[first], key="pinned")
    assert client.gather(pinned[-1]) == N
    assert set(client.who_has(pinned[-1])[pinned[-1].key]) == {first}
    inner = client.map(inc, range(N))
    outer = client.map(inc, inner)                 # unsent futures as arguments
    assert client.gather(outer) == list(range(2, N + 2))
    victims = client.map(inc, range(N), key="cancelled")
    client.cancel(victims[-5:])
    assert all(f.cancelled() for f in victims[-5:])
    wait(victims[:-5], timeout=60)
    while_sending = client.map(inc, range(N, 3 * N), key="cancel-all")
    client.cancel(while_sending)                   # (the sender may hold a chunk)
    assert all(f.cancelled() for f in while_sending)
    del pinned, inner, outer, victims, while_sending


def test_wait_as_completed_and_threads_racing_the_sender(client) -> None:
    futures = client.map(inc, range(N), key="raced")
    seen: list = []

    def ask(part: list) -> None:        # other threads ask while the sender sends
        seen.extend(f.key for f in part)
    threads = [threading.Thread(target=ask, args=(futures[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(seen) == sorted(f.key for f in futures) and len(set(seen)) == N
    done, not_done = wait(futures, timeout=60)
    assert len(done) == N and not not_done
    assert sorted(f.result() for f in as_completed(client.map(inc, range(N)))) == \
        list(range(1, N + 1))


def test_close_mid_stream_fails_the_unsent_futures(cluster, held_back) -> None:
    with Client(cluster) as c:
        futures = c.map(inc, range(N))
        assert futures[0].result(timeout=30) == 1
    assert type(futures[-1]) is StreamedFuture
    held_back.undo()
    with pytest.raises(ClosedClientError):
        futures[-1].result(timeout=30)
    wait_until(lambda: _sender_idle(c), 30, message="the sender stops")


def test_async_client_streams(cluster) -> None:
    async def main() -> list:
        async with Client(cluster, asynchronous=True) as c:
            futures = c.map(inc, range(N))
            return await c.gather(futures)
    assert asyncio.run(main()) == list(range(1, N + 1))


def test_in_process_cluster_streams(inproc) -> None:
    """Scheduler, workers and the client's connection on one event loop."""
    futures = inproc.map(inc, range(N))
    assert inproc.gather(futures, timeout=60) == list(range(1, N + 1))


def gated(x: int, gate: str) -> int:
    Event(gate).wait()
    return x


def test_the_sender_waits_while_a_window_of_tasks_is_in_flight(client, monkeypatch) -> None:
    monkeypatch.setattr(streaming, "IN_FLIGHT", streaming.CHUNK)
    gate = Event("window-gate")
    futures = client.map(gated, range(N), gate="window-gate")
    sender = client._sender
    # the first chunk runs two at a time and none ends: the window is full
    wait_until(lambda: sender.holding == "window", 30, message="the sender holds back")
    assert type(futures[streaming.CHUNK]) is StreamedFuture      # the next chunk waits
    assert futures[-1].key                    # a future asked for sends its own chunk
    assert type(futures[-1]) is Future and type(futures[streaming.CHUNK]) is StreamedFuture
    gate.set()
    assert client.gather(futures, timeout=60) == list(range(N))
    wait_until(lambda: _sender_idle(client), 30, message="the sender finishes")
    assert sender.holding is None
