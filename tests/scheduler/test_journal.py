"""The journal on its own: records, torn tails, garbage, the lock, compaction, replay."""
import os
import random
import subprocess
import sys

import pytest

from tasknest.scheduler.intents import Intents, Recorder, rebuild
from tasknest.scheduler.journal import Journal, StateDirInUse, decode_all, encode
from tasknest.scheduler.state import SchedulerState
from tasknest.protocol import messages as m


def records(n):
    return [["W", f"c-{i % 3}", [f"k{i}"]] for i in range(n)]


def test_records_round_trip_and_a_cut_at_any_byte_keeps_the_whole_records_before_it():
    recs = records(50)
    data = b"".join(encode(r) for r in recs)
    assert decode_all(data) == (recs, len(data))
    bounds = [0]
    for r in recs:
        bounds.append(bounds[-1] + len(encode(r)))
    for cut in random.Random(1).sample(range(len(data)), 200):
        got, good = decode_all(data[:cut])
        whole = max(i for i, b in enumerate(bounds) if b <= cut)
        assert got == recs[:whole] and good == bounds[whole]


def test_garbage_and_a_flipped_byte_stop_reading_there():
    recs = records(10)
    data = bytearray(b"".join(encode(r) for r in recs))
    first = len(encode(recs[0]))
    flipped = bytearray(data)
    flipped[first + 9] ^= 0xFF                    # inside the second record's payload
    assert decode_all(bytes(flipped))[0] == recs[:1]
    assert decode_all(bytes(data) + os.urandom(64))[0] == recs
    assert decode_all(b"\xff" * 100)[0] == []


def test_a_journal_cut_at_a_random_byte_is_cut_there_and_appended_to(tmp_path):
    j = Journal(str(tmp_path))
    j.lock("test")
    assert j.read() == []
    for r in records(100):
        j.append(r)
    j.commit()
    j.close()
    path = tmp_path / "journal-00000000"
    size = path.stat().st_size
    cut = random.Random(2).randrange(1, size)
    with open(path, "r+b") as f:
        f.truncate(cut)
    j = Journal(str(tmp_path))
    j.lock("test")
    kept = j.read()
    assert kept == records(100)[:len(kept)] and len(kept) < 100
    j.append(["W", "c-x", ["after"]])
    j.commit()
    j.close()
    j = Journal(str(tmp_path))
    j.lock("test")
    assert j.read() == kept + [["W", "c-x", ["after"]]]
    j.close()


