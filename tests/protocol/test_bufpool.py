"""Warm receive buffers: a dropped value's memory serves the next one, and goes back."""
from __future__ import annotations

import asyncio
import os

import pytest

from tasknest.protocol import bufpool
from tasknest.protocol.bufpool import BufferPool
from tasknest.protocol.frames import ANY, FrameReader, decode, encode, mark_buffers
from tasknest.protocol.serialize import dumps_value, loads_value

np = pytest.importorskip("numpy")
MiB = 1 << 20


def _base(view: memoryview) -> int:
    """Which mapping a view is of (its id: holding the mapping itself would keep it used)."""
    return id(view.obj)


def _len(view: memoryview) -> int:
    return len(view.obj)  # type: ignore[arg-type]


@pytest.mark.timeout(30)
def test_a_dropped_values_mapping_serves_the_next_of_about_its_size() -> None:
    pool = BufferPool(cap=1 << 30, idle=60)
    v = pool.take(10 * MiB)
    first = _base(v)
    a = np.frombuffer(v, dtype="u1")
    del v
    # held by the array (through its view): a second buffer gets its own mapping
    w = pool.take(10 * MiB)
    assert _base(w) != first and pool.held_bytes() == 20 * MiB
    del w
    del a                                   # now nothing refers to the first mapping
    assert pool.unused_bytes() == 20 * MiB
    again = pool.take(9 * MiB)              # about its size: served warm
    assert _base(again) == first
    assert pool.held_bytes() == 20 * MiB and len(again) == 9 * MiB
    small = pool.take(2 * MiB)              # far smaller: not given a 10 MiB mapping
    assert _len(small) == 2 * MiB


@pytest.mark.timeout(30)
def test_unused_mappings_go_after_the_idle_time_and_beyond_the_cap() -> None:
    pool = BufferPool(cap=25 * MiB, idle=0.0)
    views = [pool.take(10 * MiB) for _ in range(3)]
    assert pool.held_bytes() == 30 * MiB
    del views
    pool.sweep()                            # idle 0: every unused one goes
    assert pool.held_bytes() == 0
    pool = BufferPool(cap=25 * MiB, idle=3600)
    views = [pool.take(10 * MiB) for _ in range(3)]
    del views
    pool.sweep()                            # over the cap: two kept, one unmapped
    assert pool.held_bytes() == 20 * MiB
    assert pool.release_unused() == 20 * MiB and pool.held_bytes() == 0


@pytest.mark.timeout(30)
def test_the_pool_sweeps_itself_on_the_loop_that_receives() -> None:
    pool = BufferPool(cap=1 << 30, idle=0.05)

    async def main() -> None:
        v = pool.take(10 * MiB)
        del v
        deadline = asyncio.get_running_loop().time() + 10
        while pool.held_bytes() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
    asyncio.run(main())
    assert pool.held_bytes() == 0


def _receive(value: object) -> tuple[list, list]:
    chunks, _ = encode([mark_buffers(["data", 1, {"k": dumps_value(value)}])])
    got: list = []
    reader = FrameReader(1 << 30, lambda payload, bufs: got.append((payload, bufs)))
    reader.frames()
    stream = b"".join(bytes(ch) for ch in chunks)
    pos = 0
    while pos < len(stream):
        buf = reader.get_buffer()
        n = min(len(buf), len(stream) - pos)
        buf[:n] = stream[pos:pos + n]
        pos += n
        reader.updated(n)
    (payload, bufs), = got
    return decode(payload, bufs)[0][2]["k"], bufs


@pytest.mark.timeout(60)
def test_arrays_are_read_into_the_pool_and_bytes_values_arrive_as_themselves() -> None:
    bufpool.pool.release_unused()
    a = np.arange(2 * MiB, dtype="float64")                     # 16 MiB
    frames, bufs = _receive(a)
    assert type(bufs[0]) is memoryview and type(bufs[0].obj).__name__ == "mmap"
    b = loads_value(frames)
    assert (a == b).all() and b.flags.writeable
    b[0] = 7.0                                   # backed by the received memory: no copy
    assert np.frombuffer(bufs[0], dtype="float64")[0] == 7.0
    ro = a.copy()
    ro.flags.writeable = False
    got = loads_value(_receive(ro)[0])
    assert (got == ro).all() and not got.flags.writeable        # read-only as it was sent
    for v in (os.urandom(9 * MiB), bytearray(os.urandom(9 * MiB))):
        frames, bufs = _receive(v)
        assert type(bufs[0]) is type(v)          # not from the pool: the value is that object
        out = loads_value(frames)
        assert type(out) is type(v) and out == v and out is bufs[0]
    # the flag on the wire says which
    sizes_of = [encode([mark_buffers(["data", 1, {"k": dumps_value(v)}])])[0][0]
                for v in (a, os.urandom(9 * MiB))]
    flags = [int.from_bytes(head[8:16], "little") & ANY for head in sizes_of]
    assert flags[0] and not flags[1]


@pytest.mark.timeout(60)
def test_a_buffer_received_twice_reuses_warm_memory() -> None:
    """The second array of the same size lands in the first one's pages once it is dropped."""
    bufpool.pool.release_unused()
    a = np.ones(16 * MiB, dtype="u1")
    first = loads_value(_receive(a)[0])
    where = first.ctypes.data
    del first
    second = loads_value(_receive(a)[0])
    assert second.ctypes.data == where and (second == 1).all()


@pytest.mark.timeout(60)
def test_a_cut_frame_gives_its_buffer_back() -> None:
    """A peer that dies mid-value leaves no value behind, and the half-filled buffer goes
    back to the pool once the reader is dropped (it is never handed out while read into)."""
    pool = bufpool.pool
    pool.release_unused()
    chunks, _ = encode([mark_buffers(["data", 1, {"k": dumps_value(np.ones(16 * MiB, "u1"))}])])
    stream = b"".join(bytes(ch) for ch in chunks)
    got: list = []
    reader = FrameReader(1 << 30, lambda payload, bufs: got.append(bufs))
    reader.frames()
    cut = len(stream) // 2
    pos = 0
    while pos < cut:
        buf = reader.get_buffer()
        n = min(len(buf), cut - pos)
        buf[:n] = stream[pos:pos + n]
        pos += n
        reader.updated(n)
    del buf
    assert not got and pool.held_bytes() == 16 * MiB and pool.unused_bytes() == 0
    del reader                                    # the connection is gone
    assert pool.unused_bytes() == 16 * MiB
    again = loads_value(_receive(np.full(16 * MiB, 3, "u1"))[0])
    assert (again == 3).all() and pool.held_bytes() == 16 * MiB
