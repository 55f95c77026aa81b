"""The Observer component driven directly (no sockets): output routing, bounds, trees."""
from __future__ import annotations

import pytest

from tasknest.dashboard import views
from tasknest.protocol import messages as m
from tasknest.protocol.monitoring import aggregate, pack_runs
from tasknest.scheduler import observer as observer_mod
from tasknest.scheduler.observer import Observer
from tasknest.scheduler.state import SchedulerState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cluster():
    st = SchedulerState()
    clock = Clock()
    obs = Observer(st, clock)
    st.add_client("c-user")
    st.add_worker("w-1", "tcp://h:1", "one", 2, 1, 0, [], 0.0)
    st.add_worker("w-2", "tcp://h:2", "two", 2, 2, 0, [], 0.0)
    return st, obs, clock


def monitor(runs=(), spawns=(), output=(), logs=(), stats=None, events=()):
    """A monitor message as a worker sends it (with its aggregates of the runs)."""
    runs = [list(r) for r in runs]
    stats = dict(stats or {})
    if runs:
        stats.update(aggregate(runs))
    return m.Monitor(runs=pack_runs(runs) if runs else b"", nruns=len(runs), spawns=[list(s) for s in spawns], output=[list(o) for o in output], logs=list(logs), stats=stats, events=[list(e) for e in events])


def outputs(actions):
    return [(target, msg.lines) for target, msg in actions if msg.op == "output"]


def submit(st, key):
    return st.handle("c-user", m.Submit(key=key, func=1, args=b"", deps=[], priority=[0, 0, 0], retries=0, workers=None, resources=None, loose=False))


def test_output_goes_to_the_client_that_submitted_the_root():
    st, obs, clock = cluster()
    submit(st, "f-root")
    st.handle("w-1", m.Claim(key="g-child", func=1, args=b"", deps=[], priority=[0, -1, 0], retries=0, confirm=False))
    acts = st.handle("w-1", monitor(spawns=[("f-root", "g-child"), ("g-child", "h-grand")],
                                    output=[("h-grand", "stdout", "hello")]))
    assert outputs(acts) == [("c-user", [["h", "tcp://h:1", "h-grand", "stdout", "hello"]])]


def test_output_waits_a_little_for_its_tree_then_goes():
    st, obs, clock = cluster()
    submit(st, "f-root")
    # the grandchild ran on worker 2 before worker 1's message with the edges came
    acts = st.handle("w-2", monitor(output=[("h-grand", "stdout", "early")]))
    assert outputs(acts) == []
    acts = st.handle("w-1", monitor(spawns=[("f-root", "g-child"), ("g-child", "h-grand")]))
    assert outputs(acts) == [("c-user", [["h", "tcp://h:2", "h-grand", "stdout", "early"]])]
    # a line whose tree never becomes known is dropped after a while, not kept forever
    st.handle("w-2", monitor(output=[("x-orphan", "stdout", "lost")]))
    clock.now += observer_mod.PENDING + 1
    obs.tick()
    assert not obs.pending and outputs(st._flush()) == []


def test_records_stay_bounded(monkeypatch):
    monkeypatch.setattr(observer_mod, "STREAM", 1000)
    monkeypatch.setattr(observer_mod, "EDGES", 300)
    st, obs, clock = cluster()
    for batch in range(10):
        runs = [(f"inc-{batch}x{i}", 0, 1.0, 1.001, True) for i in range(400)]
        spawns = [("root-x", f"inc-{batch}x{i}") for i in range(400)]
        st.handle("w-1", monitor(runs=runs, spawns=spawns))
        obs.validate()
    rows = list(obs.all_rows())
    assert 1000 <= len(rows) < 1400 and rows[-1][3] == "inc-9x399" and rows[-1][0] == 4000
    assert [r[0] for r in obs.rows_since(3990, 5)] == [3996, 3997, 3998, 3999, 4000]
    assert len(obs.recent) == len(rows)
    assert len(obs._spawns) == 1          # unindexed edges: nobody looked, the oldest went
    assert len(obs.edges()) <= 300
    assert obs.done_by_func["inc"] == [4000, 0]
    assert sum(obs.hist) == 4000


def test_a_lost_worker_is_a_failure():
    st, obs, clock = cluster()
    st.remove_worker("w-2", "killed")
    assert [f["kind"] for f in obs.failures] == ["worker-lost"]
    assert obs.failures[0]["worker"] == "tcp://h:2" and obs.failures[0]["time"] == 1000.0


