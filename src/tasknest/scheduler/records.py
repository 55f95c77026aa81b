"""The scheduler's records of tasks and workers (plain data, no behaviour)."""
from __future__ import annotations

from typing import Any, Iterable, Literal

from ..memory import EMPTY

FIRE_AND_FORGET = "@ff"      # the pseudo-client that holds fire-and-forget tasks
ALLOWED_FAILURES = 3         # worker deaths a task may witness before KilledWorker


# released -> waiting -> processing@W -> memory@{W..} | erred
TaskState = Literal["released", "waiting", "processing", "memory", "erred"]
CLAIMED = 0          # attempt of a task a worker claimed (no compute of ours)
UNCOUNTED = -1       # a confirm's attempt: the client's copy is not the task, drop it
NOTHING: Any = ()           # the shared empty list of the same kind (deps, inner, died_on)


class Task:
    __slots__ = ("key", "func", "args", "deps", "priority", "retries", "restrict", "state",
                 "waiting_on", "dependents", "who_has", "processing_on", "who_wants",
                 "nbytes", "type", "value", "error", "suspicious", "inner", "scattered",
                 "stealing", "running", "died_on", "started", "tell", "attempt", "placed",
                 "resources", "loose")

    def __init__(self, key: str, func: bytes | None, args: bytes | None, deps: list[str],
                 priority: list, retries: int = 0, restrict: list | None = None) -> None:
        self.key = key
        self.func = func
        self.args = args
        self.deps = deps or NOTHING
        self.priority = priority
        self.retries = retries
        self.restrict = restrict
        self.resources: dict | None = None   # held on its worker while processing there
        self.loose = False                   # restrict is a wish (allow_other_workers)
        self.state: TaskState = "released"
        self.waiting_on: set[str] = EMPTY
        self.dependents: set[str] = EMPTY
        self.who_has: set[str] | frozenset[str] = EMPTY   # (see SchedulerState._add_replica)
        self.processing_on: str | None = None
        self.who_wants: set[str] | frozenset[str] = EMPTY   # (see SchedulerState._want)
        self.nbytes = 0
        self.type = ""
        self.value: list | None = None
        self.error: tuple[list, str, str] | None = None     # exception frames, traceback, kind
        self.suspicious = 0
        self.inner: list[str] = NOTHING
        self.scattered = False
        self.stealing: str | None = None
        self.running = False                                  # seceded, so surely started
        self.started = False                                  # a steal found it running
        self.attempt = 0          # number of the compute in force (0: claimed by its worker)
        self.placed: tuple | None = None   # (client, attempt) that confirmed a placed copy
        self.died_on: list[str] = NOTHING                          # workers lost while it may have run
        self.tell: set[str] = EMPTY   # clients that asked again: told by the scheduler, always

    def __repr__(self) -> str:
        return f"<Task {self.key} {self.state}>"

    def unwanted_by(self, holder: str) -> None:
        """``holder`` no longer wants this (a shared {holder} is let go, not changed)."""
        self.who_wants = _without(self.who_wants, holder)

    def replica_lost(self, wid: str) -> None:
        """Worker ``wid`` holds no copy any more (its shared {wid} is let go)."""
        self.who_has = _without(self.who_has, wid)

    def failure(self) -> tuple[list, str, str]:
        """Its error (exception frames, traceback, kind): an erred task's, never None."""
        assert self.error is not None, self
        return self.error


def _without(who: set[str] | frozenset[str], member: str) -> set[str] | frozenset[str]:
    """``who`` less ``member``: a set of its own is changed, a shared {member} let go."""
    if type(who) is set:
        who.discard(member)
        return who
    return EMPTY if member in who else who


class WorkerInfo:
    __slots__ = ("id", "address", "name", "nthreads", "pid", "memory_limit", "processing",
                 "has_what", "seceded", "idle", "last_seen", "memory", "paused", "asked",
                 "resources", "alone")

    def __init__(self, wid: str, address: str, name: str, nthreads: int, pid: int,
                 memory_limit: int, now: float) -> None:
        self.id = wid
        self.address = address
        self.name = name
        self.nthreads = nthreads
        self.pid = pid
        self.memory_limit = memory_limit
        self.processing: set[str] = set()
        self.has_what: set[str] = set()
        self.seceded = 0
        self.idle = False
        self.last_seen = now
        self.memory = 0
        self.paused = False          # above its memory mark: it starts no new task
        self.asked = 0               # steal requests on its behalf awaiting their answer
        self.resources: dict = {}    # what it has (tasks that ask hold it while there)
        self.alone = frozenset((wid,))   # the who_has of results only it holds, shared

    def load(self) -> float:
        return (len(self.processing) - self.seceded) / self.nthreads


def with_names(restrict: list, workers: Iterable[WorkerInfo]) -> list:
    """A worker named by its address is named by its name too: its nanny restarts it
    under that name at a new address, where the task then runs instead of waiting
    for an address that will never come back. ("!address" stays as it is.)"""
    names = [w.name for w in workers
             if w.name and w.address in restrict and w.name not in restrict]
    return [*restrict, *names] if names else restrict
