"""Memory limits: the nanny restarts a worker above its limit; results spill to disk intact."""
from __future__ import annotations

import hashlib
import os
import time

import pytest

from tasknest import Client, LocalCluster, get_worker
from tasknest.worker.spill import SpillBuffer

from conftest import wait_for_file

MB = 1 << 20


def hog_once(marker: str, limit: int) -> str:
    """On its first run, grow well past ``limit`` (slowly enough for the nanny to see it)."""
    if os.path.exists(marker):
        return "finished after a restart"
    open(marker, "w").close()
    hoard = []
    for _ in range(3 * limit // (20 * MB)):
        hoard.append(b"x" * (20 * MB))      # touched pages: resident memory grows
        time.sleep(0.02)
    return "never restarted"


@pytest.mark.timeout(90)
def test_nanny_restarts_a_worker_above_its_memory_limit(tmp_path):
    limit = 300 * MB
    with LocalCluster(n_workers=1, nanny=True, memory_limit=limit) as cluster, \
            Client(cluster) as client:
        [before] = [w["pid"] for w in list(client.scheduler_info(-1)["workers"].values())]
        future = client.submit(hog_once, str(tmp_path / "started"), limit, pure=False)
        assert future.result(timeout=60) == "finished after a restart"
        [after] = [w["pid"] for w in list(client.scheduler_info(-1)["workers"].values())]
        assert after != before
        # the restarted worker runs further work as usual
        assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6


def block(i: int, size: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest() * (size // 32)


def spilled_count() -> int:
    data = get_worker().data
    return len(data.spilled) if isinstance(data, SpillBuffer) else -1


@pytest.mark.timeout(90)
def test_results_spill_to_disk_and_come_back_intact():
    size, n = 16 * MB, 24          # 384 MB of results; 60% of 480 MB may stay in memory
    with LocalCluster(n_workers=1, nanny=True, memory_limit=480 * MB) as cluster, \
            Client(cluster) as client:
        futures = client.map(block, range(n), [size] * n)
        digests = client.gather(client.map(lambda b: hashlib.sha256(b).hexdigest(), futures))
        assert digests == [hashlib.sha256(block(i, size)).hexdigest() for i in range(n)]
        spilled = client.submit(spilled_count, pure=False).result(timeout=30)
        print(f"\n{spilled} of {n} results of {size // MB} MB were on disk")
        assert spilled > 0
        for i in (0, n // 2, n - 1):   # values read back from disk, whole
            assert futures[i].result(timeout=30) == block(i, size)


@pytest.mark.timeout(30)
def test_spill_buffer_keeps_recent_values_in_memory_and_the_rest_on_disk():
    store = SpillBuffer(target=3000)
    try:
        for i in range(10):
            store[f"k{i}"] = bytes([i]) * 1000
        assert 0 < len(store.spilled) < 10
        assert "k9" not in store.spilled and "k0" in store.spilled   # least recently used first
        assert store["k0"] == bytes([0]) * 1000                      # read back, intact
        assert "k0" not in store.spilled
        assert sorted(store) == sorted(f"k{i}" for i in range(10))
        del store["k1"]
        assert "k1" not in store and len(store) == 9
        assert os.listdir(store.directory)
    finally:
        store.close()
    assert not os.path.exists(store.directory)


@pytest.mark.timeout(30)
def test_spill_directory_is_removed_when_the_store_closes():
    store = SpillBuffer(target=10)
    store["a"] = b"x" * 100
    path = store.directory
    assert os.path.isdir(path)
    store.close()
    assert not os.path.exists(path)


def hold_memory_until(path: str, limit: int) -> str:
    """Sit at about 90% of ``limit`` (above the pause mark, below the restart one)."""
    import psutil
    rss = psutil.Process().memory_info().rss
    hoard = b"x" * max(0, int(0.9 * limit) - rss)     # touched pages: resident
    wait_for_file(path, timeout=60)   # what is under test is the worker
    return f"held {len(hoard) // MB} MB"


def where_am_i(_: int) -> str:
    return get_worker().address


def paused(client: Client) -> dict:
    return {w["address"]: w["paused"] for w in list(client.scheduler_info(-1)["workers"].values())}


@pytest.mark.timeout(90)
def test_a_paused_worker_gets_no_new_tasks_until_it_resumes(tmp_path):
    limit = 400 * MB
    go = str(tmp_path / "go")
    # two threads each: the paused worker still has a free slot the scheduler could fill
    with LocalCluster(n_workers=2, threads_per_worker=2, nanny=True,
                      memory_limit=limit) as cluster, Client(cluster) as client:
        a, b = sorted(paused(client))
        hog = client.submit(hold_memory_until, go, limit, workers=[a], pure=False)
        from conftest import wait_until
        wait_until(lambda: paused(client)[a], 30, message="the scheduler hears the worker paused")
        assert not paused(client)[b]
        places = client.gather(client.map(where_am_i, range(20), pure=False), timeout=30)
        assert set(places) == {b}, "new tasks went to the worker that cannot start them"
        open(go, "w").close()
        assert hog.result(timeout=30).startswith("held")
        del hog
        wait_until(lambda: not paused(client)[a], 30, message="the worker resumes")


@pytest.mark.timeout(30)
def test_small_values_stay_in_memory_and_are_counted():
    """Values of at most SMALL bytes are kept in a plain table, never spilled (a file
    each would free less than it costs), and still counted in the memory in use."""
    from tasknest.worker.spill import SMALL, sizeof
    store = SpillBuffer(target=3000)
    try:
        for i in range(10_000):
            store[f"s{i}"] = i + 1000
        store["big"] = b"x" * 4000                      # over the target: to disk
        assert store.spilled == {"big"} and len(store) == 10_001
        assert os.listdir(store.directory) and len(os.listdir(store.directory)) == 1
        assert store.memory_bytes == sum(sizeof(i + 1000) for i in range(10_000))
        assert sizeof(1000) <= SMALL and store["s5"] == 1005 and "s5" in store
        store["s5"] = b"y" * 2000                       # a key's value may change size
        assert store["s5"] == b"y" * 2000 and len(store) == 10_001
        for i in range(10_000):
            del store[f"s{i}"]
        assert store.compact() and sorted(store) == ["big"]        # (its table right-sized)
        assert store.memory_bytes == 0 and store["big"] == b"x" * 4000
    finally:
        store.close()
