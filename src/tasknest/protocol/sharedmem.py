"""Values shared through memory between processes of one host.

    owner:  value ──pickle 5──> [header, buffers] ──pwrite──> /dev/shm/tasknest-<pid>-<n>-<tag>
            (and keeps the value over its own mapping of that file from then on)
    reader: frames [header, SHM, name, layout] ──mmap (copy-on-write)──> value over the pages

A value's pickle-5 buffers are written once into a file under /dev/shm; any process
of the host maps it instead of receiving the bytes. Readers map it copy-on-write
(``MAP_PRIVATE``): a task that writes into its argument changes its own pages
only, as with a copy. Files are named after the owner's pid, so whoever
supervises it removes them after a SIGKILL (``remove_segments``).

Files and mappings are used again. The first touch of each page of a new mapping
costs the kernel a page-table entry, ~80 ms per GiB on a virtual machine, more
than all else a same-host read does (Ray's readers keep one store mapped for the
same reason). So:

* a process keeps its mapping of a file once nothing uses it any more, for
  ``IDLE`` seconds (``_mappings``, found by the file's inode);
* an owner keeps a released file for as long (``release``), up to ``POOL``
  bytes, and writes its next value that fits into it, under a new name: its
  readers' mappings of the file show the new value with their page tables warm.

It is safe because a process holds a shared ``flock`` on a file for as long as
anything uses its mapping of it (its views: the mapping's reference count, read
by ``sweep``), and an owner takes a file back only with an exclusive lock it gets
without waiting, renaming it before it writes. A reader holding an old name finds
no file, or the name gone once it holds its lock, and fetches the value over TCP.
The kernel drops a dead process's locks. A mapping a task wrote into (pages of
its own, seen in /proc/self/pagemap as it goes unused) is never used again.

"Same host" is decided by ``host_id()``: the kernel's boot id and the identity of
the /dev/shm file system, so two processes match only if they see the same
shared-memory mount, whatever addresses they use; a reader that still cannot
open a segment reports the key missing, and it is fetched again over TCP.
"""
from __future__ import annotations

import asyncio
import ctypes
import fcntl
import glob
import itertools
import mmap
import os
import resource
import secrets
import struct
import sys
import threading
import time
from typing import Any

SHM_DIR = "/dev/shm"
SHM_MIN = 1 << 20            # values with fewer bytes of buffers travel over TCP
_CHUNK = 16 << 20            # bytes copied into a segment at a time
MARK = b"\x00tasknest-shm"   # frames[1] of a shared value
IDLE = 5.0                   # seconds an unused mapping, or a released file, is kept
POOL = 2 << 30               # bytes of released files an owner keeps (and of unused
                             # mappings a process keeps) at most
SWEEP_EVERY = 1.0            # seconds between looks at mappings gone unused
_PREFIX = "tasknest-"
_PAGE = mmap.PAGESIZE
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


def _new_name() -> str:
    return f"{_PREFIX}{os.getpid()}-{next(_counter)}-{secrets.token_hex(4)}"


# == the owner ==========================================================================
def export(frames: list) -> tuple[list, str, list]:
    """Copy a value's buffers into a segment: (reference frames to send, its name,
    the value's frames over this process's own copy-on-write mapping of it)."""
    name = _new_name()
    path = _path(name)
    bufs = [memoryview(b).cast("B") if not isinstance(b, memoryview) or b.format != "B"
            or b.ndim != 1 else b for b in frames[1:]]
    layout, offset = [], 0
    for b in bufs:
        layout.append((offset, b.nbytes | (1 << 63 if b.readonly else 0)))
        offset += (b.nbytes + 63) & ~63          # aligned, as numpy likes
    sweep()               # (this process's own unused mappings let go of their files)
    fd = _reuse(offset, name)
    fresh = fd < 0
    if fresh:
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
        if fresh:
            os.ftruncate(fd, max(offset, 1))    # (the padding after the last buffer)
        fcntl.flock(fd, fcntl.LOCK_SH)          # (from exclusive, if it was taken back)
        local, kept = _use(fd, layout)
        if kept:
            fd = -1
    except BaseException:
        os.unlink(path)
        raise
    finally:
        if fd >= 0:
            os.close(fd)
    _arm()
    ref = [frames[0], MARK, name.encode(),
           b"".join(struct.pack("<QQ", start, size) for start, size in layout)]
    return ref, name, [frames[0], *local]


_released: dict[str, tuple[int, float]] = {}   # name -> (bytes, since): files to take back


