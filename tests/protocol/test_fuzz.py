"""Garbage never hurts: random and mutated frames at a live scheduler and a live worker.

Each hypothesis example opens one connection (no handshake, a wrong key, or the
right key followed by a registration), sends a few chunks (random bytes, random
msgpack, catalogue-shaped messages with random or wrongly typed fields, runs of
one op as columns, mutated or truncated frames, absurd length prefixes),
half-closes and waits for the server to finish with it. Afterwards both processes are alive, logged no
unexpected error, and still run tasks correctly.
"""
from __future__ import annotations

import operator
import socket

import cloudpickle
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import wait_until
from rawpeer import ProcCluster, RawPeer, frame, register_client
from tasknest import Client
from tasknest.protocol import auth
from tasknest.protocol import messages as m
from tasknest.protocol.runs import RUN, RUN_OPS

TOKEN = auth.new_token()


@pytest.fixture(scope="module")
def procs(tmp_path_factory):
    with ProcCluster(tmp_path_factory.mktemp("fuzzlogs"), TOKEN, n_workers=1,
                     scheduler_args=("--max-frame-size", "4MiB")) as pc:
        yield pc


def check_cluster(procs: ProcCluster) -> None:
    """Both processes alive, no unexpected error logged, tasks still right."""
    assert procs.alive(), "a server process died"
    with Client(procs.address, token=TOKEN, timeout=10) as c:
        x = c.scatter(list(range(10)))
        total = c.submit(sum, x)
        doubled = c.map(operator.mul, x, [2] * 10)
        assert total.result(timeout=20) == 45
        assert c.gather(doubled, timeout=20) == [2 * i for i in range(10)]
        assert c.submit(operator.add, 1, 2, pure=False).result(timeout=20) == 3
    for which in ("scheduler", "worker-0"):
        log = procs.log(which)
        assert "Traceback" not in log, f"the {which} hit an unexpected error:\n{log[-3000:]}"


# -- messages shaped like the catalogue, with plausible or wrong field values ----------------
KEYS = st.sampled_from(["a", "b", "inc-1", "", "x" * 300]) | st.text(max_size=8)
SCALARS = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats()
           | st.text(max_size=8) | st.binary(max_size=16))
ANYTHING = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)
PICKLES = st.sampled_from([cloudpickle.dumps(operator.add), cloudpickle.dumps(((1, 2), None)),
                           cloudpickle.dumps(((3,), {"b": 1}))])
BYTES = PICKLES | st.binary(max_size=48)
FRAMES = st.lists(BYTES, max_size=2)

TYPED = {
    str: KEYS, int: st.integers(-2, 3) | st.integers(-2**63, 2**64 - 1), bytes: BYTES,
    float: st.floats(),
    bool: st.booleans(), dict: st.dictionaries(st.text(max_size=4), SCALARS, max_size=2),
    type(None): st.none(), object: ANYTHING,
    m.STRS: st.lists(KEYS, max_size=3), m.OPT_STRS: st.none() | st.lists(KEYS, max_size=3),
    m.INTS: st.lists(st.integers(-1, 10**6), max_size=3),
    m.NUMS: st.lists(st.integers(-5, 5) | st.floats(), max_size=4),
    m.FRAMES: FRAMES, m.OPT_FRAMES: st.none() | FRAMES,
    m.FRAMES_LIST: st.lists(FRAMES, max_size=3),
    m.WHO_HAS: st.dictionaries(KEYS, st.lists(st.sampled_from(["tcp://127.0.0.1:1", "nonsense"]),
                                              max_size=2), max_size=2),
    m.DATA: st.dictionaries(KEYS, st.none() | FRAMES, max_size=2),
    m.PLAN: st.dictionaries(st.sampled_from(["tcp://127.0.0.1:1", "nonsense"]),
                            st.lists(st.integers(-1, 3), max_size=3), max_size=2),
    m.AMOUNTS: st.dictionaries(KEYS, st.integers(0, 3) | st.floats(0, 1e9), max_size=2),
    m.OPT_AMOUNTS: st.none() | st.dictionaries(KEYS, st.integers(0, 3), max_size=2),
    m.LISTS: st.lists(st.lists(SCALARS | KEYS, max_size=6), max_size=3),
}


TYPED_FIELD = {t: st.one_of(*[TYPED[x] for x in t]) if isinstance(t, tuple) else TYPED[t]
               for c in m.CATALOGUE.values() for t in c.types}


# (a client may rightly restart every worker: that would end the fuzzed cluster)
ALL_OPS = sorted(set(m.CATALOGUE) - {"restart"})
ROLE_OPS = {   # what each kind of peer may send, so that fuzzing reaches the state machines
    "client": ["define-func", "submit", "want", "release", "cancel", "fire-and-forget",
               "scatter", "query", "coord", "run"],
    "worker": ["define-func", "submit", "want", "release", "cancel", "task-finished",
               "task-erred", "claim", "secede", "rejoin", "idle", "steal-reply", "add-keys",
               "missing-data", "put-data-done", "heartbeat", "coord", "run-done", "monitor"],
    "peer": ["get-data", "register-peer"],
    "none": ALL_OPS,
}


