"""Large values through every path, with and without same-host sharing (real processes).

Small sizes only; speed is measured by ``python -m benchmarks.data``, never here."""
from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy")

from tasknest import Client, LocalCluster, get_worker, wait  # noqa: E402
from tasknest.protocol import sharedmem  # noqa: E402
from tasknest.protocol.frames import FrameError, FrameReader, encode, mark_buffers  # noqa: E402
from tasknest.protocol.serialize import dumps_value, loads_value  # noqa: E402
from tasknest.worker.sharing import EAGER  # noqa: E402
from tasknest.worker.spill import SMALL  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


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
    (payload, bufs), = _through_reader(chunks, step=100_000)
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


def test_an_announced_frame_costs_no_memory_until_it_is_sent() -> None:
    """A peer may announce gigabytes under the limit and send nothing more: the reader
    neither zero-fills the buffer (seconds of page faults on the event loop, under
    load longer than a peer waits to be hung up on) nor keeps its pages."""
    import psutil
    for head in ((3 << 30).to_bytes(4, "little") + (0).to_bytes(4, "little"),       # payload
                 (1).to_bytes(4, "little") + (1).to_bytes(4, "little")             # buffer
                 + (3 << 30).to_bytes(8, "little") + b"\xc0"):
        reader = FrameReader(8 << 30, lambda *_: None)
        reader.frames()
        before = psutil.Process().memory_info().rss
        buf = reader.get_buffer()
        buf[:len(head)] = head
        reader.updated(len(head))
        assert len(reader.get_buffer()) == 3 << 30            # reading in place now
        assert psutil.Process().memory_info().rss - before < 256 << 20
        del reader, buf


