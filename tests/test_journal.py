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
    rec = Recorder(rec_log.append)
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
