"""The client's components, each against a fake client: the few attributes and
methods a component may use, and nothing else (so a component that reaches
further into Client fails here)."""
from __future__ import annotations

import threading
from typing import Any, cast

import pytest

from tasknest.client.future import FutureState
from tasknest.client.placing import Placing
from tasknest.client.reconnect import Reconnection
from tasknest.client.streaming import MapCall, full_recipe
from tasknest.errors import SchedulerLostError
from tasknest.protocol import messages as m

pytestmark = pytest.mark.timeout(30)


class FakeComm:
    def __init__(self) -> None:
        self.closed = False
        self.sent: list[m.Message] = []

    def send_now(self, msg: m.Message) -> None:
        self.sent.append(msg)


class FakePeers:
    def __init__(self, n: int) -> None:
        self.comms = {f"tcp://w:{i}": FakeComm() for i in range(n)}


class FakeClient:
    """What Placing uses of its Client: the lock, the peers, _send and _wake."""

    def __init__(self, nworkers: int = 2) -> None:
        self._lock = threading.RLock()
        self._peers: FakePeers | None = FakePeers(nworkers)
        self.sent: list[m.Message] = []
        self.woken = 0

    def _send(self, msg: m.Message) -> None:
        self.sent.append(msg)

    def _wake(self) -> None:
        self.woken += 1


def placing(nworkers: int = 2) -> tuple[Placing, FakeClient]:
    client = FakeClient(nworkers)
    return Placing(cast(Any, client)), client


def place(p: Placing, key: str, seq: int) -> str:
    lane = p.lane()
    assert lane is not None
    p.place(key, b"f", b"a", [0, 0, seq], 0, *lane)
    return lane[0]


def test_each_lane_takes_one_placed_task_at_a_time():
    p, client = placing(2)
    first = place(p, "a", 1)
    second = place(p, "b", 2)
    assert first != second
    assert p.lane() is None                       # every lane busy
    assert p.lane_to(first) is None
    assert [msg.op for msg in client.sent] == ["placed", "placed"]
    peers = client._peers
    assert peers is not None
    assert [msg.key for msg in peers.comms[first].sent] == ["a"]


def test_however_many_workers_only_a_few_lanes_the_rest_goes_through_the_scheduler():
    """A map on 500 workers placed one task a message on each of them; the scheduler
    sends a worker what is queued for it in one."""
    from tasknest.client.placing import LANES
    p, _ = placing(500)
    lanes = {place(p, f"k{i}", i) for i in range(LANES)}
    assert len(lanes) == LANES
    assert p.lane() is None


def test_a_result_frees_the_lane_and_fills_in_the_record_not_yet_sent():
    p, client = placing(1)
    addr = place(p, "a", 1)
    record = client.sent[0]
    assert isinstance(record, m.Placed) and record.nbytes == m.NOT_YET
    p.done(m.KeyMemory(key="a", type="int", nbytes=8, who_has=[addr], value=None))
    assert p.placed == {}
    assert record.nbytes == 8 and record.type == "int"
    assert p.lane() == (addr, cast(FakePeers, client._peers).comms[addr])


def test_a_lost_lane_forgets_only_what_was_placed_there():
    p, _ = placing(2)
    first = place(p, "a", 1)
    place(p, "b", 2)
    p.lane_lost(first)
    assert list(p.placed) == ["b"]
    assert p.lane() is not None and p.lane()[0] == first  # type: ignore[index]


def test_no_lane_without_connections_or_to_a_closed_one():
    p, client = placing(1)
    peers = client._peers
    assert peers is not None
    comm = peers.comms["tcp://w:0"]
    comm.closed = True
    assert p.lane() is None and p.lane_to("tcp://w:0") is None
    client._peers = None
    assert p.lane() is None and p.lane_to("tcp://w:0") is None


# -- Reconnection ---------------------------------------------------------------------
class FakeSchedulerComm:
    def __init__(self) -> None:
        self.closed = False
        self.close_reason = "connection reset"
        self.sent: list[m.Message] = []

    def send(self, msg: m.Message) -> None:
        self.sent.append(msg)


