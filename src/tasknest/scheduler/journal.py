"""The scheduler's journal: an append-only file of checksummed records in a state dir.

    DIR/lock          held (flock) by the one scheduler serving DIR; says who it is
    DIR/snapshot-G    everything live at generation G (written whole, then renamed)
    DIR/journal-G     records appended since snapshot-G

A record is ``[length u32][crc32 u32][msgpack payload]``. The intents of one loop
tick are kept as they are and written as one record, the list of them, with one
``write`` (group commit): one encoding and one checksum per tick, not per intent,
and a tick's intents are kept or cut together. The shell commits before any frame
leaves the process, so nothing a peer hears of is missing from the file. A write survives the process's death (SIGKILL) once it returned: it is
in the kernel's page cache. ``fsync=True`` also survives the machine's.

Reading stops at the first record that is cut short or fails its checksum: the
tail a kill tore (or any garbage after it) is cut off, and what came before is
kept. Compaction writes a new snapshot of what is live and starts a new
generation, so replay time is bounded by the live state, not by the history.
"""
from __future__ import annotations

import fcntl
import os
import struct
import zlib
from typing import Any, Iterable

import msgpack

_HEAD = struct.Struct("<II")
MAX_RECORD = 1 << 30


class StateDirInUse(RuntimeError):
    """Another scheduler holds the state dir."""


# -- records (pure) ---------------------------------------------------------------------
def encode(record: Any) -> bytes:
    payload = msgpack.packb(record, use_bin_type=True)
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def flatten(records: list) -> list:
    """The intents of records read back: a batch (a list of intents) gives each."""
    out: list = []
    for rec in records:
        if rec and type(rec[0]) is list:
            out.extend(rec)
        else:
            out.append(rec)
    return out


def decode_all(data: bytes | memoryview) -> tuple[list, int]:
    """The records of ``data`` up to the first torn or corrupt one, and the length of
    the good prefix (where a writer should go on)."""
    out: list = []
    pos, end = 0, len(data)
    view = memoryview(data)
    while pos + _HEAD.size <= end:
        n, crc = _HEAD.unpack_from(view, pos)
        start = pos + _HEAD.size
        if n > MAX_RECORD or start + n > end:
            break
        payload = view[start:start + n]
        if zlib.crc32(payload) != crc:
            break
        try:
            out.append(msgpack.unpackb(payload, raw=False, use_list=True))
        except Exception:
            break
        pos = start + n
    return out, pos


# -- the files --------------------------------------------------------------------------
class Journal:
    """The records on disk: read once at start, appended to, compacted."""

    def __init__(self, path: str, fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        self.generation = 0
        self.pending: list = []    # the intents of this tick, written as one record
        self.written = 0           # bytes in the current journal file
        self.snapshot_size = 0     # bytes of the snapshot it starts from
        self.commits = 0
        self._fd = -1
        self._lock_fd = -1

    # -- opening -------------------------------------------------------------------------
    def lock(self, who: str) -> None:
        """Take the state dir, or refuse with who holds it."""
        os.makedirs(self.path, exist_ok=True)
        fd = os.open(os.path.join(self.path, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StateDirInUse(f"the state dir {self.path} is in use by {holder}: one "
                                "scheduler serves a state dir at a time") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, who.encode() + b"\n", 0)
        self._lock_fd = fd

    def set_holder(self, who: str) -> None:
        if self._lock_fd >= 0:
            os.ftruncate(self._lock_fd, 0)
            os.pwrite(self._lock_fd, who.encode() + b"\n", 0)

    def read(self) -> list:
        """Every record kept (snapshot, then journal), cutting a torn tail; then open
        the journal for appending."""
        gens = sorted(int(n.split("-")[1]) for n in os.listdir(self.path)
                      if n.startswith("snapshot-") and n.split("-")[1].isdigit())
        records: list = []
        self.generation = gens[-1] if gens else 0
        if gens:
            with open(self._snapshot(self.generation), "rb") as f:
                data = f.read()
            records, good = decode_all(data)
            records = flatten(records)
            self.snapshot_size = good
        jpath = self._journal(self.generation)
        if os.path.exists(jpath):
            with open(jpath, "rb") as f:
                data = f.read()
            more, good = decode_all(data)
            records += flatten(more)
            if good < len(data):       # a torn tail (or garbage): cut it off
                with open(jpath, "r+b") as f:
                    f.truncate(good)
            self.written = good
        self._fd = os.open(jpath, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._remove_older()
        return records

    # -- appending ---------------------------------------------------------------------------
    def append(self, record: Any) -> None:
        self.pending.append(record)

    def commit(self) -> None:
        """Write what was appended since the last commit: one record, one system call."""
        if not self.pending:
            return
        payload = msgpack.packb(self.pending, use_bin_type=True)
        self.pending.clear()       # (the same list: the scheduler appends to it directly)
        head = _HEAD.pack(len(payload), zlib.crc32(payload))
        size = len(head) + len(payload)
        n = os.writev(self._fd, (head, payload))    # (not joined first: no copy of it)
        if n < size:               # a short write (rare): the rest, from where it stopped
            view = memoryview(head + payload)[n:]
            while view:
                view = view[os.write(self._fd, view):]
        if self.fsync:
            os.fsync(self._fd)
        self.written += size
        self.commits += 1

    def wants_compaction(self, min_bytes: int = 8 << 20) -> bool:
        return self.written > max(min_bytes, 2 * self.snapshot_size)

    def compact(self, records: Iterable[Any]) -> None:
        """Replace everything with ``records`` (what is live now) as a new generation."""
        self.commit()
        gen = self.generation + 1
        tmp = self._snapshot(gen) + ".tmp"
        size = 0
        with open(tmp, "wb") as f:
            chunk: list = []
            for rec in records:
                chunk.append(rec)
                if len(chunk) >= 4096:
                    data = encode(chunk)
                    f.write(data)
                    size += len(data)
                    chunk = []
            if chunk:
                data = encode(chunk)
                f.write(data)
                size += len(data)
            if self.fsync:       # (without, the rename is atomic for a process's death)
                f.flush()
                os.fsync(f.fileno())
        os.rename(tmp, self._snapshot(gen))      # from here on, gen is the state
        if self.fsync:
            _fsync_dir(self.path)
        os.close(self._fd)
        self.generation = gen
        self.snapshot_size = size
        self.written = 0
        self._fd = os.open(self._journal(gen), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._remove_older()

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.commit()
            finally:
                os.close(self._fd)
                self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)     # (the lock goes with it, as with a kill)
            self._lock_fd = -1

    # -- names -----------------------------------------------------------------------------------
    def _snapshot(self, gen: int) -> str:
        return os.path.join(self.path, f"snapshot-{gen:08d}")

    def _journal(self, gen: int) -> str:
        return os.path.join(self.path, f"journal-{gen:08d}")

    def _remove_older(self) -> None:
        for name in os.listdir(self.path):
            head, _, num = name.partition("-")
            if head in ("snapshot", "journal") and num.isdigit() and int(num) < self.generation \
                    or name.endswith(".tmp"):
                try:
                    os.remove(os.path.join(self.path, name))
                except FileNotFoundError:
                    pass


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

