"""The client's components, each against a fake client: the few attributes and
methods a component may use, and nothing else (so a component that reaches
further into Client fails here)."""
from __future__ import annotations

import threading
from typing import Any, cast

import pytest

from tasknest.client.placing import Placing
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