@st.composite
def messages(draw: st.DrawFn, ops: list[str] = ALL_OPS) -> list:
    op_name = draw(st.sampled_from(ops) if draw(st.integers(0, 4)) else st.sampled_from(ALL_OPS))
    cls = m.CATALOGUE[op_name]
    # mostly well-formed, so that most messages reach the state machines; else one flaw
    flaw = draw(st.sampled_from(["none"] * 6 + ["field", "short", "long", "op"]))
    fields = [draw(TYPED_FIELD[t]) for t in cls.types]
    if flaw == "field" and fields:
        fields[draw(st.integers(0, len(fields) - 1))] = draw(ANYTHING)
    elif flaw == "short" and fields:
        fields.pop()
    elif flaw == "long":
        fields.append(draw(ANYTHING))
    op = draw(st.sampled_from(["nope", "", "submit "]) | ANYTHING) if flaw == "op" else cls.op
    return [op, *fields]


@st.composite
def runs(draw: st.DrawFn) -> list:
    """Messages of one op as a run (protocol/runs.py): mostly well-formed, else one flaw."""
    op = draw(st.sampled_from(sorted(RUN_OPS)))
    cls = m.CATALOGUE[op]
    rows = [[draw(TYPED_FIELD[t]) for t in cls.types] for _ in range(draw(st.integers(1, 4)))]
    cols = [list(c) for c in zip(*rows)]
    flaw = draw(st.sampled_from(["none"] * 3 + ["cell", "ragged", "columns", "op"]))
    if flaw == "cell":
        cols[draw(st.integers(0, len(cols) - 1))][0] = draw(ANYTHING)
    elif flaw == "ragged":
        cols[draw(st.integers(0, len(cols) - 1))].pop()
    elif flaw == "columns":
        cols.pop()
    elif flaw == "op":
        op = draw(st.sampled_from(ALL_OPS) | ANYTHING)
    return [RUN, op, *cols]


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    b = bytearray(data)
    for pos, val in edits:
        b[pos % len(b)] = val
    return bytes(b[:cut] if cut is not None else b)


def chunks(ops: list[str]) -> st.SearchStrategy:
    return st.one_of(
        st.lists(messages(ops), min_size=1, max_size=4).map(frame),              # messages
        st.lists(runs() | messages(ops), min_size=1, max_size=3).map(frame),      # runs
        st.binary(max_size=120),                                                  # raw bytes
        st.binary(max_size=120).map(lambda b: len(b).to_bytes(8, "little") + b),  # framed junk
        ANYTHING.map(lambda x: frame(x)),                                         # any msgpack
        st.builds(_mutate, st.lists(messages(ops), min_size=1, max_size=2).map(frame),
                  st.lists(st.tuples(st.integers(0, 10**4), st.integers(0, 255)), max_size=4),
                  st.none() | st.integers(0, 200)),                               # mutated
        st.integers(0, 2**64 - 1).map(lambda n: n.to_bytes(8, "little")),         # any prefix
    )


REGISTRATIONS = {
    "client": None,   # register_client() does it and waits for the welcome
    "worker": frame([["register-worker", "fuzz", "tcp://127.0.0.1:9", 1, 1, 0, [], "0", {}]]),
    "peer": frame([["register-peer", "fuzz"]]),
    "none": b"",
}


def _session(address: str, scheduler: bool, mode: str, register: str,
             chunks: list[bytes]) -> None:
    peer = RawPeer(address, timeout=5)
    try:
        if mode == "auth":
            assert peer.handshake(TOKEN.encode())
            if register == "client" and scheduler:
                register_client(peer, "fuzz")
            else:
                peer.send(REGISTRATIONS[register] or frame([["register-client", "c-f", "0"]]))
        elif mode == "wrong-key":
            peer.handshake(b"wrong")
        for data in chunks:
            peer.send(data)
        peer.sock.shutdown(socket.SHUT_WR)       # then wait until the server is done with us
        assert peer.closed_by_server(timeout=10) is not None, "the server never closed"
    except OSError:
        pass                                     # it closed on us mid-send: that is allowed
    finally:
        peer.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", ["scheduler", "worker"])
def test_fuzzed_frames_never_hurt(procs, target):
    address = procs.address if target == "scheduler" else procs.worker_addresses[0]

    @settings(max_examples=200, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mode=st.sampled_from(["auth", "auth", "auth", "none", "wrong-key"]),
           plan=st.sampled_from(sorted(ROLE_OPS)).flatmap(
               lambda role: st.tuples(st.just(role), st.lists(chunks(ROLE_OPS[role]),
                                                              min_size=1, max_size=5))))
    def fuzz(mode: str, plan: tuple[str, list[bytes]]) -> None:
        _session(address, target == "scheduler", mode, *plan)
        assert procs.alive()

    fuzz()
    check_cluster(procs)


