"""The dashboard over HTTP (auth, every page and endpoint, /metrics), task output at the
client, progress bars, performance_report and the Chrome trace."""
from __future__ import annotations

import io
import json
import re
import urllib.error
import urllib.request

import pytest

import tasknest
from tasknest import Client, LocalCluster
from tasknest.dashboard.metrics import parse as parse_metrics
from tasknest.protocol.auth import dashboard_key

from commands import Proc
from conftest import wait_until
from dashboard_tasks import fails, inc, parent, tree

PAGES = ["/status", "/tree", "/workers", "/failures", "/task/some-key"]
API = ["/api/v1/status", "/api/v1/workers", "/api/v1/workers/logs", "/api/v1/failures",
       "/api/v1/task-stream", "/api/v1/tasks/some-key", "/api/v1/tree/some-key", "/api/v1/roots",
       "/api/v1/workers/stacks?worker=nope", "/metrics"]


def get(url: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


@pytest.fixture(scope="module")
def board():
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=False,
                      dashboard_address="127.0.0.1:0") as cluster:
        with Client(cluster) as c:
            link = c.dashboard_link
            base, key = link.split("/status?key=")
            yield c, base, key


def test_without_the_key_everything_but_health_is_401(board):
    c, base, key = board
    for path in PAGES + API:
        assert get(base + path)[0] == 401, path
        assert get(base + path + "?key=" + "0" * len(key))[0] == 401, path
        assert get(base + path, {"Cookie": "tasknest_key=wrong"})[0] == 401, path
    status, body, _ = get(base + "/health")
    assert (status, body) == (200, b"ok\n")


def test_the_link_lets_in_and_sets_a_cookie(board):
    c, base, key = board
    status, body, headers = get(c.dashboard_link)
    assert status == 200 and b"<main id=\"app\" data-page=\"status\">" in body
    assert "tasknest_key=" + key in headers.get("Set-Cookie", "")
    for path in PAGES:
        status, body, _ = get(base + path, {"Cookie": f"tasknest_key={key}"})
        assert status == 200 and b"/static/app.js" in body, path
    for path in API:
        status, body, _ = get(base + path, {"Authorization": f"Bearer {key}"})
        assert status in (200, 404), path      # (some-key, nope: unknown: 404 with JSON)
        if path.startswith("/api"):
            json.loads(body)
    assert get(base + "/static/app.js?key=" + key)[0] == 200


def test_the_key_derives_from_the_secret_and_is_not_it():
    assert dashboard_key("s3cret") == dashboard_key("s3cret") != dashboard_key("other")
    assert "s3cret" not in dashboard_key("s3cret")
    assert len(dashboard_key(None)) == 32 and dashboard_key(None) != dashboard_key(None)


def test_status_and_metrics_count_a_known_workload(board):
    c, base, key = board
    futs = c.map(inc, range(1000, 1020))
    assert c.gather(futs) == list(range(1001, 1021))
    bad = c.submit(fails, 7)
    with pytest.raises(ValueError):
        bad.result()
    c.get_task_stream()           # (a synced query: the workers' records have arrived)

    def scrape() -> dict:
        return parse_metrics(get(base + "/metrics?key=" + key)[1].decode())
    # a scrape shares the last tick's snapshot (up to a second old): wait for one after
    def current() -> bool:
        m = scrape()
        return m.get("tasknest_function_tasks", {}).get(
            (("function", "fails"), ("state", "erred"))) == 1 and m.get(
            "tasknest_tasks_finished_total", {}).get(
            (("function", "fails"), ("outcome", "error")), 0) >= 1
    wait_until(current, 10, message="metrics up to date")
    metrics = scrape()
    fn = metrics["tasknest_function_tasks"]
    assert fn[(("function", "inc"), ("state", "memory"))] == 20
    assert fn[(("function", "fails"), ("state", "erred"))] == 1
    done = metrics["tasknest_tasks_finished_total"]
    assert done[(("function", "inc"), ("outcome", "ok"))] >= 20
    assert done[(("function", "fails"), ("outcome", "error"))] >= 1
    assert metrics["tasknest_workers"][()] == 2
    assert metrics["tasknest_threads"][(("state", "total"),)] == 4
    count = metrics["tasknest_task_duration_seconds_count"][()]
    assert count == sum(v for (labels, v) in done.items())
    assert "tasknest_event_loop_lag_seconds" in metrics
    assert not any(("key", k) in labels for fam in metrics.values() for labels in fam
                   for k in [f.key for f in futs])    # never a label per key
    status = json.loads(get(base + "/api/v1/status?key=" + key)[1])
    assert status["version"] == 1
    row = next(p for p in status["progress"] if p["function"] == "inc")
    assert row["memory"] == 20
    failures = json.loads(get(base + "/api/v1/failures?key=" + key)[1])
    assert any(f["key"] == bad.key and "bad input 7" in f["text"] for f in failures)
    del futs, bad