def test_the_tree_rolls_up_many_children():
    st, obs, clock = cluster()
    submit(st, "f-root")
    kids = [f"k-{i}" for i in range(100)]
    runs = [(k, 0, 1.0, 1.5, i % 10 != 0) for i, k in enumerate(kids)]
    st.handle("w-1", monitor(runs=runs, spawns=[("f-root", k) for k in kids]))
    node = views.tree(st, obs, "f-root")
    assert node["nchildren"] == 100
    assert len(node["children"]) == views.TREE_CHILDREN
    shown_failed = sum(c["state"] == "failed" for c in node["children"])
    assert node["rolled_up"] == {"finished": 90 - (25 - shown_failed),
                                 "failed": 10 - shown_failed}
    assert node["children"][0]["duration"] == pytest.approx(0.5)
    snap = views.snapshot(st, obs, 0)
    assert [r["key"] for r in snap["roots"]] == ["f-root"]
    assert snap["progress"][0]["function"] == "k" and snap["progress"][0]["done"] == 90


def test_a_failure_listed_before_its_run_says_where_it_ran_once_that_arrives():
    st, obs, clock = cluster()
    submit(st, "bad-1")
    ts = st.tasks["bad-1"]
    wid = ts.processing_on
    st.handle(wid, m.TaskErred(key="bad-1", exception=[], traceback="Traceback ...\nValueError: no", kind="exception", attempt=ts.attempt))
    views.snapshot(st, obs, 0)
    assert [(f["key"], f["worker"]) for f in obs.failures] == [("bad-1", "")]
    st.handle(wid, monitor(runs=[("bad-1", 0, 5.0, 6.0, False)]))
    assert obs.done_by_func["bad"] == [0, 1]
    address = st.workers[wid].address
    assert [(f["key"], f["worker"], f["time"], f["text"]) for f in obs.failures] == [
        ("bad-1", address, 6.0, "ValueError: no")]


def test_malformed_monitor_contents_are_dropped_and_every_view_still_works():
    from tasknest.dashboard.metrics import parse, render
    st, obs, clock = cluster()
    submit(st, "f-root")
    good = monitor(runs=[("f-root", 0, 1.0, 2.0, True)], spawns=[("f-root", "g-1")])
    st.handle("w-1", good)
    bad = m.Monitor(runs=pack_runs([["f-x", "thread?", "start", None, 1], [1, 2], ["ok-1", 0, 1.0, 2.0, True]]), nruns=3, spawns=[["only-one"], [1, 2], ["p-1", "c-1"]], output=[["k", "stdout"], [1, "stdout", "x"]], logs=["a log line"], stats={"cpu": "lots", "memory": 5, "done": {"f": [1, "x"], 3: [1, 0]},
                     "hist": [1, 2], "hist_sum": "x", "erred": [[1, 2], "x"], "http": 7}, events=[["transfer", "a", 1, "", 1, 1], ["spill", 1.0, 1.0, "", 1]])
    st.handle("w-1", bad)
    # a blob that is not rows, one of the wrong length, and a count no blob could hold
    st.handle("w-1", m.Monitor(runs=b"\xc1\xc1 not msgpack", nruns=2, spawns=[], output=[], logs=[], stats={"memory": 5}, events=[]))
    st.handle("w-1", m.Monitor(runs=pack_runs([["ok-2", 0, 1.0, 2.0, True]]), nruns=2, spawns=[], output=[], logs=[], stats={"memory": 5}, events=[]))
    st.handle("w-1", m.Monitor(runs=b"\x91", nruns=10**9, spawns=[], output=[], logs=[], stats={"memory": 5}, events=[]))
    obs.validate()
    rows = list(obs.all_rows())
    assert [r[3] for r in rows] == ["f-root", "?-malformed", "?-malformed", "ok-1"] + ["?-malformed"] * 4
    assert [r[0] for r in rows] == list(range(1, 9))
    assert obs.edges() == {"g-1": "f-root", "c-1": "p-1"}
    assert obs.stats["w-1"] == {"memory": 5} and not obs.marks
    assert obs.done_by_func == {"f": [1, 0]}       # (the bad counts were not added)
    snap = views.snapshot(st, obs, 0)
    parse(render(snap)[0].decode())
    assert views.tree(st, obs, "f-root")["nchildren"] == 1
    assert views.task(st, obs, "ok-1")["duration"] == 1.0
    assert obs.query("task_stream", None)[3]["key"] == "ok-1"


def test_the_client_counts_repeated_lines_and_says_so():
    import io
    from tasknest.client.output import OutputPrinter
    out = io.StringIO()
    p = OutputPrinter(out)
    line = ["f", "tcp://h:1", "f-1", "stdout", "same"]
    p.show([line, line, line])
    p.show([line])
    assert out.getvalue() == "(f on tcp://h:1) same\n"
    p.show([["g", "tcp://h:2", "g-1", "stderr", "other"]])
    p.show([line])
    p.close()
    assert out.getvalue().splitlines() == [
        "(f on tcp://h:1) same", "  (the line above repeated 3 more times)",
        "(g on tcp://h:2 stderr) other", "(f on tcp://h:1) same"]
