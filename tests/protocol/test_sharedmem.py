"""Segments and mappings used again: a released file takes the next value of its size,
and a process's mapping of it shows that value with its page tables warm, but never
while anything, in any process, still uses the old value (protocol/sharedmem.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Iterator

import pytest

from tasknest.protocol import sharedmem

MiB = 1 << 20

if not sharedmem.available():
    pytest.skip("this machine has no writable /dev/shm", allow_module_level=True)


@pytest.fixture(autouse=True)
def _clean(monkeypatch: Any) -> Iterator[None]:
    yield
    monkeypatch.setattr(sharedmem, "IDLE", 0.0)
    sharedmem.sweep()
    sharedmem.drop_released()
    for name in sharedmem.segments(os.getpid()):
        sharedmem.unlink(name)


def value(fill: int, size: int = 4 * MiB) -> list:
    return [b"header", memoryview(bytearray([fill]) * size)]


def inode(name: str) -> int:
    return os.stat(os.path.join(sharedmem.SHM_DIR, name)).st_ino


def contents(frames: list) -> set[int]:
    return set(bytes(frames[1]))


def mapping_of(name: str) -> Any:
    st = os.stat(os.path.join(sharedmem.SHM_DIR, name))
    return sharedmem._mappings.get((st.st_dev, st.st_ino))


@pytest.mark.timeout(60)
def test_a_released_file_takes_the_next_value_of_its_size_and_its_mapping_serves_again() -> None:
    ref1, name1, local1 = sharedmem.export(value(1))
    read1 = sharedmem.attach(ref1)
    assert contents(read1) == {1} and contents(local1) == {1}
    first = inode(name1)
    mapping = mapping_of(name1)
    del local1, read1
    sharedmem.release(name1)
    ref2, name2, local2 = sharedmem.export(value(2))
    assert inode(name2) == first, "the released file was not written again"
    assert name2 != name1 and name1 not in sharedmem.segments(os.getpid())
    read2 = sharedmem.attach(ref2)
    assert contents(read2) == {2} and contents(local2) == {2}
    assert mapping_of(name2) is mapping, "the mapping was made anew, not used again"
    with pytest.raises(FileNotFoundError):          # the old name is gone for good
        sharedmem.attach(ref1)


@pytest.mark.timeout(60)
def test_a_value_still_in_use_keeps_its_file() -> None:
    ref1, name1, local1 = sharedmem.export(value(1))
    read1 = sharedmem.attach(ref1)
    del local1
    sharedmem.release(name1)                 # released by its owner, still read here
    ref2, name2, local2 = sharedmem.export(value(2))
    assert inode(name2) != inode(name1)
    assert contents(read1) == {1} and contents(local2) == {2}


@pytest.mark.timeout(60)
def test_a_reader_in_another_process_keeps_the_file_until_it_lets_go() -> None:
    ref1, name1, local1 = sharedmem.export(value(1))
    reader = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom tasknest.protocol import sharedmem\n"
         f"frames = sharedmem.attach([b'header', sharedmem.MARK, {bytes(ref1[2])!r}, "
         f"{bytes(ref1[3])!r}])\nprint(set(bytes(frames[1])), flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert reader.stdout is not None and reader.stdin is not None
        assert reader.stdout.readline().strip() == "{1}"       # mapped, and in use there
        first = inode(name1)
        del local1
        sharedmem.release(name1)
        ref2, name2, local2 = sharedmem.export(value(2))
        assert inode(name2) != first, "a file another process still reads was rewritten"
        reader.stdin.close()
        assert reader.wait(timeout=30) == 0                     # its lock goes with it
        ref3, name3, local3 = sharedmem.export(value(3))
        assert inode(name3) == first, "the file nobody reads any more was not used again"
        assert contents(local3) == {3} and contents(local2) == {2}
    finally:
        reader.kill()
        reader.wait()


@pytest.mark.timeout(60)
def test_a_mapping_a_task_wrote_into_is_never_used_again() -> None:
    ref1, name1, local1 = sharedmem.export(value(1))
    read1 = sharedmem.attach(ref1)
    read1[1][12345] = 99                     # copy-on-write: this process's page now
    assert contents(sharedmem.attach(ref1)) == {1, 99}   # (one mapping in this process)
    first = inode(name1)
    del local1, read1
    sharedmem.release(name1)
    sharedmem.sweep()
    ref2, name2, local2 = sharedmem.export(value(2))
    assert inode(name2) == first             # the file is used again...
    assert contents(local2) == {2}           # ...through a new mapping: no stale page
    assert contents(sharedmem.attach(ref2)) == {2}


@pytest.mark.timeout(60)
def test_released_files_go_when_kept_too_long_or_beyond_the_pool(monkeypatch: Any) -> None:
    ref1, name1, local1 = sharedmem.export(value(1))
    del local1
    sharedmem.release(name1)
    assert name1 in sharedmem.segments(os.getpid())        # kept a while, for reuse
    monkeypatch.setattr(sharedmem, "IDLE", 0.0)
    sharedmem.sweep()
    assert name1 not in sharedmem.segments(os.getpid())
    monkeypatch.setattr(sharedmem, "IDLE", 60.0)
    monkeypatch.setattr(sharedmem, "POOL", 2 * MiB)          # smaller than the file
    ref2, name2, local2 = sharedmem.export(value(2))
    del local2
    sharedmem.release(name2)
    assert name2 not in sharedmem.segments(os.getpid())
