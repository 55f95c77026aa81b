"""The scheduler is SIGKILLed mid-computation and comes back: results exact, nothing
that had finished runs again, no worker restarts, no future errs."""
import collections
import os
import signal
import time

import pytest

from tasknest import Client, Event, LocalCluster, Queue, Variable, worker_client
from conftest import wait_until


def logged_inc(x, path):
    log_line(path, x)
    return x + 1


def kill_scheduler(cluster):
    before = cluster.scheduler_restarts
    os.kill(cluster.scheduler_proc.pid, signal.SIGKILL)
    wait_until(lambda: cluster.scheduler_restarts > before, 30, message="restarted")


@pytest.mark.timeout(60)
def test_a_client_connecting_after_a_restart_sees_the_restored_state(tmp_path):
    with LocalCluster(n_workers=1, threads_per_worker=1) as cluster:
        with Client(cluster) as client:
            future = client.submit(logged_inc, 1, str(tmp_path / "runs"))
            assert future.result() == 2
            kill_scheduler(cluster)
            assert future.result() == 2
            with Client(cluster) as other:
                wait_until(lambda: other.who_has([future])[future.key], 30)
                assert list(other.has_what().values()) == [[future.key]] or \
                    future.key in sum(other.has_what().values(), [])
        # the restarted scheduler's dashboard comes up (after its recovery), and the
        # cluster's log keeps the lines of both scheduler processes
        wait_until(lambda: cluster.logs()["scheduler"].count("tasknest dashboard at") == 2,
                   30, message="both schedulers' dashboard lines in the log")


@pytest.mark.timeout(60)
def test_a_scheduler_gone_before_its_welcome_is_noticed_at_once():
    """A scheduler killed between the handshake and its welcome: the worker and the
    client hear of it at once (and, reconnecting, try again) instead of waiting out
    their timeouts for a welcome that cannot come."""
    import asyncio

    from tasknest.errors import CommClosedError
    from tasknest.protocol.comm import listen
    from tasknest.worker.server import Worker

    async def main() -> None:
        registrations = []

        def on_comm(comm):
            def handle(msg):
                registrations.append(msg.op)
                comm.close("killed before the welcome")
            comm.start(handle)

        listener = await listen("tcp://127.0.0.1:0", on_comm, "secret")
        worker = Worker(listener.address, token="secret", reconnect_timeout=40, http=False)
        start = time.monotonic()
        with pytest.raises(CommClosedError, match="closed before the welcome"):
            await worker.start()
        assert time.monotonic() - start < 10, "waited for a welcome from a closed connection"
        await worker.close()
        client = Client(listener.address, token="secret", timeout=40, asynchronous=True)
        start = time.monotonic()
        with pytest.raises(Exception, match="closed before the welcome"):
            await client
        assert time.monotonic() - start < 10, "waited for a welcome from a closed connection"
        assert registrations == ["register-worker", "register-client"]
        listener.close()

    asyncio.run(main())


# -- twenty kills in one run --------------------------------------------------------------
# The tasks themselves are instant. What spreads the 20 kills over the run, whatever
# the machine's speed, is a budget: a task logs its line (its side effect) only while
# the side-effect file has fewer lines than the budget file says. The test raises the
# budget by a random amount before each kill, so workers carry on past the kill while
# the scheduler is away, and the run cannot end before the last kill.
KILLS = 20


def lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def set_budget(path, allowed):
    """Let the run go on up to ``allowed`` lines (None: no limit any more)."""
    if allowed is None:
        os.remove(path + ".budget")
        return
    with open(path + ".budget.tmp", "w") as f:
        f.write(str(allowed))
    os.replace(path + ".budget.tmp", path + ".budget")


def log_line(path, text):
    """Append one line to the side-effect file, within the budget (see above)."""
    while True:
        try:
            with open(path + ".budget") as f:
                allowed = int(f.read())
        except FileNotFoundError:
            break
        if lines(path) < allowed:
            break
        time.sleep(0.002)   # the task waits for the test: the situation under test
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{text}\n".encode())
    finally:
        os.close(fd)


