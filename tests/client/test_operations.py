"""Operations on the cluster: run, run_on_scheduler, plugins, upload_file, restart,
client.cluster (real worker processes)."""
from __future__ import annotations

import os

import pytest

from conftest import wait_until
from tasknest import Client, Event, LocalCluster, RemoteError

pytestmark = pytest.mark.timeout(90)


def test_run_returns_one_entry_per_worker(client, cluster):
    pids = client.run(os.getpid)
    assert sorted(pids) == sorted(w["address"] for w in client.scheduler_info()["workers"].values())
    assert sorted(pids.values()) == sorted(w["pid"] for w in client.scheduler_info()["workers"].values())
    one = next(iter(pids))
    assert list(client.run(os.getpid, workers=[one])) == [one]
    assert client.run(lambda dask_worker: dask_worker.address) == {a: a for a in pids}
    with pytest.raises(ZeroDivisionError):
        client.run(lambda: 1 / 0)
    errors = client.run(lambda: 1 / 0, on_error="return")
    assert all(isinstance(e, ZeroDivisionError) for e in errors.values())
    assert client.run_on_scheduler(os.getpid) not in (os.getpid(), *pids.values())
    assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.address) == \
        client.scheduler_address


def test_run_from_inside_a_task(client):
    def count_workers() -> int:
        from tasknest import get_client
        return len(get_client().run(os.getpid))
    assert client.submit(count_workers).result(timeout=30) == 2


class Marker:
    def __init__(self, path: str) -> None:
        self.path = path

    def setup(self, worker) -> str:
        worker.marker = "set up"
        return worker.name

    def teardown(self, worker) -> None:
        with open(self.path, "a") as fh:
            fh.write(f"{worker.name}\n")


def uploaded_value() -> int:
    import tasknest_uploaded_module
    return tasknest_uploaded_module.VALUE


def test_plugins_and_uploads_reach_present_and_future_workers(tmp_path):
    module = tmp_path / "tasknest_uploaded_module.py"
    module.write_text("VALUE = 7\n")
    torn = str(tmp_path / "torn")
    with LocalCluster(n_workers=1, threads_per_worker=1) as cl, Client(cl) as c:
        assert c.cluster is cl
        assert list(c.register_plugin(Marker(torn), name="marker").values()) == ["local-0"]
        c.upload_file(str(module))
        assert c.submit(uploaded_value).result(timeout=30) == 7
        cl.add_worker(name="late")
        wait_until(lambda: len(c.scheduler_info()["workers"]) == 2, 30, message="the late worker joined")
        late = next(w["address"] for w in c.scheduler_info()["workers"].values() if w["name"] == "late")
        assert c.submit(uploaded_value, workers=[late], pure=False).result(timeout=30) == 7
        assert c.run(lambda dask_worker: dask_worker.marker, workers=[late]) == {late: "set up"}
    assert sorted(open(torn).read().split()) == ["late", "local-0"]


def test_restart_gives_new_worker_processes_and_a_working_client():
    with LocalCluster(n_workers=2, threads_per_worker=1) as cl, Client(cl) as c:
        before = set(c.run(os.getpid).values())
        pending = c.submit(Event("restart-never").wait, 60)
        wait_until(lambda: any(c.processing().values()), 20, message="the task runs")
        c.restart(timeout=60)
        with pytest.raises(RemoteError, match="restarted"):
            pending.result(timeout=30)
        after = set(c.run(os.getpid).values())
        assert len(after) == 2 and not before & after
        assert c.submit(pow, 2, 10).result(timeout=30) == 1024
        assert c.gather(c.map(pow, range(5), [2] * 5), timeout=30) == [0, 1, 4, 9, 16]
