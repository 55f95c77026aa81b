"""SLURMCluster on a real single-node SLURM started by the test (munged, slurmctld,
slurmd; no systemd): workers run inside SLURM jobs (job arrays)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from tasknest import Client, SLURMCluster
from tasknest.demo import expected, seed_options

import slurmd
from conftest import wait_until
from nested_tasks import fib_tasks

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)                       # the shared helpers (nested_tasks)
SRC = os.path.join(os.path.dirname(TESTS), "src")

_missing = slurmd.missing()
if _missing and os.environ.get("CI") == "true":
    pytestmark = pytest.mark.timeout(10)     # in CI a missing component is a failure

    def test_slurm_is_installed():
        pytest.fail(f"SLURM tests cannot run: {_missing}")
else:
    pytestmark = pytest.mark.skipif(bool(_missing), reason=_missing)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    s = slurmd.Slurm(str(tmp_path_factory.mktemp("slurm")))
    saved = dict(os.environ)
    os.environ["SLURM_CONF"] = s.conf
    # what the jobs import (sbatch passes this environment on)
    os.environ["PYTHONPATH"] = os.pathsep.join([SRC, TESTS, HERE])
    os.environ["TASKNEST_VALIDATE"] = "1"
    try:
        yield s.start()
    finally:
        s.stop()
        os.environ.clear()
        os.environ.update(saved)


def our_jobs(cluster_dir: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T %o"], capture_output=True,
                         text=True, check=True).stdout
    return [line for line in out.splitlines() if cluster_dir in line]


def counted(x, log):
    with open(log, "a") as f:
        f.write(f"{x}\n")
    return x * 10


def names(c):
    return sorted(w["name"] for w in c.scheduler_info(-1)["workers"].values())


@pytest.mark.timeout(90)
def test_slurm_cluster_runs_the_seeds_scales_and_leaves_no_job(slurm, tmp_path):
    with SLURMCluster(cores=1, memory="400MB", walltime="00:10:00", poll_interval=0.5,
                      shared_directory=str(tmp_path), job_extra_directives=["--comment=tn"]
                      ) as cluster, Client(cluster) as c:
        script = cluster.job_script(["job-0", "job-1"])
        assert "#SBATCH --comment=tn" in script and "#SBATCH -t 00:10:00" in script
        assert "#SBATCH --mem=382M" in script and cluster.token not in script
        assert stat.S_IMODE(os.stat(cluster.token_file).st_mode) == 0o600
        cluster.scale(2)
        c.wait_for_workers(2, timeout=60)
        assert len(our_jobs(cluster.directory)) == 2
        assert all(n.startswith("job-") for n in names(c))
        uri = "slurm://seed"
        assert set(seed_options(c, uri).values()) == {expected(uri)}
        assert c.submit(fib_tasks, 10, pure=False).result(timeout=60) == 55
        cluster.scale(1)                      # retires a worker, its job ends
        assert len(names(c)) == 1
        wait_until(lambda: len(our_jobs(cluster.directory)) == 1, 30,
                   message="one job left after scaling down")
        assert set(cluster.logs()) == set(cluster.plan)
        directory = cluster.directory
    assert our_jobs(directory) == []          # close() cancelled what was left
    assert not os.path.exists(directory)


@pytest.mark.timeout(90)
def test_walltime_retires_the_worker_before_the_end_and_nothing_is_lost(slurm, tmp_path):
    log = str(tmp_path / "executions")
    # walltime 1 minute (SLURM's smallest), retire 50 s before it: each job's worker
    # leaves gracefully after ~10 s and the cluster submits a replacement job
    with SLURMCluster(cores=1, walltime="1", lifetime_margin=50, poll_interval=0.5,
                      shared_directory=str(tmp_path / "shared")) as cluster, \
            Client(cluster) as c:
        cluster.scale(1)
        c.wait_for_workers(1, timeout=60)
        first = names(c)[0]
        held = c.submit(counted, 7, log, workers=[first])
        assert held.result(timeout=30) == 70
        cluster.scale(2)                      # a second job, started a little later
        c.wait_for_workers(2, timeout=60)
        wait_until(lambda: first not in names(c), 60,
                   message="the first job's worker retires before its walltime")
        wait_until(lambda: cluster.replaced >= 1, 30,
                   message="the ended job is submitted anew")
        assert c.submit(lambda v: v + 1, held).result(timeout=30) == 71
        with open(log) as f:
            assert f.read().split() == ["7"]  # moved, never computed again


IN_ALLOCATION = '''
import sys
from tasknest import Client, default_client
from tasknest.demo import expected, seed_options
from nested_tasks import fib_tasks
c = Client()                        # finds the scheduler of this allocation
assert c.scheduler_address == default_client().scheduler_address
workers = c.scheduler_info(-1)["workers"]
assert sorted(w["name"] for w in workers.values()) == ["rank-2", "rank-3"], workers
assert set(seed_options(c, "alloc://seed").values()) == {expected("alloc://seed")}
print("fib", c.submit(fib_tasks, 10, pure=False).result(timeout=60), sys.argv[1:])
'''


@pytest.mark.timeout(90)
def test_in_allocation_run_with_srun(slurm, tmp_path):
    script = tmp_path / "script.py"
    script.write_text(IN_ALLOCATION)
    out = subprocess.run(["srun", "-n", "4", "--chdir", str(tmp_path), sys.executable, "-m",
                          "tasknest.run", "--shared-dir", str(tmp_path), str(script), "x", "y"],
                         capture_output=True, text=True, timeout=80)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "fib 55 ['x', 'y']" in out.stdout, out.stdout + out.stderr
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tasknest-run")]
