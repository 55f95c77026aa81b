"""One cluster interface: scale up and down (through graceful retirement) and adaptive
scaling driven by nested tasks, without flapping."""
from __future__ import annotations

import time

import pytest

from tasknest import CallerError, Client, LocalCluster, worker_client
from tasknest.deploy.adaptive import Adaptive

from conftest import wait_until


def tree(depth, leaf_seconds):
    """2**depth leaves, each busy for a while; every node is its own task."""
    if depth == 0:
        time.sleep(leaf_seconds)       # the work itself (demand that lasts), not a sync
        return 1
    with worker_client() as c:
        parts = [c.submit(tree, depth - 1, leaf_seconds, pure=False) for _ in range(2)]
        return sum(c.gather(parts))


def n_workers(c):
    return len(c.scheduler_info(-1)["workers"])


@pytest.mark.timeout(90)
def test_scale_up_and_down_keeps_results():
    with LocalCluster(n_workers=1, threads_per_worker=1) as cluster, Client(cluster) as c:
        cluster.scale(3)
        c.wait_for_workers(3, timeout=30)
        futures = c.map(lambda x: x * 2, range(12))
        assert c.gather(futures) == [x * 2 for x in range(12)]
        cluster.scale(1)
        assert n_workers(c) == 1 and len(cluster.plan) == 1
        # every result survived the two retirements (copied, not recomputed)
        assert sorted(k for keys in c.has_what().values() for k in keys) == \
            sorted(f.key for f in futures)
        assert c.gather(futures) == [x * 2 for x in range(12)]
        with pytest.raises(CallerError):
            cluster.scale(-1)


def test_adaptive_policy_is_pure_and_does_not_flap():
    class Fake:
        threads_per_worker = 2
    a = Adaptive(Fake(), minimum=1, maximum=4, cooldown=10, wait_count=3, step=2)
    assert a.decide(1, 20, 2, now=0.0) == 3            # up, at most `step` at a time
    a.events.append((0, 1, 3))
    a._last_change = 0.0
    assert a.decide(3, 20, 2, now=1.0) == 3            # cooling down after a scale-up
    assert a.decide(3, 20, 2, now=11.0) == 4
    a.events.append((11, 3, 4))
    a._last_change = 11.0
    # demand drops: down only after wait_count looks in a row and the cooldown
    assert [a.decide(4, 0, 2, now=t) for t in (22.0, 23.0)] == [4, 4]
    assert a.decide(4, 8, 2, now=24.0) == 4            # a burst in between resets the count
    assert [a.decide(4, 0, 2, now=t) for t in (25.0, 26.0, 27.0)] == [4, 4, 2]
    with pytest.raises(CallerError):
        Adaptive(Fake(), minimum=3, maximum=2)


@pytest.mark.timeout(90)
def test_adapt_follows_a_burst_of_nested_tasks_and_comes_back():
    with LocalCluster(n_workers=1, threads_per_worker=1) as cluster, Client(cluster) as c:
        adaptive = cluster.adapt(minimum=1, maximum=3, interval=0.2, cooldown=1.0,
                                 wait_count=5)
        result = c.submit(tree, 4, 0.25, pure=False)
        wait_until(lambda: n_workers(c) == 3, 60, message="scaled to the maximum")
        assert result.result(timeout=60) == 16
        wait_until(lambda: len(cluster.plan) == 1 and n_workers(c) == 1, 60,
                   message="back to the minimum after idling")
        sizes = [1] + [to for _, _, to in adaptive.events]
        peak = sizes.index(max(sizes))
        # up to the peak, then only down: no flapping
        assert sizes[:peak + 1] == sorted(sizes[:peak + 1]), sizes
        assert sizes[peak:] == sorted(sizes[peak:], reverse=True), sizes
        assert max(sizes) == 3 and sizes[-1] == 1
        assert len(adaptive.events) <= 4, adaptive.events
        assert adaptive.error is None


@pytest.mark.timeout(60)
def test_local_cluster_logs_hold_each_process_stderr():
    with LocalCluster(n_workers=1, threads_per_worker=1,
                      worker_args=["--log-level", "info"]) as cluster:
        logs = cluster.logs()
        assert set(logs) == {"scheduler", "local-0"}
        assert "connected to" in logs["local-0"], logs