def release(name: str) -> None:
    """The owner is done with a segment: keep its file a while, to write the next value
    of its size into (``sweep`` unlinks it when unused for long, or over ``POOL``)."""
    try:
        size = os.stat(_path(name)).st_size
    except OSError:
        return
    with _lock:
        now = time.monotonic()
        _released[name] = (size, now)
        _trim(now)
    _arm()


def _reuse(size: int, name: str) -> int:
    """A released file of ``size`` to ``2 * size`` bytes, renamed ``name`` and locked
    for writing; -1 if none is free (some process still uses every one)."""
    with _lock:
        fits = sorted((n, old) for old, (n, _) in _released.items() if size <= n <= 2 * size)
    for _, old in fits:
        try:
            fd = os.open(_path(old), os.O_RDWR)
        except OSError:
            with _lock:
                _released.pop(old, None)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with _lock:
                ours = _released.pop(old, None) is not None
            if ours:
                os.rename(_path(old), _path(name))
                return fd
        except OSError:
            pass                     # still mapped somewhere, in use: not now
        os.close(fd)
    return -1


def unlink(name: str) -> None:
    with _lock:
        _released.pop(name, None)
    try:
        os.unlink(_path(name))
    except FileNotFoundError:
        pass


def drop_released() -> None:
    """Unlink every file kept for reuse (the owner closes)."""
    with _lock:
        names = list(_released)
        _released.clear()
    for name in names:
        unlink(name)