def test_task_and_tree_endpoints_show_tasks_launched_from_tasks(board):
    c, base, key = board
    root = c.submit(tree, 3, "api")
    assert root.result() == 8
    c.get_task_stream()
    node = json.loads(get(f"{base}/api/v1/tree/{root.key}?depth=5&key={key}")[1])
    assert node["function"] == "tree" and node["state"] == "memory"
    assert node["nchildren"] == 2

    def count(n: dict) -> int:
        return 1 + sum(count(k) for k in n.get("children", []))
    assert count(node) == 15                  # 1 + 2 + 4 + 8
    kid = node["children"][0]["key"]
    info = json.loads(get(f"{base}/api/v1/tasks/{kid}?key={key}")[1])
    assert info["parent"] == root.key and info["root"] == root.key
    assert info["function"] == "tree" and info["nchildren"] == 2
    assert info["duration"] is not None and info["worker"].startswith("tcp://")
    status, body, _ = get(f"{base}/api/v1/tasks/nope-123?key={key}")
    assert status == 404 and json.loads(body) == {"error": "unknown task"}
    assert get(f"{base}/api/v1/tree/{root.key}?depth=x&key={key}")[0] == 400
    roots = json.loads(get(f"{base}/api/v1/roots?key={key}")[1])
    assert {"key": root.key, "function": "tree", "state": "memory", "children": 2} in roots


def test_progress_on_a_non_terminal_stream_prints_lines(board):
    c, base, key = board
    futs = c.map(inc, range(2000, 2010))
    out = io.StringIO()
    tasknest.progress(futs, file=out, interval=0.05, timeout=60)
    lines = out.getvalue().splitlines()
    assert lines and "\r" not in out.getvalue()
    assert re.search(r"100%.*10/10", lines[-1]), lines[-1]
    root = c.submit(tree, 2, "progress")
    out = io.StringIO()
    tasknest.progress(root, nested=True, file=out, interval=0.05, timeout=60)
    assert re.search(r"100%.*7/7", out.getvalue().splitlines()[-1]), out.getvalue()


def test_performance_report_and_chrome_trace(board, tmp_path):
    c, base, key = board
    path = tmp_path / "report.html"
    with tasknest.performance_report(str(path)):
        assert c.submit(tree, 2, "report").result() == 4
    text = path.read_text()
    assert "<svg" in text and "tree" in text and "http" not in text.split("<body>")[1]
    rows = c.get_task_stream(filename=str(tmp_path / "trace.json"))
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert sum(e["ph"] == "X" for e in trace["traceEvents"]) == len(rows) > 0


def test_no_dashboard():
    with LocalCluster(n_workers=1, processes=False, dashboard=False) as cluster:
        with Client(cluster) as c:
            assert c.dashboard_link is None and cluster.dashboard_link is None


@pytest.mark.timeout(90)
def test_task_output_reaches_the_client_on_a_command_line_cluster(capsys):
    sched = Proc("scheduler", "--port", "0", "--dashboard-address", "127.0.0.1:0")
    workers = []
    try:
        address = sched.first_line()
        token = sched.generated_token()
        workers = [Proc("worker", address, "--nthreads", "2", "--name", f"w{i}",
                        "--token", token) for i in (1, 2)]
        for w in workers:
            w.first_line()
        with Client(address, token=token) as c:
            assert c.dashboard_link.startswith("http://127.0.0.1:")
            assert c.submit(parent, "hello").result() == "hello"
            seen = []

            def printed() -> str:
                seen.append(capsys.readouterr().out)
                return "".join(seen)
            wait_until(lambda: "grandchild logs hello" in printed() and
                       "repeated 2 more times" in printed(), 30)
            text = printed()
            assert re.search(r"\(parent on tcp://[\d.:]+\) parent says hello", text)
            assert re.search(r"\(grandchild on tcp://[\d.:]+\) grandchild says hello", text)
            assert "(parent on " in text and "parent logs hello" in text
            assert text.count("same line again") == 1
            logs = c.get_worker_logs()
            assert set(logs) == {w for w in c.scheduler_info()["workers"]}
        with Client(address, token=token, forward_output=False) as c:
            assert c.submit(parent, "quiet").result() == "quiet"
            c.get_task_stream()
            assert "quiet" not in capsys.readouterr().out
        for w in workers:                # a task's records went to its client, not also here
            w.proc.kill()
            w.proc.wait()
            err = w.proc.stderr.read().decode()
            assert "logs hello" not in err and "says hello" not in err, err
    finally:
        for p in [*workers, sched]:
            p.stop()


