"""Large values through every path, with and without same-host sharing (real processes).

Small sizes only; speed is measured by ``python -m benchmarks.data``, never here."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")

from tasknest import Client, LocalCluster, wait  # noqa: E402
from tasknest.protocol import sharedmem  # noqa: E402
from tasknest.protocol.frames import FrameError, FrameReader, encode, mark_buffers  # noqa: E402
from tasknest.protocol.serialize import dumps_value, loads_value  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def values() -> list:
    big = np.arange(300_000, dtype="float64")
    return [b"", b"x", os.urandom(65536), bytearray(os.urandom(200_000)),
            memoryview(os.urandom(200_000)), big, big[::3],
            np.asfortranarray(big.reshape(600, 500)), np.array(["a", None, 3], dtype=object),
            os.urandom(2 << 20)]


def same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return type(b) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape \
            and bool((a == b).all())
    if isinstance(a, memoryview):
        return isinstance(b, memoryview) and a.tobytes() == b.tobytes()
    return type(a) is type(b) and a == b


def identity(x: object) -> object:
    return x


def test_frames_roundtrip_in_place() -> None:
    """A received array is backed by the buffer the reader allocated for it."""
    a = np.arange(100_000, dtype="float64")
    chunks, _ = encode([mark_buffers(["data", 1, {"k": dumps_value(a)}])])
    got: list = []
    reader = FrameReader(1 << 30, lambda payload, bufs: got.append((payload, bufs)))
    reader.frames()
    stream = b"".join(bytes(c) for c in chunks)
    pos = 0
    while pos < len(stream):
        buf = reader.get_buffer()
        n = min(len(buf), len(stream) - pos, 100_000)
        buf[:n] = stream[pos:pos + n]
        pos += n
        reader.updated(n)
    (payload, bufs), = got
    assert len(bufs) == 1 and type(bufs[0]) is bytearray and len(bufs[0]) == a.nbytes
    from tasknest.protocol.frames import decode
    frames = decode(payload, bufs)[0][2]["k"]
    b = loads_value(frames)
    assert (a == b).all()
    b[0] = 42.0                  # writes land in the received buffer itself: no copy was made
    assert np.frombuffer(bufs[0], dtype="float64")[0] == 42.0


def test_oversized_frame_refused_before_allocation() -> None:
    reader = FrameReader(1 << 20, lambda *_: None)
    reader.frames()
    head = (10).to_bytes(4, "little") + (1).to_bytes(4, "little") + (1 << 40).to_bytes(8, "little")
    buf = reader.get_buffer()
    buf[:len(head)] = head
    with pytest.raises(FrameError, match="exceeds the limit"):
        reader.updated(len(head))


def test_large_bytes_arrive_as_bytes_in_place() -> None:
    data = os.urandom(2 << 20)
    frames = dumps_value(data)
    assert sum(len(f) for f in frames[1:]) == len(data)    # out of band, not in the pickle
    assert frames[1].obj is data                            # a view of the value, no copy


@pytest.mark.timeout(180)
@pytest.mark.parametrize("shared", [True, False])
def test_every_path_identical(shared: bool) -> None:
    with LocalCluster(n_workers=2, threads_per_worker=1, shared_memory=shared) as lc, \
            Client(lc) as c:
        a, b = sorted(c.scheduler_info()["workers"])[:2]
        for v in values():
            scattered = c.scatter(v, hash=False, workers=[a])
            made = c.submit(identity, scattered, workers=[a], pure=False)
            moved = c.submit(identity, made, workers=[b], pure=False)
            for f in (scattered, made, moved):
                assert same(v, f.result()), (type(v), f)
        pid = os.getpid()
        del scattered, made, moved
    assert not sharedmem.segments(pid)


@pytest.mark.timeout(180)
def test_shared_result_maps_segment_and_segments_go() -> None:
    with LocalCluster(n_workers=2, threads_per_worker=1) as lc, Client(lc) as c:
        a, b = sorted(c.scheduler_info()["workers"])[:2]
        x = c.submit(np.ones, 1 << 18, workers=[a], pure=False)   # 2 MiB: shared
        wait([x])
        pids = {w["pid"] for w in c.scheduler_info()["workers"].values()}
        held = [s for p in pids for s in sharedmem.segments(p)]
        assert len(held) == 1
        value = x.result()
        assert value.sum() == 1 << 18
        assert isinstance(value.base.obj if hasattr(value.base, "obj") else None,
                          (type(None), object))
        value[0] = 5                                              # copy-on-write: ours only
        assert c.submit(lambda v: float(v[0]), x, workers=[b]).result() == 1.0
        del x
        deadline = __import__("time").monotonic() + 30
        while any(sharedmem.segments(p) for p in pids):
            assert __import__("time").monotonic() < deadline, "segment not removed"
            c.submit(int, 1, pure=False).result()
        # SIGKILL of the worker that holds one: nothing left once the cluster closed
        y = c.submit(np.ones, 1 << 18, workers=[a], pure=False)
        wait([y])
        owner = next(w["pid"] for w in c.scheduler_info()["workers"].values()
                     if sharedmem.segments(w["pid"]))
        os.kill(owner, signal.SIGKILL)
    assert not sharedmem.segments(owner)


@pytest.mark.timeout(240)
def test_data_benchmark_smallest_size(tmp_path: Path) -> None:
    import subprocess
    out = tmp_path / "bench.md"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.data", "--quick", "--systems",
                           "tasknest,tasknest-tcp", "--output", str(out), "--json", ""],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=220)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert "w2w-1" in text and "shuffle-16" in text and "loopback TCP" in text