# == readers (and the owner's own value) =================================================
def attach(ref: list) -> list:
    """The value's frames over a copy-on-write mapping of the segment a reference names
    (OSError if it is gone, being rewritten, or cannot be opened here)."""
    name = bytes(ref[2]).decode()
    raw = bytes(ref[3])
    layout = [struct.unpack_from("<QQ", raw, 16 * i) for i in range(len(raw) // 16)]
    path = _path(name)
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileNotFoundError(f"segment {name} is being rewritten") from None
        st = os.fstat(fd)
        if os.stat(path).st_ino != st.st_ino:    # (renamed and made again meanwhile)
            raise FileNotFoundError(f"segment {name} holds another value now")
        end = max((start + (s & ~(1 << 63)) for start, s in layout), default=0)
        if end > st.st_size:
            raise OSError(f"segment {name} holds {st.st_size} bytes, {end} announced")
        parts, kept = _use(fd, layout)
        if kept:
            fd = -1
    finally:
        if fd >= 0:
            os.close(fd)
    _arm()
    return [ref[0], *parts]


def mapped(frames: Any) -> Any:
    """A value's frames as they are, or over a mapping if they are a reference (None if
    it cannot be mapped here: the value is fetched then)."""
    if not is_shared(frames):
        return frames
    try:
        return attach(frames)
    except (OSError, ValueError):
        return None


_descriptors_raised = False


def _raise_descriptor_limit() -> None:
    """A mapping in use holds two descriptors (its lock's, and the one mmap keeps), and a
    client may hold many results: the soft limit goes up to the hard one (1024 is common)."""
    global _descriptors_raised
    _descriptors_raised = True
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(hard, 1 << 20) if hard != resource.RLIM_INFINITY else 1 << 20
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (OSError, ValueError):
        pass                  # (as it was: mapping fails first, and values go over TCP)


class _Mapping:
    """This process's mapping of one segment file, kept while the file is."""
    __slots__ = ("mem", "size", "addr", "lock_fd", "unused_since", "writable")

    def __init__(self, fd: int, size: int) -> None:
        if not _descriptors_raised:
            _raise_descriptor_limit()
        # mapped through a descriptor of its own: the mmap object keeps a duplicate of
        # the one it is given, which would hold that one's lock as long as it lives
        own = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
        try:
            self.mem = mmap.mmap(own, size, flags=mmap.MAP_PRIVATE,
                                 prot=mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(own)
        self.size = size
        probe = ctypes.c_char.from_buffer(self.mem)
        self.addr = ctypes.addressof(probe)
        del probe
        self.lock_fd = -1            # holds the shared lock while the mapping is used
        self.unused_since = 0.0
        self.writable = False        # writable views were handed out: check for writes


_lock = threading.Lock()
_mappings: dict[tuple[int, int, int], _Mapping] = {}   # (device, inode, size) -> mapping


def _use(fd: int, layout: list) -> tuple[list, bool]:
    """Views of the value in ``layout`` over this process's mapping of the file ``fd``
    (share-locked); True if the mapping keeps ``fd`` as its lock from now on."""
    st = os.fstat(fd)
    if not st.st_size:
        return [b"" for _ in layout], False
    key = (st.st_dev, st.st_ino, st.st_size)     # (a file is sized once, before use)
    with _lock:
        mp = _mappings.get(key)
        if mp is None:
            mp = _mappings[key] = _Mapping(fd, st.st_size)
        kept = mp.lock_fd < 0
        if kept:
            mp.lock_fd = fd
        view = memoryview(mp.mem)
        out: list[Any] = []
        for start, s in layout:
            part = view[start:start + (s & ~(1 << 63))]
            if s >> 63:
                part = part.toreadonly()
            else:
                mp.writable = True
            out.append(part)
        return out, kept


def sweep() -> bool:
    """Let go of the files whose mappings nothing uses any more; forget mappings and
    released files kept too long, or beyond ``POOL``. True while some are kept."""
    if not holding():
        return False
    with _lock:
        now = time.monotonic()
        for key, mp in list(_mappings.items()):
            if sys.getrefcount(mp.mem) > _BASE or mp.lock_fd < 0:
                continue
            if mp.writable and _written(mp):
                del _mappings[key]           # pages of its own: never again
                _close(mp)
            else:
                os.close(mp.lock_fd)         # unlocked: its owner may take the file back
                mp.lock_fd, mp.unused_since, mp.writable = -1, now, False
        _trim(now)
        return holding()


def _trim(now: float) -> None:
    """(lock held) Unused mappings and released files beyond their time or ``POOL``."""
    unused = sorted(((mp.unused_since, key) for key, mp in _mappings.items()
                     if mp.lock_fd < 0), reverse=True)
    kept = 0
    for since, key in unused:
        mp = _mappings[key]
        if now - since >= IDLE or kept + mp.size > POOL:
            del _mappings[key]
            _close(mp)
        else:
            kept += mp.size
    kept = 0
    for name, (size, since) in sorted(_released.items(), key=lambda e: -e[1][1]):
        if now - since >= IDLE or kept + size > POOL:
            del _released[name]
            try:
                os.unlink(_path(name))
            except OSError:
                pass
        else:
            kept += size


def _close(mp: _Mapping) -> None:
    if mp.lock_fd >= 0:
        os.close(mp.lock_fd)
        mp.lock_fd = -1
    try:
        mp.mem.close()
    except BufferError:     # (a view appeared since: the mapping goes with it)
        pass


# one byte of each page's /proc/self/pagemap entry (bits 56-63): a page the process
# wrote into is its own (present, not the file's) or swapped
_WRITTEN = bytes(1 if b & 0x40 or b & 0xA0 == 0x80 else 0 for b in range(256))


def _written(mp: _Mapping) -> bool:
    pages = (mp.size + _PAGE - 1) // _PAGE
    try:
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
        try:
            data = os.pread(fd, pages * 8, mp.addr // _PAGE * 8)
        finally:
            os.close(fd)
    except OSError:
        return True                  # cannot tell: assume the worst
    return len(data) != pages * 8 or 1 in data[7::8].translate(_WRITTEN)


def _calibrate() -> int:
    """The count ``sweep`` reads for a mapping only its record holds (read through
    the same expression, so the interpreter's own references count alike)."""
    mp = _Mapping.__new__(_Mapping)
    mp.mem = mmap.mmap(-1, _PAGE)
    return sys.getrefcount(mp.mem)


_BASE = _calibrate()
_timer: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None


def _arm() -> None:
    """Sweep again soon, on the running loop (if any), while anything is kept: files
    are let go and memory given back even when no other value comes."""
    global _timer
    if _timer is not None and not _timer[0].is_closed():
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return

    def run() -> None:
        global _timer
        _timer = None
        if sweep():
            _arm()
    _timer = (loop, loop.call_later(SWEEP_EVERY, run))


def holding() -> bool:
    return bool(_mappings or _released)


_soon = False
_later: list[str] = []       # segments to release at the next sweep_soon


def sweep_soon(loop: asyncio.AbstractEventLoop | None, released: str | None = None) -> None:
    """A sweep on ``loop``, once however many ask meanwhile (safe from any thread, or
    inside a garbage collection): a value just dropped lets go of its file before its
    owner writes the next value, rather than at the next second's sweep. ``released``:
    a segment of ours its owner is done with, released there too."""
    global _soon
    if released:
        _later.append(released)
    if _soon or loop is None or not (holding() or _later):
        return
    _soon = True

    def run() -> None:
        global _soon
        _soon = False
        while _later:
            release(_later.pop())
        sweep()
    try:
        loop.call_soon_threadsafe(run)
    except RuntimeError:       # (the loop is closed)
        _soon = False


# == the janitor ========================================================================
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