@pytest.mark.timeout(60)
def test_a_full_dev_shm_fails_the_export_cleanly_and_the_value_stays_as_it_is(monkeypatch: Any) -> None:
    """/dev/shm full midway (ENOSPC from the write): no segment is left behind, the
    worker keeps the value it has (it then goes over TCP), with a warning."""
    import errno
    from tasknest.worker.sharing import SharedSegments
    if not sharedmem.available():
        pytest.skip("this machine has no writable /dev/shm")
    frames = dumps_value(bytearray(range(256)) * (40 << 12))      # 40 MiB: three writes
    writes = []

    def pwrite(fd: int, data: Any, offset: int) -> int:
        if writes:
            raise OSError(errno.ENOSPC, "No space left on device")
        writes.append(offset)
        return real(fd, data, offset)
    real = os.pwrite
    monkeypatch.setattr(sharedmem.os, "pwrite", pwrite)
    before = sharedmem.segments(os.getpid())
    with pytest.raises(OSError, match="No space left"):
        sharedmem.export(frames)
    assert sharedmem.segments(os.getpid()) == before
    writes.clear()
    seg = SharedSegments(True)
    assert seg.share("k", frames) is None and seg.reference("k") is None
    assert sharedmem.segments(os.getpid()) == before


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
        x = c.submit(np.ones, 1 << 18, workers=[a], pure=False)   # 2 MiB: shared when asked
        wait([x])
        pids = {w["pid"] for w in c.scheduler_info()["workers"].values()}
        assert not [s for p in pids for s in sharedmem.segments(p)]   # nobody asked yet
        value = x.result()
        assert len([s for p in pids for s in sharedmem.segments(p)]) == 1
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
        y = c.submit(np.ones, EAGER // 8, workers=[a], pure=False)   # shared as it ends
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


# -- every kind and size of value through every path ------------------------------------
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def describe(x: object) -> tuple:
    """What must survive a path: type, layout and a digest of the contents."""
    h = hashlib.blake2b(digest_size=16)
    if type(x) is np.ndarray:
        if x.dtype.hasobject:
            h.update(repr(x.tolist()).encode())
        else:
            h.update(np.ascontiguousarray(x).reshape(-1).view("u1").data)
        return ("ndarray", x.dtype.str, x.shape, h.hexdigest())
    if type(x) is memoryview:
        h.update(x.tobytes())
        return ("memoryview", x.format, x.shape, x.readonly, h.hexdigest())
    assert type(x) in (bytes, bytearray), type(x)
    h.update(x)
    return (type(x).__name__, len(x), h.hexdigest())


def kinds(n: int) -> list:
    """Every kind of value, each holding ``n`` bytes (object arrays: as many elements)."""
    rng = np.random.default_rng(n)
    raw = rng.bytes(n)
    out = [raw, bytearray(raw), memoryview(raw),
           np.frombuffer(raw, dtype="f8" if n % 8 == 0 else "u1").copy(),
           np.frombuffer(rng.bytes(2 * n), dtype="u1").reshape(-1, 2)[:, 0] if n > 1
           else np.frombuffer(raw, dtype="u1")[::-1]]
    if n and n % 8 == 0:       # a typed, writable, multi-dimensional memoryview
        out.append(memoryview(bytearray(raw)).cast("d", (2, n // 16)) if n % 16 == 0
                   else memoryview(bytearray(raw)).cast("d"))
    if n <= 64 * KiB:          # (a large object array is a Python-speed pickle, not data)
        out.append(np.array([b"x" * (i % 7) if i % 3 else i for i in range(n // 8 or n)],
                            dtype=object))
    return out


def spill_all() -> int:
    """Move every value this worker holds to disk; how many went."""
    data = get_worker().data
    n = 0
    while data.evict() >= 0:
        n += 1
    return n


@pytest.mark.timeout(600)
@pytest.mark.parametrize("shared", [True, False], ids=["sharing", "tcp"])
def test_every_kind_and_size_identical_through_every_path(shared: bool) -> None:
    """0 B, 1 B, 64 KiB and 100 MiB of bytes, bytearray, memoryview and numpy arrays
    (contiguous, strided, object) arrive identical, and of their type, as a task's
    argument, scattered, worker to worker, as a result, and spilled and read back."""
    started = time.monotonic()
    with LocalCluster(n_workers=2, threads_per_worker=1, shared_memory=shared,
                      memory_limit="6GiB", dashboard=False) as lc, Client(lc) as c:
        a, b = sorted(c.scheduler_info()["workers"])[:2]
        for n in (0, 1, 64 * KiB, 100 * MiB):
            for v in kinds(n):
                want = describe(v)
                what = f"{want[:3]} of {n} bytes"
                assert c.submit(describe, v, workers=[a], pure=False).result() == want, \
                    f"argument: {what}"
                s = c.scatter(v, hash=False, workers=[a])
                assert c.submit(describe, s, workers=[a], pure=False).result() == want, \
                    f"scatter: {what}"
                made = c.submit(identity, s, workers=[a], pure=False)
                kept = c.submit(identity, s, workers=[a], pure=False)
                assert c.submit(describe, made, workers=[b], pure=False).result() == want, \
                    f"worker to worker: {what}"
                assert describe(made.result()) == want, f"result: {what}"
                wait([kept])
                spilled = c.submit(spill_all, workers=[a], pure=False).result()
                assert spilled >= (2 if n > SMALL else 0)   # (small ones stay: spill.py)
                assert c.submit(describe, kept, workers=[a], pure=False).result() == want, \
                    f"spilled, read back on its worker: {what}"
                assert describe(kept.result()) == want, f"spilled, then a result: {what}"
                del s, made, kept
        print(f"\nevery kind and size, every path ({'sharing' if shared else 'TCP'}): "
              f"{time.monotonic() - started:.1f} s")
        pid = os.getpid()
    assert not sharedmem.segments(pid)


def ones(n: int) -> object:
    return np.ones(n, dtype="u1")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("shared", [True, False], ids=["sharing", "tcp"])
def test_one_gib_worker_to_worker_and_to_the_client(shared: bool) -> None:
    with LocalCluster(n_workers=2, threads_per_worker=1, shared_memory=shared,
                      dashboard=False) as lc, Client(lc) as c:
        a, b = sorted(c.scheduler_info()["workers"])[:2]
        want = describe(ones(GiB))
        x = c.submit(ones, GiB, workers=[a], pure=False)
        wait([x])
        started = time.monotonic()
        assert c.submit(describe, x, workers=[b], pure=False).result() == want
        moved = time.monotonic() - started
        started = time.monotonic()
        assert describe(x.result()) == want
        fetched = time.monotonic() - started
        print(f"\n1 GiB ({'sharing' if shared else 'TCP'}): worker to worker and digest "
              f"{moved:.2f} s, result and digest {fetched:.2f} s")
        del x


def inc(i: int) -> int:
    return i + 1


def nbytes_of(x: object) -> int:
    return int(np.asarray(x).nbytes)


@pytest.mark.timeout(300)
def test_small_tasks_keep_going_while_a_gib_moves() -> None:
    """1,000 small round trips run while 1 GiB goes worker to worker and worker to client
    (over TCP: with sharing nothing would move); their latency is printed, not judged."""
    import statistics
    import threading
    with LocalCluster(n_workers=2, threads_per_worker=2, shared_memory=False,
                      dashboard=False) as lc, Client(lc) as c:
        a, b = sorted(c.scheduler_info()["workers"])[:2]
        x = c.submit(ones, GiB, workers=[a], pure=False)
        wait([x])
        for w in (a, b):     # connections made, functions known (a first call imports this module)
            c.submit(inc, 0, workers=[w], pure=False).result()
        fetched: list = []
        started = time.monotonic()
        moved = c.submit(nbytes_of, x, workers=[b], pure=False)    # b fetches x from a
        reader = threading.Thread(target=lambda: fetched.append(x.result(timeout=120).nbytes))
        reader.start()
        during, after, done_at = [], [], None
        i = 0
        while i < 1000 or done_at is None:
            t = time.monotonic()
            assert c.submit(inc, i, workers=[(a, b)[i % 2]], pure=False).result(timeout=60) \
                == i + 1
            (during if done_at is None else after).append(time.monotonic() - t)
            if done_at is None and moved.done() and not reader.is_alive():
                done_at = time.monotonic() - started
            i += 1
        reader.join(timeout=120)
        assert moved.result(timeout=60) == GiB and fetched == [GiB]

        def ms(xs: list) -> str:
            return (f"median {1000 * statistics.median(xs):.1f} ms, max {1000 * max(xs):.1f} ms"
                    if xs else "none")
        print(f"\n1 GiB worker to worker and to the client (TCP) in {done_at:.2f} s; "
              f"{len(during)} round trips during it: {ms(during)}; "
              f"{len(after)} after: {ms(after)}")
        del x, moved


# -- a transfer cut by the death of its sender -------------------------------------------
def _rss(pid: int) -> int:
    import psutil
    return int(psutil.Process(pid).memory_info().rss)


def _pids(c: Client) -> dict:
    return {addr: w["pid"] for addr, w in c.scheduler_info()["workers"].items()}


def _holds(dask_worker: Any) -> int:
    return len(dask_worker.data)


def _kill_mid_transfer(receiver: int, sender: int, before: int) -> int:
    """SIGKILL ``sender`` once ``receiver`` holds 128 MiB more than ``before`` (the buffer
    the value is read into fills as it arrives); how much more it held then."""
    from conftest import wait_until
    wait_until(lambda: _rss(receiver) > before + 128 * MiB, timeout=60, interval=0.002,
               message="the transfer began")
    got = _rss(receiver) - before
    os.kill(sender, signal.SIGKILL)
    return got


@pytest.mark.timeout(400)
def test_transfer_cut_by_a_killed_sender_never_gives_a_truncated_value(monkeypatch: Any) -> None:
    """A worker killed while it sends 1 GiB: a task's result is computed again from its
    recipe (worker to worker and worker to client); scattered data, which has no recipe,
    fails with LostError. Never a short or damaged value."""
    import threading
    from conftest import wait_until
    from tasknest.errors import LostError
    from tasknest.protocol import bufpool
    # The kill waits for the receiver's RSS to grow as the value arrives; warm buffers a
    # previous part left in the pool would not make it grow (tests/protocol/test_bufpool.py
    # covers the pool, and a cut into it: test_a_cut_frame_gives_its_buffer_back).
    monkeypatch.setenv("TASKNEST_RECEIVE_POOL", "0")          # the workers
    monkeypatch.setattr(bufpool.pool, "cap", 0)               # this process (the client)
    want = describe(ones(GiB))
    with LocalCluster(n_workers=2, threads_per_worker=1, shared_memory=False,
                      dashboard=False) as lc, Client(lc) as c:
        def cut(start: Any, receiver_of: Any) -> tuple:
            for _ in range(3):          # (until the kill lands mid-way: it nearly always does)
                # the baseline once the previous part's values are gone from the workers (a
                # receiver still freeing 1 GiB as this one arrives would never grow past it)
                wait_until(lambda: not any(c.run(_holds).values()), timeout=60,
                           message="the workers freed the previous part's values")
                pids = _pids(c)
                a, b = sorted(pids)[:2]
                receiver = receiver_of(pids[b])
                before = _rss(receiver)
                x, reader = start(a, b)
                got = _kill_mid_transfer(receiver, pids[a], before)
                c.submit(inc, 0, pure=False).result(timeout=60)    # the cluster goes on
                if got < GiB - 64 * MiB:
                    return x, reader, got
                reader.result(timeout=120) if hasattr(reader, "result") else None
                del x, reader
            raise AssertionError("the transfer was never caught mid-way")

        # a task's result, worker to worker
        def w2w(a: str, b: str) -> tuple:
            x = c.submit(ones, GiB, workers=[a], allow_other_workers=True, pure=False)
            wait([x])
            return x, c.submit(describe, x, workers=[b], pure=False)
        x, y, got = cut(w2w, lambda pid: pid)
        assert y.result(timeout=180) == want
        print(f"\nworker to worker, cut after {got / MiB:.0f} MiB: recomputed, whole")
        del x, y

        # a task's result, worker to client
        box: list = []

        def w2c(a: str, b: str) -> tuple:
            x = c.submit(ones, GiB, workers=[a], allow_other_workers=True, pure=False)
            wait([x])
            t = threading.Thread(target=lambda: box.append(describe(x.result(timeout=180))))
            t.start()
            return x, t
        x, t, got = cut(w2c, lambda pid: os.getpid())
        t.join(timeout=200)
        assert box == [want]
        print(f"worker to client, cut after {got / MiB:.0f} MiB: recomputed, whole")
        del x, t, box

        # scattered data (no recipe), worker to worker
        def scattered(a: str, b: str) -> tuple:
            s = c.scatter(np.ones(GiB // 2, dtype="u1"), workers=[a], hash=False)
            return s, c.submit(describe, s, workers=[b], pure=False)
        s, y, got = cut(scattered, lambda pid: pid)
        with pytest.raises(LostError, match="lost"):
            y.result(timeout=180)
        print(f"scattered, cut after {got / MiB:.0f} MiB: LostError")


# -- files and mappings used again: never under a value still read ------------------------
def filled(fill: int, n: int) -> object:
    return np.full(n, fill, dtype="u1")


def sum_and_scribble(x: Any, scribble: bool) -> int:
    total = int(x.sum(dtype="u8"))
    if scribble:
        x[::4096] = 0          # copy-on-write: pages of this task's own
    return total


@pytest.mark.timeout(300)
def test_values_written_into_used_files_arrive_whole_and_held_ones_stay() -> None:
    """A worker writes its next value into a file released before (protocol/sharedmem.py):
    every value arrives whole on the other worker and at the client, a value the client
    still holds is never overwritten, and a reader that wrote into its argument never
    sees those pages again."""
    if not sharedmem.available():
        pytest.skip("this machine has no writable /dev/shm")
    n = 4 * MiB
    with LocalCluster(n_workers=2, threads_per_worker=1) as lc, Client(lc) as c:
        info = c.scheduler_info()["workers"]
        a, b = sorted(info)[:2]
        kept, files = [], set()
        for i in range(1, 31):
            x = c.submit(filled, i, n, workers=[a], pure=False)
            wait([x])
            got = c.submit(sum_and_scribble, x, i % 5 == 0, workers=[b], pure=False).result()
            assert got == i * n, f"value {i} read on the other worker: {got}"
            for name in sharedmem.segments(info[a]["pid"]):    # (shared as b asked)
                try:
                    files.add(os.stat(os.path.join(sharedmem.SHM_DIR, name)).st_ino)
                except FileNotFoundError:
                    pass
            value = x.result()
            assert int(value.min()) == int(value.max()) == i, f"value {i} at the client"
            if i % 3 == 0:
                kept.append((i, value))      # held here while the next ones are made
            del x, value
        for i, value in kept:
            assert int(value.min()) == int(value.max()) == i, f"value {i} was overwritten"
        print(f"\n30 values of 4 MiB went through {len(files)} files")
        assert len(files) < 30, "no file was used again"


@pytest.mark.timeout(120)
def test_a_client_on_the_same_host_has_a_large_result_mapped_when_it_finishes() -> None:
    """A result shared as its task ends and told straight to a client of the same host
    comes as a reference, mapped as it arrives: ``result()`` asks no worker."""
    if not sharedmem.available():
        pytest.skip("this machine has no writable /dev/shm")
    with LocalCluster(n_workers=1, threads_per_worker=1) as lc, Client(lc) as c:
        c.submit(int, 1, pure=False).result()     # (results come straight from now on)
        x = c.submit(filled, 7, EAGER, pure=False)
        wait([x])
        assert c._states[x.key].has_value(), "the result was not mapped as it came"

        async def no_fetch(*args: Any) -> Any:
            raise AssertionError("result() asked a worker for a value it had")
        c._peers.get_data = no_fetch   # type: ignore[union-attr]
        value = x.result()
        assert value.shape == (EAGER,) and int(value.min()) == int(value.max()) == 7


@pytest.mark.timeout(120)
def test_a_client_of_the_host_scatters_through_a_segment_of_its_own() -> None:
    """A large scattered value is written once into a segment of the client's, which
    the workers map: it reads whole everywhere, stays a copy (the client's later
    writes do not reach it), and goes once the client lets go of it."""
    from conftest import wait_until
    if not sharedmem.available():
        pytest.skip("this machine has no writable /dev/shm")
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard=False) as lc, \
            Client(lc) as c:
        a, b = sorted(c.scheduler_info()["workers"])[:2]
        v = filled(3, 4 * MiB)
        s = c.scatter(v, hash=False, workers=[a])
        name, _ = c._peers.lent[s.key]                       # type: ignore[union-attr]
        assert name in sharedmem.segments(os.getpid())
        v[:] = 9                                             # the scattered value is a copy
        for w in (a, b):
            assert c.submit(sum_and_scribble, s, False, workers=[w], pure=False).result() \
                == 3 * v.size
        every = c.scatter(filled(5, 2 * MiB), broadcast=True, hash=False)
        assert sorted(c.who_has(every)[every.key]) == [a, b]
        for w in (a, b):
            assert c.submit(sum_and_scribble, every, False, workers=[w], pure=False).result() \
                == 5 * 2 * MiB
        assert len(sharedmem.segments(os.getpid())) == 2     # one each, however many map it
        del s, every
        wait_until(lambda: not sharedmem.segments(os.getpid()), 30,
                   message="the client's segments removed once it let go of the keys")
        kept = c.scatter(filled(7, 2 * MiB), hash=False)          # held as the client closes
        assert sharedmem.segments(os.getpid()) and kept.status == "finished"
    assert not sharedmem.segments(os.getpid()), "a closed client left its segments"


# -- /dev/shm holds nothing of a cluster once it no longer needs it ----------------------
def _held(pids: set) -> list:
    return [s for p in pids for s in sharedmem.segments(p)]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("nanny", [True, False], ids=["nanny", "no-nanny"])
def test_no_segment_left_after_release_close_and_sigkill(nanny: bool) -> None:
    from conftest import wait_until
    if not sharedmem.available():
        pytest.skip("this machine has no writable /dev/shm")
    pids: set = {os.getpid()}
    with LocalCluster(n_workers=2, threads_per_worker=1, nanny=nanny, memory_limit="4GiB",
                      dashboard=False) as lc, Client(lc) as c:
        def workers() -> dict:
            found = _pids(c)
            pids.update(found.values())
            return found

        # released keys: results, results read by the other worker and by the client
        a, b = sorted(workers())[:2]
        xs = [c.submit(ones, EAGER, workers=[w], pure=False) for w in (a, b, a)]
        wait(xs)
        assert len(_held(pids)) == 3
        assert c.submit(describe, xs[0], workers=[b], pure=False).result() == describe(ones(EAGER))
        local = xs[1].result()
        del xs
        wait_until(lambda: not _held(pids), 30, message="segments of released keys removed")
        assert int(local.sum()) == EAGER           # the client's mapping outlives the file

        # a spilled value gives its segment up
        x = c.submit(ones, EAGER, workers=[a], pure=False)
        wait([x])
        assert len(_held(pids)) == 1
        assert c.submit(spill_all, workers=[a], pure=False).result() >= 1
        wait_until(lambda: not _held(pids), 30, message="segment of a spilled key removed")
        assert describe(x.result()) == describe(ones(EAGER))
        del x

        # SIGKILL of the worker holding segments: none of them left once the cluster closed
        held = [c.submit(ones, EAGER, workers=[a], pure=False) for _ in range(3)]
        wait(held)
        owner = workers()[a]
        assert len(sharedmem.segments(owner)) == 3
        local = held[0].result()
        os.kill(owner, signal.SIGKILL)
        if nanny:     # its nanny removes them as soon as it has died
            wait_until(lambda: not sharedmem.segments(owner), 30,
                       message="the nanny removed the killed worker's segments")
        # the cluster goes on; its surviving worker still shares what it makes
        y = c.submit(ones, EAGER, workers=[b], pure=False)
        wait([y])
        assert sharedmem.segments(workers()[b])
        assert int(local.sum()) == EAGER           # mapped before the kill: still whole
        started = time.monotonic()
        lc.close()                                   # while y is still held
        closed = time.monotonic() - started
        assert not _held(pids), _held(pids)
    assert not _held(pids), _held(pids)
    print(f"\nclose() with a shared key held: {closed:.2f} s")


# -- compression between hosts ----------------------------------------------------------------


def _through_reader(chunks: list, max_frame: int = 1 << 30, step: int = 300_000) -> list:
    """What a FrameReader makes of the stream, fed ``step`` bytes at a time."""
    got: list = []
    reader = FrameReader(max_frame, lambda payload, bufs: got.append((payload, bufs)))
    reader.frames()
    stream = b"".join(bytes(ch) for ch in chunks)
    pos = 0
    while pos < len(stream):
        buf = reader.get_buffer()
        n = min(len(buf), len(stream) - pos, step)
        buf[:n] = stream[pos:pos + n]
        pos += n
        reader.updated(n)
    return got


def test_compressed_buffers_arrive_as_sent_and_incompressible_ones_go_as_they_are() -> None:
    pytest.importorskip("lz4.block")
    from tasknest.protocol.frames import COMPRESSED, decode
    zeros, noise = bytes(4 * MiB), bytearray(os.urandom(4 * MiB))
    chunks, total = encode([mark_buffers(["data", 1, {"k": [b"h", zeros, noise]}])], "lz4")
    assert total < 4 * MiB + 1 * MiB                    # the zeros shrank, the noise did not
    assert chunks[2].obj is noise                       # sent from its own memory, as it is
    sizes = np.frombuffer(bytes(chunks[0][8:24]), dtype="<u8")
    assert sizes[0] & COMPRESSED and not sizes[1] & COMPRESSED
    (payload, bufs), = _through_reader(chunks)
    frames = decode(payload, bufs)[0][2]["k"]
    assert type(frames[1]) is bytes and frames[1] == zeros          # read-only: bytes
    assert type(frames[2]) is bytearray and frames[2] == noise      # writable: bytearray
    # a value through it: an array compresses and comes back writable and whole
    a = np.zeros(1 << 20)
    a[::1000] = 1.5
    chunks, total = encode([mark_buffers(["data", 1, {"k": dumps_value(a)}])], "lz4")
    assert total < a.nbytes // 4
    (payload, bufs), = _through_reader(chunks)
    b = loads_value(decode(payload, bufs)[0][2]["k"])
    assert b.flags.writeable and (a == b).all()


def test_compressed_buffer_announcing_too_much_is_refused() -> None:
    pytest.importorskip("lz4.block")
    chunks, _ = encode([mark_buffers(["data", 1, {"k": [b"h", bytes(4 * MiB)]}])], "lz4")
    with pytest.raises(FrameError, match="announces"):
        _through_reader(chunks, max_frame=1 * MiB)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("setting,expect", [("lz4", "lz4"), ("auto", None), ("off", None)])
def test_compression_is_negotiated_per_connection(monkeypatch: Any, setting: str,
                                                   expect: str | None) -> None:
    """``lz4`` forces it (loopback included); ``auto`` leaves loopback alone; ``off``."""
    import asyncio
    pytest.importorskip("lz4.block")
    from tasknest.client.loop import new_event_loop
    from tasknest.protocol import compression, messages as m
    from tasknest.protocol.comm import connect, listen
    monkeypatch.setenv("TASKNEST_COMPRESSION", setting)
    packed: list = []
    real = compression.compress
    monkeypatch.setattr(compression, "compress",
                        lambda codec, buf: packed.append(real(codec, buf)) or packed[-1])
    zeros, noise = bytes(2 * MiB), os.urandom(2 * MiB)

    async def main() -> None:
        servers: list = []
        got: asyncio.Future = asyncio.get_running_loop().create_future()

        def on_comm(comm: Any) -> None:
            servers.append(comm)
            comm.start(lambda msg: comm.send(m.Data(rid=7, values={"k": [b"h", zeros, noise]})))
        listener = await listen("tcp://127.0.0.1:0", on_comm, "secret")
        comm = await connect(listener.address, "secret")
        comm.start(lambda msg: got.set_result(msg))
        comm.send(m.Want(keys=["k"]))
        msg = await asyncio.wait_for(got, 30)
        assert msg.values["k"][1] == zeros and msg.values["k"][2] == noise
        assert comm.codec == servers[0].codec == expect
        assert comm.codecs_offered == (["lz4"] if expect else [])
        comm.close()
        listener.close()
    loop = new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    if expect:        # the zeros went compressed, the noise as it was
        assert [p is not None for p in packed] == [True, False]
    else:
        assert packed == []


@pytest.mark.timeout(180)
def test_every_path_identical_compressed(monkeypatch: Any) -> None:
    """Every link compressing (as between hosts): every kind of value arrives whole."""
    pytest.importorskip("lz4.block")
    monkeypatch.setenv("TASKNEST_COMPRESSION", "lz4")
    with LocalCluster(n_workers=2, threads_per_worker=1, shared_memory=False,
                      dashboard=False) as lc, Client(lc) as c:
        a, b = sorted(c.scheduler_info()["workers"])[:2]
        for v in [*values(), np.zeros(3 << 20), bytearray(5 * MiB)]:
            want = describe(v) if not (isinstance(v, np.ndarray) and v.dtype.hasobject) \
                else None
            s = c.scatter(v, hash=False, workers=[a])
            made = c.submit(identity, s, workers=[a], pure=False)
            moved = c.submit(identity, made, workers=[b], pure=False)
            for f in (made, moved):
                assert same(v, f.result()), (type(v), f)
                if want is not None:
                    assert describe(f.result()) == want
            assert c.submit(describe, made, workers=[b], pure=False).result() == describe(v)


# -- scatter: straight from the client to the workers ----------------------------------------
def _scheduler_ops(lc: Any, ops: tuple) -> list:
    """The ops among ``ops`` the (in-process) scheduler handles from now on, in order."""
    sched = lc._inproc[0]
    seen: list = []
    for op in ops:
        def wrapped(source: str, msg: Any, inner: Any = sched.state._handlers[op]) -> None:
            seen.append(msg.op)
            inner(source, msg)
        sched.state._handlers[op] = wrapped
    return seen


@pytest.mark.timeout(120)
def test_scatter_goes_straight_to_the_workers_and_keeps_its_semantics() -> None:
    """The scheduler plans and records; the values never pass through it."""
    from collections import namedtuple
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard=False) as lc, Client(lc) as c:
        seen = _scheduler_ops(lc, ("scatter", "scatter-plan", "scatter-via"))
        a, b = sorted(c.scheduler_info()["workers"])[:2]
        big = np.arange(1 << 20, dtype="f8")                          # 8 MiB, out of band
        xs = c.scatter([big, b"x" * 100_000, 3])
        assert same(c.gather(xs[0]), big) and c.gather(xs[1:]) == [b"x" * 100_000, 3]
        assert xs == c.scatter([big, b"x" * 100_000, 3])             # hash=True: same keys
        assert set().union(*c.who_has(xs).values()) == {a, b}       # spread over both
        d = c.scatter({"left": 1, "right": 2})
        assert type(d) is dict and c.gather(d) == {"left": 1, "right": 2}
        Pair = namedtuple("Pair", "x y")
        p = c.scatter(Pair(1, 2))
        assert type(p) is Pair and c.gather(list(p)) == [1, 2]
        t = c.scatter((5, 6), hash=False)
        assert type(t) is tuple and c.gather(list(t)) == [5, 6]
        only = c.scatter(np.ones(1 << 18), workers=[b], hash=False)
        assert c.who_has(only)[only.key] == [b]
        every = c.scatter(big + 1, broadcast=True, hash=False)
        assert sorted(c.who_has(every)[every.key]) == [a, b]
        assert same(c.submit(identity, every, workers=[a], pure=False).result(), big + 1)
        assert seen == ["scatter-plan"] * 7, seen
        del xs, d, p, t, only, every


@pytest.mark.timeout(120)
def test_scatter_a_client_cannot_hand_over_goes_through_the_scheduler() -> None:
    from tasknest.errors import CommClosedError
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard=False) as lc, Client(lc) as c:
        seen = _scheduler_ops(lc, ("scatter", "scatter-plan", "scatter-via"))
        a, b = sorted(c.scheduler_info()["workers"])[:2]
        peers = c._peers
        direct = peers.put_data

        async def put_data(address: str, *args: Any) -> Any:
            if address == b:
                raise CommClosedError(f"{address} is not reachable from here (test)")
            return await direct(address, *args)
        peers.put_data = put_data
        v = np.arange(1 << 18, dtype="i8")
        x = c.scatter(v, broadcast=True, hash=False)
        assert sorted(c.who_has(x)[x.key]) == [a, b]
        assert same(c.submit(identity, x, workers=[b], pure=False).result(), v)
        assert seen == ["scatter-plan", "scatter-via"], seen
        del x


@pytest.mark.timeout(120)
def test_worker_killed_mid_scatter_gives_a_clear_error() -> None:
    """The worker dies as the client is about to hand it its part: the scatter errs and
    says so, and the cluster goes on."""
    from tasknest.errors import RemoteError
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard=False) as lc, \
            Client(lc) as c:
        pids = _pids(c)
        a = sorted(pids)[0]
        peers = c._peers
        direct = peers.put_data

        async def put_data(address: str, *args: Any) -> Any:
            if address == a:
                os.kill(pids[a], signal.SIGKILL)
            return await direct(address, *args)
        peers.put_data = put_data
        with pytest.raises(RemoteError, match=f"worker {a} died during the scatter"):
            c.scatter(np.ones(1 << 20), workers=[a], hash=False, timeout=60)
        peers.put_data = direct
        y = c.scatter(7, hash=False)          # the cluster goes on
        assert c.submit(identity, y, pure=False).result(timeout=60) == 7