# -- targeted: well-formed messages that make no sense must not crash anything ---------------
def _authed_client(procs: ProcCluster) -> RawPeer:
    peer = RawPeer(procs.address, timeout=10)
    assert peer.handshake(TOKEN.encode())
    register_client(peer)
    return peer


@pytest.mark.timeout(40)
def test_garbage_function_bytes_err_the_task_not_the_worker(procs):
    peer = _authed_client(procs)
    try:
        peer.send_msgs([["define-func", 0, b"\x80\x05garbage, not a pickle"],
                        ["submit", "garbage-func", 0, cloudpickle.dumps(((), None)), [],
                         [0, 0, 0], 0, None, None, False]])
        erred = peer.recv_until("key-erred")
        assert erred[1] == "garbage-func" and erred[4] == "serialization"
        assert "cannot unpickle the function" in erred[3]
        peer.send_msgs([["define-func", 1, cloudpickle.dumps(operator.add)],
                        ["submit", "bad-args", 1, b"junk", [], [0, 0, 0], 0, None, None, False]])
        assert peer.recv_until("key-erred")[1] == "bad-args"
    finally:
        peer.close()
    check_cluster(procs)


@pytest.mark.timeout(40)
def test_nonsense_from_an_authenticated_client_is_answered_or_ignored(procs):
    peer = _authed_client(procs)
    try:
        peer.send_msgs([["release", ["never-existed"]], ["cancel", ["nor-this"]],
                        ["fire-and-forget", ["nor-that"]], ["want", ["unknown-key"]]])
        erred = peer.recv_until("key-erred")
        assert erred[1] == "unknown-key" and "unknown to the scheduler" in erred[3]
        peer.send_msgs([["submit", "k", 7, b"", [], [0], 0, None, None, False]])   # function never defined
        assert peer.closed_by_server() is not None
    finally:
        peer.close()
    wait_until(lambda: "never defined" in procs.log(), 10, message="the reason is logged")
    check_cluster(procs)


@pytest.mark.timeout(40)
def test_a_fake_worker_reporting_unknown_keys_is_told_to_free_them(procs):
    peer = RawPeer(procs.address, timeout=10)
    try:
        assert peer.handshake(TOKEN.encode())
        peer.send(REGISTRATIONS["worker"])
        peer.recv_until("welcome")
        peer.send_msgs([["task-finished", "ghost", 10, "int", None, [], [], 0],
                        ["task-erred", "ghost2", [], "tb", "exception", 0],
                        ["steal-reply", "ghost3", True, False], ["secede", "ghost4"],
                        ["rejoin", "ghost5"], ["missing-data", "ghost6", "tcp://x:1"],
                        ["put-data-done", 12345, ["ghost7"], [1]]])
        assert peer.recv_until("free")[1] == ["ghost"]
    finally:
        peer.close()
    check_cluster(procs)


@pytest.mark.timeout(40)
def test_worker_answers_get_data_for_missing_keys_with_nothing(procs):
    peer = RawPeer(procs.worker_addresses[0], timeout=10)
    try:
        assert peer.handshake(TOKEN.encode())
        peer.send_msgs([["register-peer", "p"], ["get-data", 1, ["missing", "also-missing"]]])
        assert peer.recv_until("data") == ["data", 1, {"missing": None, "also-missing": None}]
        peer.send_msgs([["compute", "k", 0, b"", {}, [0], 0]])      # not a peer's business
        assert peer.closed_by_server() is not None
    finally:
        peer.close()
    check_cluster(procs)


@pytest.mark.timeout(40)
@pytest.mark.parametrize("bad, reason", [
    (frame([["no-such-op", 1]]), "unknown op"),
    (frame([["want", "not-a-list"]]), "field 'keys'"),
    (frame([["want"]]), "expected 1 fields"),
    (frame([[RUN, "want", [["a"]]]]), "cannot come in runs"),
    (frame([[RUN, "submit", ["k"], [0]]]), "expected 9 columns"),
    (frame({"not": "a list"}), "not a list"),
    (b"\x05\x00\x00\x00\x00\x00\x00\x00\xc1\xc1\xc1\xc1\xc1", "malformed frame"),
])
def test_each_bad_frame_closes_its_connection_with_a_logged_reason(procs, bad, reason):
    peer = _authed_client(procs)
    try:
        peer.send(bad)
        assert peer.closed_by_server() is not None
    finally:
        peer.close()
    wait_until(lambda: reason in procs.log(), 10, message=f"the scheduler logs {reason!r}")
    assert procs.alive()


@pytest.mark.timeout(40)
def test_a_truncated_stream_is_dropped_quietly(procs):
    peer = _authed_client(procs)
    data = frame([["want", ["a", "b", "c"]]])
    peer.send(data[: len(data) // 2])
    peer.close()
    check_cluster(procs)
