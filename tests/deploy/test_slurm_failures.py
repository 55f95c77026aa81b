"""SLURMCluster's failure paths, on a fake sbatch/squeue/scancel (see fake_slurm.py):
what a real SLURM cannot be made to do on demand."""
from __future__ import annotations

import json
import os
import sys

import pytest

from tasknest import SLURMCluster, SubmissionError

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # has fake_slurm.py


@pytest.fixture
def fake(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sbatch", "squeue", "scancel"):
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\nexec {sys.executable} "
                        f"{os.path.join(TESTS, 'fake_slurm.py')} {name} \"$@\"\n")
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(tmp_path))

    class Fake:
        def mode(self, text: str) -> None:
            (tmp_path / "mode").write_text(text)

        def state(self) -> dict:
            path = tmp_path / "state.json"
            return json.loads(path.read_text()) if path.exists() else {"jobs": {}, "calls": []}

        def vanish(self, job: str) -> None:
            st = self.state()
            del st["jobs"][job]
            (tmp_path / "state.json").write_text(json.dumps(st))
    return Fake()


def make(tmp_path, **kw):
    return SLURMCluster(contact_address="127.0.0.1", shared_directory=str(tmp_path / "shared"),
                        poll_interval=3600, **kw)


@pytest.mark.timeout(60)
def test_pending_jobs_are_cancelled_on_scale_down_and_close(fake, tmp_path):
    with make(tmp_path, max_submit_failures=3) as cluster:
        cluster.scale(3)                       # one array of three
        sbatch = [c for c in fake.state()["calls"] if c[0] == "sbatch"]
        assert len(sbatch) == 1 and "--array=0-2" in sbatch[0]
        cluster.poll()
        assert sorted(fake.state()["jobs"]) == ["100_0", "100_1", "100_2"]
        cluster.scale(1)                       # pending jobs go first, without retiring
        assert list(fake.state()["jobs"]) == ["100_0"]
    assert fake.state()["jobs"] == {}
    assert ["scancel", "100_0"] in fake.state()["calls"]


@pytest.mark.timeout(60)
def test_a_vanished_job_is_replaced(fake, tmp_path):
    with make(tmp_path) as cluster:
        cluster.scale(2)
        fake.vanish("100_1")
        cluster.poll()
        assert len(cluster.plan) == 2 and cluster.replaced == 1
        assert sorted(fake.state()["jobs"]) == ["100_0", "101_0"]


@pytest.mark.timeout(60)
def test_refused_submissions_pause_the_cluster_with_a_clear_error(fake, tmp_path):
    with make(tmp_path, max_submit_failures=2) as cluster:
        fake.mode("refuse")
        with pytest.raises(SubmissionError, match="Invalid account"):
            cluster.scale(1)
        assert cluster.plan == []
        with pytest.raises(SubmissionError, match="paused after 2 failed submissions"):
            cluster.scale(1)
        calls = len(fake.state()["calls"])
        with pytest.raises(SubmissionError, match="paused"):
            cluster.scale(1)                   # paused: sbatch is not even called
        assert len(fake.state()["calls"]) == calls
        fake.mode("")
        cluster.resume()
        cluster.scale(1)
        assert cluster.plan and list(fake.state()["jobs"]) == ["100_0"]


@pytest.mark.timeout(60)
def test_a_queue_limit_keeps_what_was_granted(fake, tmp_path):
    with make(tmp_path) as cluster:
        fake.mode("limit 2")
        cluster.scale(2)
        with pytest.raises(SubmissionError, match="QOSMaxSubmitJobPerUserLimit"):
            cluster.scale(4)
        assert len(cluster.plan) == 2 and len(fake.state()["jobs"]) == 2


def inc(x):
    return x + 1


@pytest.mark.timeout(60)
def test_adapt_submits_for_waiting_tasks_and_cancels_jobs_that_never_started(fake, tmp_path):
    from tasknest import Client

    from conftest import wait_until
    with make(tmp_path) as cluster, Client(cluster) as c:
        adaptive = cluster.adapt(minimum=0, maximum=3, interval=0.1, cooldown=0.3,
                                 wait_count=3)
        futures = c.map(inc, range(5), pure=False)      # no worker yet: all wait
        wait_until(lambda: len(fake.state()["jobs"]) == 3, 20,
                   message="jobs submitted up to the maximum")
        c.cancel(futures)
        wait_until(lambda: fake.state()["jobs"] == {}, 20,
                   message="the pending jobs are cancelled once demand is gone")
        assert [(a, b) for _, a, b in adaptive.events] == [(0, 3), (3, 0)]
        assert adaptive.error is None