def test_a_second_scheduler_on_the_same_state_dir_refuses_naming_the_first(tmp_path):
    first = Journal(str(tmp_path))
    first.lock("the scheduler at tcp://127.0.0.1:1234 (pid 42)")
    with pytest.raises(StateDirInUse, match=r"in use by the scheduler at tcp://127\.0\.0\.1:1234"):
        Journal(str(tmp_path)).lock("another")
    out = subprocess.run([sys.executable, "-m", "tasknest", "scheduler", "--port", "0",
                          "--state-dir", str(tmp_path), "--insecure"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "tcp://127.0.0.1:1234" in out.stderr, out.stderr
    first.close()
    Journal(str(tmp_path)).lock("now free")


def _state_with_tasks():
    st = SchedulerState()
    rec_log = []
    rec = Recorder(rec_log)
    msgs = [("c-a", m.Submit(key="x", func=b"f", args=b"a1", deps=[], priority=[0, 0, 1], retries=0, workers=None, resources=None, loose=False)),
            ("c-a", m.Submit(key="y", func=b"f", args=b"a2", deps=["x"], priority=[0, 0, 2], retries=1, workers=None, resources=None, loose=False)),
            ("c-b", m.Submit(key="z", func=b"g", args=b"a3", deps=[], priority=[0, 0, 3], retries=0, workers=None, resources=None, loose=False)),
            ("c-b", m.Release(keys=["z"]))]
    for source, msg in msgs:
        rec.record(source, msg, st)
        st.handle(source, msg)
    return st, rec, rec_log


def test_replayed_intents_rebuild_recipes_and_wants_and_drop_what_nobody_wants():
    _, _, log = _state_with_tasks()
    intents = Intents().replay(log)
    assert intents.live() == {"x", "y"}
    st = SchedulerState()
    assert rebuild(st, intents) == 2
    assert st.tasks["y"].deps == ["x"] and st.tasks["y"].retries == 1
    assert st.tasks["x"].func == b"f" and st.clients["c-a"] == {"x", "y"}
    assert all(ts.state == "released" for ts in st.tasks.values())
    st.validate()


def test_compaction_keeps_what_is_live_and_replay_gives_the_same(tmp_path):
    st, rec, log = _state_with_tasks()
    j = Journal(str(tmp_path))
    j.lock("test")
    j.read()
    for r in log:
        j.append(r)
    j.commit()
    j.compact(rec.snapshot(st, 3))
    j.close()
    assert sorted(os.listdir(tmp_path)) == ["journal-00000001", "lock", "snapshot-00000001"]
    j = Journal(str(tmp_path))
    j.lock("test")
    intents = Intents().replay(j.read())
    j.close()
    assert intents.epoch == 3 and intents.live() == {"x", "y"}


def _claim(key, func=b"f", deps=(), seq=0, retries=0):
    return m.Claim(key=key, func=func, args=b"a-" + key.encode(), deps=list(deps),
                   priority=[0, 1, seq], retries=retries, confirm=True)


def test_a_map_is_one_run_record_and_replays_as_its_recipes_and_wants():
    st = SchedulerState()
    out = []
    rec = Recorder(out)
    for i in range(5):
        rec.record("w-a", _claim(f"k{i}", seq=i, deps=["k0"] if i == 3 else ()), st)
    assert [r[0] for r in out] == ["F", "R"]          # one function, one run
    run = out[1]
    assert run[7] == [f"k{i}" for i in range(5)] and run[10] == [[3, ["k0"]]]
    intents = Intents().replay(out)
    assert intents.bad == 0 and intents.wants["w-a"] == {f"k{i}" for i in range(5)}
    assert intents.recipes["k3"] == [b"f", b"a-k3", ["k0"], [0, 1, 3], 0, None, None, False]
    assert intents.recipes["k4"] == [b"f", b"a-k4", [], [0, 1, 4], 0, None, None, False]


def test_a_run_ends_at_anything_else_another_holder_function_or_option_and_a_commit():
    st = SchedulerState()
    out = []
    rec = Recorder(out)
    rec.record("w-a", _claim("a1"), st)
    rec.record("w-a", _claim("a2"), st)
    rec.record("w-a", m.Release(keys=["a1"]), st)     # in between: the run must not go on
    rec.record("w-a", _claim("a1"), st)               # (a1 wanted again after its release)
    rec.record("w-b", _claim("b1"), st)               # another holder
    rec.record("w-b", _claim("b2", func=b"g"), st)    # another function
    rec.record("w-b", _claim("b3", func=b"g", retries=2), st)   # another option
    rec.record("c-x", m.Submit(key="s1", func=b"g", args=b"s", deps=[], priority=[0, 0, 1],
                               retries=2, workers=["w"], resources=None, loose=False), st)
    rec.record("c-x", m.Submit(key="s2", func=b"g", args=b"s", deps=[], priority=[0, 0, 2],
                               retries=2, workers=["w"], resources=None, loose=False), st)
    assert [(r[0], r[7] if r[0] == "R" else None) for r in out] == [
        ("F", None), ("R", ["a1", "a2"]), ("U", None), ("R", ["a1"]), ("R", ["b1"]),
        ("F", None), ("R", ["b2"]), ("R", ["b3"]), ("R", ["s1", "s2"])]
    intents = Intents().replay(out)
    assert intents.wants["w-a"] == {"a1", "a2"} and intents.recipes["s2"][5] == ["w"]
    written = list(out)
    out.clear()                                       # (what a commit does)
    rec.record("w-a", _claim("a3"), st)
    assert out[0][0] == "R" and out[0][7] == ["a3"] and written[3][7] == ["a1"]


def test_a_commit_lets_go_of_what_the_tick_recorded():
    """The run a tick extended is written and forgotten at the commit: the recorder
    keeps nothing of it alive (a million tasks' keys, args and priorities, otherwise,
    until the next submission)."""
    import gc
    import weakref

    class Args:      # (any object: a weak reference shows when the last one goes)
        pass

    st = SchedulerState()
    out = []
    rec = Recorder(out)
    args = Args()
    gone = weakref.ref(args)
    rec.submitted("c-x", "k1", b"f", args, [], [0, 0, 1], 0)
    rec.submitted("c-x", "k2", b"f", args, [], [0, 0, 2], 0)
    assert out[-1][0] == "R" and out[-1][8] == [args, args]
    rec.committing(st)
    out.clear()                                       # (what the commit does)
    del args
    gc.collect()
    assert gone() is None


def test_functions_survive_compaction_and_a_new_one_after_it_is_defined(tmp_path):
    st = SchedulerState()
    st.add_worker("w-a", "tcp://w-a:1", "w-a", 1, 1, 0, [], 0.0)
    j = Journal(str(tmp_path))
    j.lock("test")
    j.read()
    rec = Recorder(j.pending)

    def claim(msg):
        rec.record("w-a", msg, st)
        st.handle("w-a", msg)

    for i in range(3):
        claim(_claim(f"f{i}", func=b"f", seq=i))
    claim(_claim("g0", func=b"g"))
    j.commit()
    st.handle("w-a", m.Release(keys=["g0"]))          # (g's only task goes)
    rec.record("w-a", m.Release(keys=["g0"]), st)
    j.compact(rec.snapshot(st, 1))                    # functions numbered afresh: f only
    claim(_claim("f3", func=b"f", seq=3))             # f: defined by the snapshot
    claim(_claim("g1", func=b"g", seq=4))             # g: defined again, after it
    j.commit()
    j.close()
    journal = decode_all((tmp_path / "journal-00000001").read_bytes())[0]
    assert [r[0] for r in journal[0]] == ["R", "F", "R"]
    j = Journal(str(tmp_path))
    j.lock("test")
    intents = Intents().replay(j.read())
    j.close()
    assert intents.bad == 0
    assert {k: r[0] for k, r in intents.recipes.items()} == {
        "f0": b"f", "f1": b"f", "f2": b"f", "f3": b"f", "g1": b"g"}
    assert intents.wants["w-a"] == {"f0", "f1", "f2", "f3", "g1"}


def test_a_cut_at_every_byte_of_a_tick_that_defines_a_function_keeps_whole_ticks(tmp_path):
    """Tick 2 defines g and runs tasks of f and g; tick 3 uses both. Cut anywhere, replay
    keeps whole ticks and never meets a function it was not told of."""
    st = SchedulerState()
    ticks = [[_claim("a", func=b"f")],
             [_claim("b", func=b"f", seq=1), _claim("c", func=b"g", seq=2, deps=["a"])],
             [_claim("d", func=b"g", seq=3), _claim("e", func=b"f", seq=4)]]
    pending: list = []
    rec = Recorder(pending)
    data, bounds, wanted = b"", [0], [set()]
    for tick in ticks:
        for msg in tick:
            rec.record("w-a", msg, st)
        data += encode(pending)
        pending.clear()
        bounds.append(len(data))
        wanted.append(wanted[-1] | {msg.key for msg in tick})
    for cut in range(len(data) + 1):
        (tmp_path / "journal-00000000").write_bytes(data[:cut])
        j = Journal(str(tmp_path))
        j.lock("test")
        intents = Intents().replay(j.read())
        j.close()
        whole = max(i for i, b in enumerate(bounds) if b <= cut)
        assert intents.bad == 0 and set(intents.recipes) == wanted[whole], cut
        assert (tmp_path / "journal-00000000").stat().st_size == bounds[whole]
    assert intents.recipes["c"] == [b"g", b"a-c", ["a"], [0, 1, 2], 0, None, None, False]


def test_records_of_earlier_versions_still_replay():
    intents = Intents().replay([
        ["F", 0, b"f"],
        ["T", "x", 0, b"ax", [], [0, 0, 1], 0, None, None, False],
        ["S", "c-a", "y", 0, b"ay", ["x"], [0, 0, 2], 1, None, None, False]])
    assert intents.bad == 0 and intents.wants == {"c-a": {"y"}}
    assert intents.recipes["y"] == [b"f", b"ay", ["x"], [0, 0, 2], 1, None, None, False]
    assert intents.live() == {"x", "y"}


# -- recovery: the facts, from the workers' resumes (pure) ----------------------------------
def _recovering(log):
    """A restarted scheduler's state: the intents of ``log``, two workers back, nothing
    settled yet."""
    from tasknest.scheduler.recovery import Recovery
    st = SchedulerState()
    recovery = Recovery(st)
    rebuild(st, Intents().replay(log))
    recovery.pending = True
    for wid in ("w-a", "w-b"):
        st.add_worker(wid, f"tcp://{wid}:1", wid, 1, 1, 0, [], 0.0)
    return st, recovery


def test_an_input_resumed_in_memory_after_its_dependent_is_no_longer_waited_on():
    """Worker a runs y (on x); worker b, resuming after it, holds x: y waits on
    nothing any more, though recovery has not settled (the invariants hold meanwhile)."""
    _, _, log = _state_with_tasks()
    st, recovery = _recovering(log)
    st.handle("w-a", m.Resume(memory=[], nbytes=[], kinds=[], tasks=[["y", 7, b"f", b"a2", ["x"], [0, 0, 2], 1]], wants=[]))
    assert st.tasks["y"].state == "processing" and st.tasks["y"].waiting_on == {"x"}
    st.validate()
    st.handle("w-b", m.Resume(memory=["x"], nbytes=[8], kinds=["int"], tasks=[], wants=[]))
    assert not st.tasks["y"].waiting_on
    st.validate()
    recovery.settle()
    st.validate()
    assert st.tasks["x"].who_has == {"w-b"} and st.tasks["y"].processing_on == "w-a"


def test_a_resumed_task_whose_inputs_another_worker_brings_is_kept():
    """Tasks claimed while the old scheduler was dying: the journal never heard of
    them. Worker a runs q on p; p is queued on worker b, whose resume comes after."""
    st, recovery = _recovering([])
    q = ["q", 0, b"f", b"aq", ["p"], [0, 0, 2], 0]
    p = ["p", 0, b"f", b"ap", [], [0, 0, 1], 0]
    out = st.handle("w-a", m.Resume(memory=[], nbytes=[], kinds=[], tasks=[q], wants=["q"]))
    assert "q" not in st.tasks and not out    # not given up: kept aside
    out = st.handle("w-b", m.Resume(memory=[], nbytes=[], kinds=[], tasks=[p], wants=["p"]))
    st.validate()
    assert st.tasks["q"].processing_on == "w-a" and st.tasks["p"].processing_on == "w-b"
    # the claims, which the old scheduler may never have confirmed, are now
    assert ("w-a", m.ClaimAccepted(keys=["q"])) in out and ("w-b", m.ClaimAccepted(keys=["p"])) in out
    out = recovery.settle()
    st.validate()
    assert not any(msg.op == "key-erred" for _, msg in out)


def test_a_key_wanted_before_the_worker_holding_it_resumed_is_not_claimed_anew():
    """A task on worker a placed its child c straight on worker b, which ran it; the
    old scheduler never heard of c. Worker a resumes first, wanting c: it must not be
    told c is unknown (its future would claim c anew and run it twice), and worker b's
    result must not be dropped as nobody's. Both wait for the settling."""
    st, recovery = _recovering([])
    out = st.handle("w-a", m.Resume(memory=[], nbytes=[], kinds=[], tasks=[], wants=["c"]))
    assert not any(msg.op == "unknown" for _, msg in out)
    out = st.handle("w-b", m.Resume(memory=["c"], nbytes=[8], kinds=["int"], tasks=[], wants=[]))
    assert not any(msg.op == "free" for _, msg in out), out
    st.validate()
    out = recovery.settle()
    st.validate()
    assert not any(msg.op in ("unknown", "free") for _, msg in out), out
    assert st.tasks["c"].who_has == {"w-b"} and "w-a" in st.tasks["c"].who_wants
    assert ("w-a", "key-memory") in [(t, msg.op) for t, msg in out]
    assert not recovery.release_orphans()      # wanted: kept


def test_a_result_nobody_wants_after_the_settling_is_dropped():
    """A result resumed that no worker and no client (their ``holding`` comes after
    the settling) wants is dropped then, and a key nobody brought is unknown."""
    st, recovery = _recovering([])
    st.handle("w-a", m.Resume(memory=[], nbytes=[], kinds=[], tasks=[], wants=["gone"]))
    st.handle("w-b", m.Resume(memory=["stray"], nbytes=[8], kinds=["int"], tasks=[], wants=[]))
    out = recovery.settle()
    assert ("w-a", m.Unknown(key="gone")) in out
    assert "stray" in st.tasks                  # a client's holding may still want it
    out = recovery.release_orphans()
    st.validate()
    assert ("w-b", m.Free(keys=["stray"])) in out and "stray" not in st.tasks


def test_a_placed_task_the_journal_never_knew_waits_for_its_client_to_come_back():
    """A client placed task p straight on worker a; the old scheduler never heard of
    it. Worker a resumes with p queued, recovery settles, p finishes: its result is kept
    for the client (which the journal knew) until the client says it holds p, even if it
    comes back last; it is not dropped and computed again when the client resubmits."""
    st, recovery = _recovering([])
    recovery.clients_due = {"c-1"}
    st.handle("w-a", m.Resume(memory=[], nbytes=[], kinds=[], tasks=[["p", 0, b"f", b"ap", [], [0, 0, 1], 0]], wants=[]))
    st.handle("w-b", m.Resume(memory=[], nbytes=[], kinds=[], tasks=[], wants=[]))
    recovery.settle()
    out = st.handle("w-a", m.TaskFinished(key="p", nbytes=8, type="int", value=None, inner=[], notified=[], attempt=0))
    st.validate()
    assert not any(msg.op == "free" for _, msg in out), out
    assert st.tasks["p"].state == "memory"
    out = st.handle("c-1", m.Holding(keys=["p"]))
    st.validate()
    assert ("c-1", "key-memory") in [(t, msg.op) for t, msg in out]
    assert st.tasks["p"].who_wants == {"c-1"} and not recovery.orphans


def test_a_resumed_task_whose_inputs_nobody_brings_errs_at_the_settling():
    st, recovery = _recovering([])
    st.handle("w-a", m.Resume(memory=[], nbytes=[], kinds=[], tasks=[["q", 0, b"f", b"aq", ["p"], [0, 0, 2], 0]], wants=["q"]))
    out = recovery.settle()
    st.validate()
    assert ("w-a", m.ClaimRejected(key="q")) in out
    erred = [msg for t, msg in out if t == "w-a" and msg.op == "key-erred"]
    assert len(erred) == 1 and "['p'] of q were lost with the scheduler" in str(erred[0])


def test_what_a_resume_taught_survives_the_next_restart():
    """Worker a claimed p and q (on p) while the old scheduler was dying: only a's
    resume names them. That scheduler steals p for worker b and is killed before b
    hears of it; a let p go. The next scheduler knows p and q from the journal: q is
    taken up, p computed again, and nothing errs as lost with the scheduler."""
    from tasknest.scheduler.intents import Recorder
    p = ["p", 0, b"f", b"ap", [], [0, 0, 1], 0]
    q = ["q", 0, b"f", b"aq", ["p"], [0, 0, 2], 0]
    log: list = []
    st, recovery = _recovering([])
    resume = m.Resume(memory=["x"], nbytes=[8], kinds=["int"], tasks=[q, p], wants=["q", "p", "x"])
    Recorder(log).record("w-a", resume, st)
    st.handle("w-a", resume)
    assert st.tasks["p"].processing_on == "w-a" and st.tasks["q"].processing_on == "w-a"
    st, recovery = _recovering(log)               # killed: the next one
    assert {"p", "q", "x"} <= set(st.tasks)
    st.handle("w-a", m.Resume(memory=["x"], nbytes=[8], kinds=["int"], tasks=[q], wants=["q", "p", "x"]))
    st.handle("w-b", m.Resume(memory=[], nbytes=[], kinds=[], tasks=[], wants=[]))
    out = recovery.settle()
    st.validate()
    assert not any(msg.op == "key-erred" for _, msg in out), out
    assert st.tasks["q"].processing_on == "w-a" and st.tasks["p"].state == "processing"


@pytest.mark.parametrize("entry", [["q", 0, "not bytes", b"a", [], [0, 0, 1], 0],
                                   ["q", 0, b"f", b"a", [], [0, 0, 1]], "not a list",
                                   ["q", 0, b"f", b"a", [7], [0, 0, 1], 0]])
def test_a_malformed_resume_is_refused_and_not_journaled(entry):
    """Refused as it is decoded: neither the journal's recorder nor recovery sees it."""
    from tasknest.errors import ProtocolError
    raw = m.Resume(memory=[], nbytes=[], kinds=[], tasks=[entry], wants=[]).encode()
    with pytest.raises(ProtocolError, match="resume: a task entry is malformed"):
        m.decode(raw)
    good = m.Resume(memory=[], nbytes=[], kinds=[], tasks=[["q", 0, b"f", b"a", ["p"], [0, 0, 1], 0]], wants=[])
    assert m.decode(good.encode()) == good


def test_no_compaction_while_recovering(tmp_path):
    """A snapshot taken before every worker is back would drop the intents not yet
    confirmed (here: the task the journal knows, wanted by a client not back yet)."""
    import asyncio

    from tasknest.scheduler.server import Scheduler

    j = Journal(str(tmp_path))
    j.lock("test")
    j.read()
    for r in [["E", 1], ["F", 0, b"f"], ["T", "x", 0, b"a", [], [0, 0, 1], 0, None, None,
                                          False],
              ["W", "c-a", ["x"]], ["J", "w-1", "tcp://127.0.0.1:9"]]:
        j.append(r)
    j.commit()
    j.close()

    async def main():
        sched = await Scheduler(state_dir=str(tmp_path), recovery_wait=60,
                                validate=True).start()
        persist = sched.persist
        try:
            assert persist.held is not None         # waiting for w-1
            persist.journal.wants_compaction = lambda *a, **k: True
            persist.compact()
            assert persist.journal.generation == 0, "compacted while recovering"
            persist.settle()
            persist.compact()
            assert persist.journal.generation == 1
        finally:
            await sched.close()

    asyncio.run(main())
    j = Journal(str(tmp_path))
    j.lock("test")
    intents = Intents().replay(j.read())
    j.close()
    assert intents.live() == {"x"} and intents.wants["c-a"] == {"x"}


def test_a_tick_is_one_record_kept_or_cut_whole_and_single_records_still_read(tmp_path):
    j = Journal(str(tmp_path))
    j.lock("test")
    assert j.read() == []
    for r in (["W", "c-a", ["x"]], ["W", "c-a", ["y"]], ["U", "c-a", ["x"]]):
        j.append(r)
    j.commit()                                   # one tick: one record
    first = j.written
    j.append(["W", "c-b", ["z"]])
    j.append(["G", "c-a"])
    j.commit()
    j.close()
    path = tmp_path / "journal-00000000"
    data = path.read_bytes()
    assert len(decode_all(data)[0]) == 2
    path.write_bytes(encode(["E", 4]) + data[:first] + data[first:-3])   # a torn 2nd tick
    j = Journal(str(tmp_path))
    j.lock("test")
    assert j.read() == [["E", 4], ["W", "c-a", ["x"]], ["W", "c-a", ["y"]],
                        ["U", "c-a", ["x"]]]
    j.close()


def test_recovery_ends_when_the_last_worker_has_resumed_not_when_it_registered(tmp_path):
    """Its resume (what it holds and runs) may come in a later read than its
    registration: settling in between would run again what it holds."""
    import asyncio
    import time

    from tasknest.protocol.comm import connect
    from tasknest.scheduler.server import Scheduler
    from tasknest.version import __version__

    address = "tcp://127.0.0.1:9"
    j = Journal(str(tmp_path))
    j.lock("test")
    j.read()
    j.append(["J", "w-old", address])
    j.commit()
    j.close()

    async def until(predicate, what):
        deadline = time.monotonic() + 10
        while not predicate():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.005)

    async def main():
        sched = await Scheduler(token="secret", state_dir=str(tmp_path), recovery_wait=60,
                                validate=True).start()
        comm = await connect(sched.address, "secret")
        try:
            comm.start(lambda msg: None)
            comm.send(m.RegisterWorker(name="w", address=address, nthreads=1, pid=1, memory_limit=0, keys=[], version=__version__, resources={}))
            await until(lambda: sched.state.workers, "the worker registered")
            await asyncio.sleep(0)         # (a settling scheduled at registration runs)
            assert sched.persist.held is not None, "settled before the worker's resume"
            comm.send(m.Resume(memory=[], nbytes=[], kinds=[], tasks=[], wants=[]))
            await until(lambda: sched.persist.held is None, "recovery settled")
        finally:
            comm.close("done")
            await sched.close()

    asyncio.run(main())