class FakeReconnectingClient:
    """What Reconnection uses of its Client."""

    def __init__(self, reconnect_timeout: float = 0.0) -> None:
        self.status = "running"
        self.scheduler_address = "tcp://s:1"
        self.reconnect_timeout = reconnect_timeout
        self._comm = FakeSchedulerComm()
        self._lock = threading.RLock()
        self._states: dict[str, FutureState] = {}
        self._placing = Placing(cast(Any, FakeClient()))
        self._requests: dict[int, m.Message] = {}
        self._replies: dict[int, Any] = {}
        self.failed: list[BaseException] = []

    def _fail_pending(self, error: BaseException) -> None:
        self.failed.append(error)


def test_without_a_reconnect_timeout_a_lost_scheduler_fails_what_is_pending():
    client = FakeReconnectingClient(reconnect_timeout=0.0)
    r = Reconnection(cast(Any, client))
    r.lost(cast(Any, FakeSchedulerComm()))          # not the client's connection: ignored
    assert client.status == "running" and not client.failed
    r.lost(cast(Any, client._comm))
    assert client.status == "closed" and r.attempt is None
    [error] = client.failed
    assert isinstance(error, SchedulerLostError) and "connection reset" in str(error)


class FakeReply:
    def __init__(self) -> None:
        self.error: BaseException | None = None

    def done(self) -> bool:
        return self.error is not None

    def set_exception(self, error: BaseException) -> None:
        self.error = error


def test_back_it_says_again_what_is_pending_and_held_and_fails_other_requests():
    client = FakeReconnectingClient(reconnect_timeout=5.0)
    client.status = "reconnecting"
    pending = FutureState((b"f", b"a", [], [0, 0, 1], 0, None, None, False))
    finished = FutureState((b"f", b"b", [], [0, 0, 2], 0, None, None, False))
    finished.finish("int", 8, [], None)
    assert finished.recipe is None            # (kept only until the result)
    client._states = {"a": pending, "b": finished}
    client._placing.placed["a"] = cast(Any, object())
    query, restart = m.Query(rid=1, what="who_has", arg=None), m.Restart(rid=2)
    client._requests = {1: query, 2: restart}
    reply = FakeReply()
    client._replies = {2: reply}
    Reconnection(cast(Any, client))._reassert()
    assert client.status == "running"
    assert client._placing.placed == {}
    sent = client._comm.sent
    assert [msg.op for msg in sent] == ["submit", "holding", "query"]
    assert sent[0].key == "a" and sent[1].keys == ["a", "b"]
    assert isinstance(reply.error, SchedulerLostError) and 2 not in client._requests


def test_a_maps_items_sent_again_keep_their_order_and_their_maps_options():
    mp = MapCall.__new__(MapCall)           # (what full_recipe reads of a map)
    mp.fbytes, mp.priority, mp.depth, mp.seq0 = b"f", 5, 1, 100
    mp.retries, mp.workers, mp.resources, mp.loose = 2, None, None, False
    sent: dict = {}
    assert full_recipe((mp, b"x"), sent) == (b"f", b"x", [], [5, 1, 100], 2, None, None, False)
    assert full_recipe((mp, b"y", ("d",)), sent) == (b"f", b"y", ["d"], [5, 1, 101], 2, None,
                                                     None, False)
    plain = (b"g", b"z", [], [0, 0, 7], 0, None, None, False)
    assert full_recipe(plain, sent) is plain


def test_a_state_waits_through_a_callback_and_keeps_none_after_a_timeout():
    st = FutureState()
    assert st.wait(0.01) is False and not st.callbacks    # (a poller leaves none behind)
    finisher = threading.Thread(target=st.finish, args=("int", 8, ["tcp://w:1"], None))
    finisher.start()
    assert st.wait(10) and st.status == "finished"
    finisher.join(10)
    assert (st.type, st.who_has, st.error) == ("int", ("tcp://w:1",), None)
    failed = FutureState()
    failed.fail(ValueError("bad"), "remote text")
    assert failed.wait(0) and isinstance(failed.error, ValueError)
    assert failed.traceback == "remote text" and failed.status == "error"
