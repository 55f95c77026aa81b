"""Runs: adjacent messages of one op in a frame travel as columns (protocol/runs.py)."""
from __future__ import annotations

import asyncio

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasknest.client.loop import new_event_loop
from tasknest.errors import ProtocolError
from tasknest.protocol import messages as m, runs
from tasknest.protocol.comm import connect, listen


def _submit(i: int, func: bytes = b"f") -> m.Submit:
    return m.Submit(f"k-{i}", func, b"args-%d" % i, [], [0, 0, i], 0, None, None, False)


def _finished(i: int, value: list | None = None) -> m.TaskFinished:
    return m.TaskFinished(f"k-{i}", 8, "int", value if value is not None else [b"v%d" % i],
                          [], [], 1)


def _wire(msgs: list[m.Message]) -> list:
    """The run of these messages as a receiver decodes it from msgpack."""
    packed = msgpack.packb(runs.columns([x.encode() for x in msgs]), use_bin_type=True)
    return msgpack.unpackb(packed, raw=False, use_list=True)


def _run(coro):
    loop = new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("together", [False, True], ids=["one-by-one", "run-handler"])
def test_a_frame_of_like_messages_arrives_as_sent_in_order(together: bool) -> None:
    """1,000 submits (a second function defined mid-way), a want, task-finished reports
    with one value large enough to go out of band: the receiver gets every message equal
    to what was sent and in order; with a run handler, each run as one list."""
    big = b"x" * (1 << 20)
    sent: list[m.Message] = [_submit(i, b"func-a") for i in range(500)]
    sent += [_submit(i, b"func-b") for i in range(500, 1000)]
    sent += [m.Want(["w"]), _finished(0), _finished(1, [big]), _finished(2)]

    async def main() -> tuple[list, list]:
        got: list[m.Message] = []
        batches: list[int] = []
        done = asyncio.Event()

        def on_comm(comm):
            def one(msg):
                got.append(msg)
                if len(got) == len(sent):
                    done.set()

            def many(msgs):
                batches.append(len(msgs))
                for msg in msgs:
                    one(msg)
            if together:
                comm.run_handler = many
            comm.start(one)

        listener = await listen("tcp://127.0.0.1:0", on_comm, "secret")
        comm = await connect(listener.address, "secret")
        comm.start(lambda msg: None)
        for msg in sent:            # (on the loop's thread: one frame, sent at the tick's end)
            comm.send(msg)
        await asyncio.wait_for(done.wait(), 30)
        comm.close()
        listener.close()
        return got, batches

    got, batches = _run(main())
    assert [x.encode() for x in got] == [x.encode() for x in sent]
    if together:
        # the submits of each function (the second one's definition comes between), the reports
        assert batches == [500, 500, 3], batches


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=6), st.binary(max_size=20),
                          st.lists(st.text(max_size=4), max_size=2),
                          st.lists(st.integers(-5, 5) | st.floats(allow_nan=False), max_size=3),
                          st.integers(0, 3), st.none() | st.lists(st.text(max_size=3), max_size=2),
                          st.booleans()), min_size=1, max_size=20))
def test_any_run_of_submits_decodes_to_the_messages(rows: list) -> None:
    msgs = [m.Submit(k, 7, a, [d for d in deps if d != k], p, r, w, None, loose)
            for k, a, deps, p, r, w, loose in rows]
    assert [x.encode() for x in runs.decode(_wire(msgs))] == [x.encode() for x in msgs]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("raw, reason", [
    (["*"], "no op"),
    (["*", "want", [["a"]]], "cannot come in runs"),
    (["*", "define-func", [1], [b"f"]], "cannot come in runs"),
    (["*", "task-finished", ["k"], [1]], "expected 7 columns"),
    (["*", "task-finished", [], [], [], [], [], [], []], "1 to"),
    (["*", "task-finished", ["a", "b"], [1], ["int"] * 2, [None] * 2, [[]] * 2, [[]] * 2,
      [1, 1]], "column 'nbytes' is not a list of 2"),
    (["*", "task-finished", ["a", "b"], [1, "x"], ["int"] * 2, [None] * 2, [[]] * 2,
      [[]] * 2, [1, 1]], "field 'nbytes'"),
    (["*", "task-finished", ["a"], [1], ["int"], [[b"v", 3]], [[]], [[]], [1]],
     "field 'value'"),
    (["*", "submit", ["a"], [0], [b""], [["a"]], [[0]], [0], [None], [None], [False]],
     "depends on itself"),
])
def test_a_malformed_run_is_refused_with_its_reason(raw: list, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        runs.decode(raw)


@pytest.mark.timeout(60)
def test_a_sender_splits_runs_at_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run never holds more than MAX_RUN messages: the sender starts another."""
    monkeypatch.setattr(runs, "MAX_RUN", 3)
    sent = [_finished(i) for i in range(10)]

    async def main() -> list[int]:
        batches: list[int] = []
        done = asyncio.Event()

        def on_comm(comm):
            def many(msgs):
                batches.append(len(msgs))
                if sum(batches) == len(sent):
                    done.set()
            comm.run_handler = many
            comm.start(lambda msg: many([msg]))

        listener = await listen("tcp://127.0.0.1:0", on_comm, "secret")
        comm = await connect(listener.address, "secret")
        comm.start(lambda msg: None)
        for msg in sent:
            comm.send(msg)
        await asyncio.wait_for(done.wait(), 30)
        comm.close()
        listener.close()
        return batches

    assert _run(main()) == [3, 3, 3, 1]
