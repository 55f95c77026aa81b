"""Values shared through memory between processes of one host.

    owner:  value ──pickle 5──> [header, buffers] ──copy once──> /dev/shm/tasknest-<pid>-<n>
            (and keeps the value backed by that file from then on)
    reader: frames [header, SHM, name, layout] ──mmap (copy-on-write)──> value over the pages

A value's pickle-5 buffers are written once into a file under /dev/shm; any process
of the host maps it instead of receiving the bytes. Readers map it copy-on-write
(``MAP_PRIVATE``): a task that writes into its argument changes its own pages
only, as with a copy. The owner unlinks the file when the key is released; the
pages live on while some process still maps them. Files are named after the
owner's pid, so whoever supervises it removes them after a SIGKILL
(``remove_segments``).

"Same host" is decided by ``host_id()``: the kernel's boot id and the identity of
the /dev/shm file system, so two processes match only if they see the same
shared-memory mount, whatever addresses they use; a reader that still cannot
open a segment reports the key missing, and it is fetched again over TCP.
"""
from __future__ import annotations

import glob
import itertools
import mmap
import os
import secrets
import struct
from typing import Any

SHM_DIR = "/dev/shm"
SHM_MIN = 1 << 20            # values with fewer bytes of buffers travel over TCP
_CHUNK = 16 << 20            # bytes copied into a segment at a time
MARK = b"\x00tasknest-shm"   # frames[1] of a shared value
_PREFIX = "tasknest-"
_counter = itertools.count()
_host: str | None = None


def available() -> bool:
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK | os.X_OK)


def host_id() -> str:
    """Equal in two processes only if they see the same shared memory."""
    global _host
    if _host is None:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                boot = f.read().strip()
            st = os.stat(SHM_DIR)
            _host = f"{boot}:{st.st_dev}:{st.st_ino}"
        except OSError:
            _host = ""
    return _host


def is_shared(frames: Any) -> bool:
    return type(frames) is list and len(frames) == 4 and frames[1] == MARK


def shared_nbytes(frames: list) -> int:
    return len(frames[0]) + sum(struct.unpack_from("<Q", frames[3], 16 * i + 8)[0]
                                for i in range(len(frames[3]) // 16))


def buffers_size(frames: list) -> int:
    return sum(f.nbytes if isinstance(f, memoryview) else len(f) for f in frames[1:])


def _path(name: str) -> str:
    if not name.startswith(_PREFIX) or "/" in name:
        raise ValueError(f"not a tasknest segment: {name!r}")
    return os.path.join(SHM_DIR, name)


def export(frames: list) -> tuple[list, str, list]:
    """Copy a value's buffers into a new segment: (reference frames to send, its name,
    the value's frames over this process's own copy-on-write mapping of it)."""
    name = f"{_PREFIX}{os.getpid()}-{next(_counter)}-{secrets.token_hex(4)}"
    path = _path(name)
    bufs = [memoryview(b).cast("B") if not isinstance(b, memoryview) or b.format != "B"
            or b.ndim != 1 else b for b in frames[1:]]
    layout, offset = [], 0
    for b in bufs:
        layout.append((offset, b.nbytes | (1 << 63 if b.readonly else 0)))
        offset += (b.nbytes + 63) & ~63          # aligned, as numpy likes
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        # Written, not copied into a mapping: each page faulted in through a mapping
        # cost about as much as the copy itself (512 MiB in 0.54 s against 0.31 s), and
        # a full /dev/shm is an OSError here, where it would be a SIGBUS in a mapping.
        # (pwrite lets go of the GIL: the worker's loop is not held up meanwhile.)
        for (start, _), b in zip(layout, bufs):
            done = 0
            while done < b.nbytes:
                done += os.pwrite(fd, b[done:done + _CHUNK], start + done)
        os.ftruncate(fd, max(offset, 1))        # (the padding after the last buffer)
        local = _map(fd, offset, layout)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)
    ref = [frames[0], MARK, name.encode(),
           b"".join(struct.pack("<QQ", start, size) for start, size in layout)]
    return ref, name, [frames[0], *local]


def attach(ref: list) -> list:
    """The value's frames over a copy-on-write mapping of the segment a reference names
    (OSError if it is gone or cannot be opened here)."""
    name = bytes(ref[2]).decode()
    raw = bytes(ref[3])
    layout = [struct.unpack_from("<QQ", raw, 16 * i) for i in range(len(raw) // 16)]
    fd = os.open(_path(name), os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        end = max((start + (s & ~(1 << 63)) for start, s in layout), default=0)
        if end > size:
            raise OSError(f"segment {name} holds {size} bytes, {end} announced")
        return [ref[0], *_map(fd, size, layout)]
    finally:
        os.close(fd)


def _map(fd: int, size: int, layout: list) -> list:
    if not size:
        return [b"" for _ in layout]
    mem = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    view = memoryview(mem)
    out: list[Any] = []
    for start, s in layout:
        n = s & ~(1 << 63)
        part = view[start:start + n]
        out.append(part.toreadonly() if s >> 63 else part)
    return out


def unlink(name: str) -> None:
    try:
        os.unlink(_path(name))
    except FileNotFoundError:
        pass


def remove_segments(pid: int) -> int:
    """Remove what a process (dead, or about to be) left in /dev/shm; how many."""
    n = 0
    for path in glob.glob(os.path.join(SHM_DIR, f"{_PREFIX}{pid}-*")):
        try:
            os.unlink(path)
            n += 1
        except OSError:
            pass
    return n


def segments(pid: int | None = None) -> list[str]:
    """Names of the segments a process (or any tasknest process) has in /dev/shm."""
    pattern = f"{_PREFIX}{pid}-*" if pid is not None else f"{_PREFIX}*"
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(SHM_DIR, pattern)))