def test_no_dashboard_on_the_command_line(procs):
    sched = procs("scheduler", "--port", "0", "--no-dashboard")
    address = sched.first_line()
    token = sched.generated_token()
    with Client(address, token=token) as c:
        assert c.dashboard_link is None


def test_status_on_the_command_line(procs):
    sched = procs("scheduler", "--port", "0", "--no-dashboard")
    address = sched.first_line()
    token = sched.generated_token()
    w = procs("worker", address, "--nthreads", "2", "--name", "wst", "--token", token)
    w.first_line()
    out = procs("status", address, "--token", token)
    assert out.wait(60) == 0
    text = out.proc.stdout.read().decode()
    assert "1 workers, 2 threads" in text and "wst" in text and "tasks:" in text


def _wait_file(path):
    from conftest import wait_for_file
    return wait_for_file(path, 60)


def test_each_worker_serves_metrics_and_the_dashboard_fetches_its_stacks(board, tmp_path):
    c, base, key = board
    status = json.loads(get(base + "/api/v1/status?key=" + key)[1])
    wait_until(lambda: all(w["http"] for w in json.loads(
        get(base + "/api/v1/workers?key=" + key)[1])), 10, message="workers' http known")
    workers = json.loads(get(base + "/api/v1/workers?key=" + key)[1])
    assert len(workers) == len(status["workers"]) == 2
    url = workers[0]["http"]
    assert get(url + "/health")[0] == 200
    assert get(url + "/metrics")[0] == 401 and get(url + "/stacks")[0] == 401
    metrics = parse_metrics(get(url + "/metrics?key=" + key)[1].decode())
    assert metrics["tasknest_worker_threads"][(("state", "total"),)] == 2
    assert "tasknest_worker_executions_total" in metrics
    flag = tmp_path / "go"
    fut = c.submit(_wait_file, str(flag))
    try:
        def stack_of_running() -> str:
            for w in workers:
                body = json.loads(get(f"{base}/api/v1/workers/stacks?worker={w['address']}"
                                      f"&key={key}")[1])
                if fut.key in body["stacks"]:
                    return body["stacks"][fut.key]
            return ""
        stack = wait_until(stack_of_running, 30, message="the running task's stack")
        assert "wait_for_file" in stack and "_wait_file" in stack
    finally:
        flag.touch()
    fut.result()
    assert get(f"{base}/api/v1/workers/stacks?worker=nope&key={key}")[0] == 404


def test_transfers_are_marked_and_counted(board):
    c, base, key = board
    a, b = sorted(c.scheduler_info()["workers"])
    x = c.submit(bytes, 100_000, workers=[a])
    y = c.submit(len, x, workers=[b])
    assert y.result() == 100_000
    c.get_task_stream()                 # (synced: the workers' records have arrived)
    status = json.loads(get(base + "/api/v1/status?key=" + key)[1])
    moves = [mk for mk in status["marks"] if mk[2] == "transfer" and mk[1] == b
             and mk[5] == a and mk[7] >= 100_000]
    assert moves, status["marks"]
    wait_until(lambda: parse_metrics(get(base + "/metrics?key=" + key)[1].decode())[
        "tasknest_transferred_bytes_total"][()] >= 100_000, 10, message="bytes transferred")
    del x, y


def test_a_tls_cluster_has_its_dashboard_too():
    with LocalCluster(n_workers=1, processes=False, security=True,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as c:
        assert c.scheduler_address.startswith("tls://")
        assert c.submit(inc, 1).result() == 2
        status, body, _ = get(c.dashboard_link)
        assert status == 200 and b"data-page=\"status\"" in body
        base = c.dashboard_link.split("/status")[0]
        assert get(base + "/api/v1/status")[0] == 401


def test_the_pages_need_nothing_from_the_internet(board):
    """Clusters have no internet: the script and style ship in the package, no CDN."""
    c, base, key = board
    from importlib.resources import files
    static = files("tasknest.dashboard") / "static"
    for name in ("app.js", "style.css"):
        text = (static / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
        assert get(f"{base}/static/{name}?key={key}")[1].decode() == text
    page = get(c.dashboard_link)[1].decode()
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