def kill_at_random_moments(cluster, path, total, done, seed, kills=KILLS):
    """SIGKILL the scheduler ``kills`` times, each once the side-effect file has grown
    by a random count of lines since the last restart (zero included: a kill during
    recovery), with a random budget beyond it (work done while the scheduler is away).
    The amounts are drawn from what is left, so the kills spread over the whole run.
    Returns the line counts at each kill."""
    import random
    rng = random.Random(seed)
    at: list = []
    for k in range(kills):
        now = lines(path)
        step = max(2, (total * 9 // 10 - now) // (kills - k))
        mark = now + rng.randint(0, step // 2)
        set_budget(path, mark + rng.randint(1, step // 2))
        wait_until(lambda: lines(path) >= mark or done(), 30,
                   message=f"the run reached {mark} of {total} lines (after {k} kills, "
                           f"seed {seed})")
        assert not done(), f"the run ended after {k} kills"
        at.append(lines(path))
        kill_scheduler(cluster)
    set_budget(path, None)
    return at


def fib_calls(n):
    out, stack = [], [n]
    while stack:
        k = stack.pop()
        out.append(k)
        if k >= 2:
            stack += [k - 1, k - 2]
    return sorted(out)


def worker_pids(cluster):
    return [p.pid for p in cluster.worker_procs]


def assert_no_worker_restarted(cluster, pids):
    assert worker_pids(cluster) == pids
    assert all(p.poll() is None for p in cluster.worker_procs), "a worker process died"


def assert_ran_once(path, expected):
    with open(path) as f:
        ran = sorted(f.read().split())
    assert len(ran) == len(expected), f"{len(ran)} runs for {len(expected)} tasks"
    assert ran == sorted(expected), "a task ran twice or never"


def restart_cluster(threads=1, recovery_wait=10):
    # no nanny: the worker processes are the cluster's, so their pids show a restart
    return LocalCluster(n_workers=2, threads_per_worker=threads, nanny=False,
                        dashboard=False, recovery_wait=recovery_wait)


def budget_inc(x, path):
    log_line(path, x)
    return x + 1


@pytest.mark.timeout(120)
def test_a_10000_task_map_survives_20_kills(tmp_path):
    path = str(tmp_path / "runs")
    n = 10_000
    set_budget(path, 0)
    with restart_cluster() as cluster:
        pids = worker_pids(cluster)
        with Client(cluster) as client:
            futures = client.map(budget_inc, range(n), path=path)
            kill_at_random_moments(cluster, path, n, lambda: all(f.done() for f in futures),
                                   seed=n)
            assert client.gather(futures) == [x + 1 for x in range(n)]
            assert all(f.status == "finished" for f in futures)
        assert_ran_once(path, [str(x) for x in range(n)])
        assert_no_worker_restarted(cluster, pids)


def budget_fib(n, path):
    log_line(path, n)
    if n < 2:
        return n
    with worker_client() as c:
        a, b = c.gather([c.submit(budget_fib, n - 1, path, pure=False),
                         c.submit(budget_fib, n - 2, path, pure=False)])
    return a + b


@pytest.mark.timeout(120)
def test_a_2000_task_fib_tree_from_tasks_survives_20_kills(tmp_path):
    path = str(tmp_path / "runs")
    expected = fib_calls(15)            # 1,973 tasks, each launched from its parent
    set_budget(path, 0)
    with restart_cluster(threads=2) as cluster:
        pids = worker_pids(cluster)
        with Client(cluster) as client:
            future = client.submit(budget_fib, 15, path, pure=False)
            kill_at_random_moments(cluster, path, len(expected), future.done, seed=15)
            assert future.result(timeout=60) == 610
            assert future.status == "finished"
        assert_ran_once(path, [str(k) for k in expected])
        assert_no_worker_restarted(cluster, pids)


def logged_element(x, path):
    log_line(path, f"e{x}")
    return x * 2 + 1


def logged_aggregate(values, group, path):
    log_line(path, f"a{group}")
    return sum(values)


def logged_process_all(group, data, path):
    """The seeds' process_all: scatter from a task, map over the pieces, aggregate."""
    log_line(path, f"p{group}")
    with worker_client() as e:
        elements = e.scatter(data)
        futures = e.map(logged_element, elements, path=path)
        return e.submit(logged_aggregate, futures, group, path).result()


@pytest.mark.timeout(120)
def test_the_seeds_process_all_with_scattered_data_survives_20_kills(tmp_path):
    path = str(tmp_path / "runs")
    groups, size = 40, 40
    data = [[g * 1000 + j for j in range(size)] for g in range(groups)]
    expected = [f"p{g}" for g in range(groups)] + [f"a{g}" for g in range(groups)] \
        + [f"e{x}" for piece in data for x in piece]
    set_budget(path, 0)
    with restart_cluster(threads=2) as cluster:
        pids = worker_pids(cluster)
        with Client(cluster) as client:
            scattered = client.scatter(data)          # the inputs, scattered by the client
            futures = [client.submit(logged_process_all, g, scattered[g], path)
                       for g in range(groups)]
            kill_at_random_moments(cluster, path, len(expected),
                                   lambda: all(f.done() for f in futures), seed=40)
            assert client.gather(futures) == [sum(x * 2 + 1 for x in piece) for piece in data]
            assert all(f.status == "finished" for f in futures + scattered)
        assert_ran_once(path, expected)
        assert_no_worker_restarted(cluster, pids)


def pid_inc(x, path):
    log_line(path, f"{x} {os.getpid()}")
    return x + 1


@pytest.mark.timeout(120)
def test_the_scheduler_and_a_worker_killed_together(tmp_path):
    """That worker's tasks run again on the other; everything else is kept."""
    path = str(tmp_path / "runs")
    n = 3000
    set_budget(path, n // 3)
    with restart_cluster(recovery_wait=2) as cluster:   # (the dead worker: not for long)
        with Client(cluster) as client:
            futures = client.map(pid_inc, range(n), path=path)
            wait_until(lambda: lines(path) >= n // 3, 30, message="a third of the map ran")
            # the one that ran more dies: on two shared cores one worker may run most of
            # the first third, or all of it while the other is descheduled
            with open(path) as f:
                ran = collections.Counter(int(line.split()[1]) for line in f)
            dead, alive = sorted(cluster.worker_procs, key=lambda p: -ran[p.pid])
            os.kill(dead.pid, signal.SIGKILL)
            kill_scheduler(cluster)
            set_budget(path, None)
            assert client.gather(futures) == [x + 1 for x in range(n)]
            assert all(f.status == "finished" for f in futures)
        assert alive.poll() is None
        runs: dict = {}
        with open(path) as f:
            for line in f:
                x, pid = line.split()
                runs.setdefault(int(x), []).append(int(pid))
        assert sorted(runs) == list(range(n)), "a task never ran"
        twice = [x for x, pids in runs.items() if pids.count(alive.pid) > 1]
        assert not twice, f"tasks ran twice on the surviving worker: {twice[:5]}"
        assert any(dead.pid in pids for pids in runs.values()), "the dead worker ran nothing"
        # (whether any of the dead worker's results must be computed again depends on
        # whether the client had received them before the kill: both are right)
        again = [x for x, pids in runs.items() if len(pids) > 1]
        assert all(runs[x][0] == dead.pid for x in again), "a task finished on the " \
            "surviving worker ran again"


def square(x):
    return x * x


@pytest.mark.timeout(90)
def test_coordination_primitives_survive_a_scheduler_kill():
    """What queues, variables, datasets and events hold is journalled: after a SIGKILL
    of the scheduler, a new client finds it all, futures inside it included."""
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard=False) as cluster:
        with Client(cluster) as client:
            fut = client.submit(square, 7)
            assert fut.result() == 49
            client.publish_dataset(answer=fut, plain=[1, 2, 3])
            Variable("v", client=client).set({"a": fut})
            q = Queue("q", client=client)
            q.put("first")
            q.put(fut)
            q.put("third")
            assert q.get() == "first"            # (taken before the kill: stays taken)
            Event("e", client=client).set()
            Event("unset", client=client)
            kill_scheduler(cluster)
            with Client(cluster) as other:
                assert sorted(other.list_datasets()) == ["answer", "plain"]
                assert other.get_dataset("answer").result(timeout=30) == 49
                assert other.get_dataset("plain") == [1, 2, 3]
                assert Variable("v", client=other).get(timeout=30)["a"].result(timeout=30) == 49
                q2 = Queue("q", client=other)
                assert q2.get(timeout=30).result(timeout=30) == 49
                assert q2.get(timeout=30) == "third"
                assert q2.qsize() == 0
                assert Event("e", client=other).is_set()
                assert not Event("unset", client=other).is_set()
