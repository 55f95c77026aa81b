"""The message catalogue: every control message, its fields and their types.

A message travels as a msgpack array ``[op, field1, field2, ...]``; frames carry
lists of them. ``decode`` validates arity and field types against this table
before anything reaches a state machine, so a malformed message is rejected at
the door with a clear reason.
"""
from __future__ import annotations

from typing import Any, ClassVar

from ..errors import ProtocolError

NONE = type(None)
OPT_STR = (str, NONE)
ANY = object


class Check:
    """A field type with a check of its contents, beyond isinstance."""

    def __init__(self, name: str, fn: Any) -> None:
        self.name = name
        self.fn = fn

    def __call__(self, value: Any) -> bool:
        return self.fn(value)


def _all(values: Any, types: Any) -> bool:
    for v in values:            # a plain loop: these lists are short on hot paths
        if not isinstance(v, types):
            return False
    return True


def _strs(v: Any) -> bool:
    if type(v) is not list:
        return False
    for x in v:
        if type(x) is not str:
            return False
    return True


STRS = Check("list of str", _strs)
OPT_STRS = Check("list of str or nil", lambda v: v is None or _strs(v))
INTS = Check("list of int", lambda v: type(v) is list and _all(v, int))
NUMS = Check("list of numbers", lambda v: type(v) is list and _all(v, (int, float)))
LISTS = Check("list of lists", lambda v: type(v) is list and _all(v, list))
BYTES_LIKE = (bytes, bytearray)      # large buffers arrive in place, some as bytearrays
FRAMES = Check("list of bytes", lambda v: type(v) is list and _all(v, BYTES_LIKE))
OPT_FRAMES = Check("list of bytes or nil", lambda v: v is None or FRAMES(v))
FRAMES_LIST = Check("list of lists of bytes", lambda v: type(v) is list and all(FRAMES(x) for x in v))
AMOUNTS = Check("map of str to non-negative numbers",
                lambda v: type(v) is dict and all(type(k) is str and type(x) in (int, float)
                                                  and x >= 0 for k, x in v.items()))
OPT_AMOUNTS = Check("map of str to non-negative numbers or nil",
                    lambda v: v is None or AMOUNTS(v))
WHO_HAS = Check("map of str to list of str",
                lambda v: type(v) is dict and (not v or _all(v, str) and all(map(_strs, v.values()))))
DATA = Check("map of str to bytes lists or nil",
             lambda v: type(v) is dict and _all(v, str) and all(OPT_FRAMES(x) for x in v.values()))


class Message:
    """Base of all messages: slotted, positional, with a class-level ``op``."""

    __slots__ = ()
    op: ClassVar[str]
    fields: ClassVar[tuple[str, ...]]
    types: ClassVar[tuple[Any, ...]]

    def encode(self) -> list:
        return [self.op, *[getattr(self, f) for f in self.fields]]

    def __repr__(self) -> str:
        body = ", ".join(f"{f}={getattr(self, f)!r:.60}" for f in self.fields)
        return f"{type(self).__name__}({body})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.encode() == other.encode()  # type: ignore[attr-defined]


CATALOGUE: dict[str, type[Message]] = {}


def _define(_cls_name: str, _op: str, **fields: Any) -> Any:
    """Make a message class with generated (fast) __init__, encode and decode."""
    names = tuple(fields)
    types = tuple(fields.values())
    args = ", ".join(names)
    ns: dict[str, Any] = {"ProtocolError": ProtocolError}
    body = "".join(f"    self.{n} = {n}\n" for n in names) or "    pass\n"
    src = [f"def __init__(self, {args}):\n{body}",
           f"def encode(self):\n    return [{_op!r}, {''.join(f'self.{n}, ' for n in names)}]\n",
           "def decode(raw):",
           f"    if len(raw) != {len(names) + 1}:",
           f"        raise ProtocolError(f'{_op}: expected {len(names)} fields, got {{len(raw) - 1}}')"]
    for i, (name, typ) in enumerate(zip(names, types), 1):
        ns[f"t{i}"] = typ.fn if type(typ) is Check else typ
        if typ is ANY:
            continue
        if type(typ) is Check:
            cond, what = f"not t{i}(raw[{i}])", f"is not a {typ.name}"
        else:
            cond = f"not isinstance(raw[{i}], t{i})"
            what = "has type {type(raw[%d]).__name__}" % i
        src.append(f"    if {cond}:\n        raise ProtocolError(f\"{_op}: field '{name}' {what}\")")
    src.append(f"    return cls({', '.join(f'raw[{i}]' for i in range(1, len(names) + 1))})")
    exec("\n".join(src), ns)
    cls = type(_cls_name, (Message,), {"__slots__": names, "op": _op, "fields": names,
                                       "types": types, "__init__": ns["__init__"],
                                       "encode": ns["encode"]})
    ns["cls"] = cls
    cls.decode = staticmethod(ns["decode"])  # type: ignore[attr-defined]
    CATALOGUE[_op] = cls
    return cls


# -- connection set-up ---------------------------------------------------------
RegisterClient = _define("RegisterClient", "register-client", client_id=str, version=str)
RegisterWorker = _define("RegisterWorker", "register-worker", name=str, address=str, nthreads=int,
                         pid=int, memory_limit=int, keys=STRS, version=str, resources=AMOUNTS)
RegisterPeer = _define("RegisterPeer", "register-peer", name=str)
# the codecs this end reads (a link between hosts): the other may compress large buffers
Codecs = _define("Codecs", "codecs", names=STRS)
Welcome = _define("Welcome", "welcome", id=str, info=dict)
Refused = _define("Refused", "refused", reason=str)

# -- functions are sent once per connection and then referred to by number -----
DefineFunc = _define("DefineFunc", "define-func", fid=int, func=bytes)

# -- client (or a worker's own client) -> scheduler ----------------------------
# task: key, fid, args (pickled), deps, priority [user, depth, seq], retries, workers, origin
# resources: {name: amount} it holds on its worker while there; loose: workers= is a wish
Submit = _define("Submit", "submit", key=str, fid=int, args=bytes, deps=STRS, priority=NUMS,
                 retries=int, workers=OPT_STRS, resources=OPT_AMOUNTS, loose=bool)
Want = _define("Want", "want", keys=STRS)                 # hold futures on existing keys
Remind = _define("Remind", "remind", keys=STRS)           # report these (known ones) yourself
Release = _define("Release", "release", keys=STRS)        # no future refers to these any more
Cancel = _define("Cancel", "cancel", keys=STRS)
Retry = _define("Retry", "retry", keys=STRS)
FireAndForget = _define("FireAndForget", "fire-and-forget", keys=STRS)
Scatter = _define("Scatter", "scatter", rid=int, keys=STRS, values=FRAMES_LIST, broadcast=bool,
                  workers=OPT_STRS)
# coordination primitives (scheduler/coordination.py): kind queue|variable|dataset|event|
# semaphore, an action on the one called name; holder: the lease of a semaphore; value and
# keys: a pickled value and the futures inside it; answered by ``reply`` (rid)
Coord = _define("Coord", "coord", rid=int, kind=str, name=str, action=str, holder=str,
                value=OPT_FRAMES, keys=STRS, arg=ANY)
# a function outside any task (scheduler/operations.py): call = pickled (fn, args, kwargs);
# where: workers | scheduler; plugin: a name keeps it for workers that join later
Run = _define("Run", "run", rid=int, call=bytes, workers=OPT_STRS, where=str, plugin=str)
# every task errs ("restarted"), every worker exits (its nanny starts it again); answered
# once as many new workers have joined
Restart = _define("Restart", "restart", rid=int)
Query = _define("Query", "query", rid=int, what=str, arg=ANY)
# graceful retirement (scheduler/retirement.py): these workers (addresses or names; none
# from a worker: itself) get no new task, hand over what only they hold, drain running
# tasks for up to timeout_ms, then leave; answered by ``reply`` [addresses]
Retire = _define("Retire", "retire", rid=int, workers=STRS, timeout_ms=int)
Reply = _define("Reply", "reply", rid=int, value=ANY, error=OPT_STR)

# a task a client placed straight on a worker (see docs/architecture.md, "Placed tasks"):
# the recipe for the scheduler, sent lazily; nbytes/type are filled in (nbytes >= 0) if the
# result has reached the client by the time the message leaves; pinned: it may run on that
# worker only (an actor's call), so it is never stolen
Placed = _define("Placed", "placed", key=str, fid=int, args=bytes, priority=NUMS, retries=int,
                 worker=str, seq=int, nbytes=int, type=str, pinned=bool)
# the client's connection to that worker broke: the places it carried may never arrive
LaneLost = _define("LaneLost", "lane-lost", worker=str)
# a client back after the scheduler restarted: every key it holds futures on (and no other)
Holding = _define("Holding", "holding", keys=STRS)

# -- scheduler -> client --------------------------------------------------------
KeyMemory = _define("KeyMemory", "key-memory", key=str, type=str, nbytes=int, who_has=STRS,
                    value=OPT_FRAMES)
KeyErred = _define("KeyErred", "key-erred", key=str, exception=FRAMES, traceback=str, kind=str)
KeyCancelled = _define("KeyCancelled", "key-cancelled", key=str, reason=str)
Warn = _define("Warn", "warn", text=str)       # logged by the client as a warning
# what tasks of this client (and tasks they launched) printed or logged:
# [function, worker, key, stream, text] each
Output = _define("Output", "output", lines=LISTS)

# -- worker -> scheduler -------------------------------------------------------
# notified: the clients the worker told itself (over their own connection to it)
# attempt: the number of the compute this answers (0: a task claimed here), so that the
# report of a run the scheduler has released since is never taken for a newer one's
TaskFinished = _define("TaskFinished", "task-finished", key=str, nbytes=int, type=str,
                       value=OPT_FRAMES, inner=STRS, notified=STRS, attempt=int)
TaskErred = _define("TaskErred", "task-erred", key=str, exception=FRAMES, traceback=str, kind=str,
                    attempt=int)
# confirm: the worker runs it only once the scheduler says the key is its own (answered by
# ``claim-accepted`` or ``claim-rejected``): a pure key another worker may claim at once
Claim = _define("Claim", "claim", key=str, fid=int, args=bytes, deps=STRS, priority=NUMS,
                retries=int, confirm=bool)
Secede = _define("Secede", "secede", key=str)
Rejoin = _define("Rejoin", "rejoin", key=str)
Idle = _define("Idle", "idle")
# later: not given, but not started either (a task here waits to run it next): ask again
StealReply = _define("StealReply", "steal-reply", key=str, ok=bool, later=bool)
AddKeys = _define("AddKeys", "add-keys", keys=STRS, nbytes=INTS)
MissingData = _define("MissingData", "missing-data", key=str, worker=str)
PutDataDone = _define("PutDataDone", "put-data-done", rid=int, keys=STRS, nbytes=INTS)
Heartbeat = _define("Heartbeat", "heartbeat", memory=int)
Goodbye = _define("Goodbye", "goodbye", reason=str)      # leaving on purpose (not a crash)
Paused = _define("Paused", "paused", paused=bool)          # memory high: no new task starts
Synced = _define("Synced", "synced", rid=int)     # everything sent before this has left
NotHere = _define("NotHere", "not-here", key=str, attempt=int)  # that compute never came
Replicated = _define("Replicated", "replicated", rid=int, keys=STRS, nbytes=INTS)  # copies made
# after registering again with a restarted scheduler: results held (memory, nbytes, kinds:
# their types),
# tasks queued or running here [key, attempt, func, args, deps, priority, retries], and the
# keys of the in-task client's futures (see scheduler/recovery.py)
Resume = _define("Resume", "resume", memory=STRS, nbytes=INTS, kinds=STRS, tasks=ANY,
                 wants=STRS)

RunDone = _define("RunDone", "run-done", rid=int, ok=bool, value=FRAMES)
# what people see (worker/monitor.py, dashboard/): runs [key, thread, start, stop, ok],
# spawns [parent, child], output [key, stream, text], the worker's log lines, its stats,
# events [kind (transfer | spill), start, stop, peer, keys, bytes]
Monitor = _define("Monitor", "monitor", runs=LISTS, spawns=LISTS, output=LISTS, logs=STRS,
                  stats=dict, events=LISTS)

# -- scheduler -> worker -------------------------------------------------------
RunOn = _define("RunOn", "run-on", rid=int, call=bytes)    # answer run-done (unless rid 0)
# notify: clients waiting for the result, to be told straight from the worker if connected
# attempt: numbers each assignment; the worker's report carries it back
Compute = _define("Compute", "compute", key=str, fid=int, args=bytes, deps=WHO_HAS, priority=NUMS,
                  retries=int, notify=STRS, attempt=int)
Free = _define("Free", "free", keys=STRS)
Steal = _define("Steal", "steal", key=str)
ClaimRejected = _define("ClaimRejected", "claim-rejected", key=str)
ClaimAccepted = _define("ClaimAccepted", "claim-accepted", keys=STRS)  # claims kept (confirm)
PutData = _define("PutData", "put-data", rid=int, keys=STRS, values=FRAMES_LIST)
Close = _define("Close", "close", reason=str)
Sync = _define("Sync", "sync", rid=int)           # answer ``synced`` after what you sent
Unknown = _define("Unknown", "unknown", key=str)  # a worker wanted a key we do not know
Replicate = _define("Replicate", "replicate", rid=int, keys=STRS, source=str)  # copy these from there
# the scheduler's answer to a client's ``placed``: attempt >= 0: your copy is the task, as
# that compute (report it as such); -1: drop your copy (the task lives elsewhere)
Confirm = _define("Confirm", "confirm", key=str, client=str, seq=int, attempt=int)
ClientGone = _define("ClientGone", "client-gone", client=str)   # its unconfirmed places go
Withdraw = _define("Withdraw", "withdraw", client=str, upto=int)  # its places <= upto came

# -- client -> worker, straight: a task to run here (the scheduler hears by ``placed``) --
Place = _define("Place", "place", key=str, fid=int, args=bytes, priority=NUMS, retries=int,
                seq=int)

# -- peer data transfer (worker <-> worker, client -> worker) -------------------
GetData = _define("GetData", "get-data", rid=int, keys=STRS)
# the asker's host (sharedmem.host_id): a worker on the same one answers large values
# with references to shared-memory segments; "" takes it back
PeerHost = _define("PeerHost", "peer-host", host=str)
Data = _define("Data", "data", rid=int, values=DATA)

# -- what an op means to a connection (protocol/comm.py reads these, never op names) ------
# ``fid`` names a function sent once per connection by ``define-func``: the sender swaps
# the pickled bytes for a number, the receiver swaps the number back
FUNC_OPS = frozenset({"submit", "claim", "compute", "place", "placed"})
# adjacent ones in one frame merge their key lists
MERGE_OPS = frozenset({"release", "free", "want", "claim-accepted"})
# bookkeeping nobody waits on: it leaves with the batch's timer (or with the next message
# someone does wait on), never in a frame of its own when a thread is about to wait
LAZY_OPS = frozenset({"placed", "release", "idle"})
# op -> the op it undoes: if that one (same key) is still unsent, neither is sent
UNDOES = {"rejoin": "secede"}


def _same_length(a: str, b: str) -> Any:
    return lambda msg: None if len(getattr(msg, a)) == len(getattr(msg, b)) else \
        f"{len(getattr(msg, a))} {a} but {len(getattr(msg, b))} {b}"


def _not_own_dep(msg: Any) -> str | None:
    return f"task {msg.key!r} depends on itself" if msg.key in msg.deps else None


# rules across fields: a message breaking one would corrupt a state machine
RULES: dict[str, Any] = {
    "submit": _not_own_dep, "claim": _not_own_dep,
    "scatter": _same_length("keys", "values"), "put-data": _same_length("keys", "values"),
    "add-keys": _same_length("keys", "nbytes"), "put-data-done": _same_length("keys", "nbytes"),
    "replicated": _same_length("keys", "nbytes"),
    "resume": lambda msg: None if len(msg.memory) == len(msg.nbytes) == len(msg.kinds)
    and type(msg.tasks) is list else "memory, nbytes and kinds differ in length",
    "query": lambda msg: None if msg.what != "who_has" or msg.arg is None or _strs(msg.arg)
    else "who_has takes a list of keys or nil",
}


def decode(raw: Any) -> Message:
    """Turn a decoded msgpack array into a validated message, or raise ProtocolError."""
    if type(raw) is not list or not raw or type(raw[0]) is not str:
        raise ProtocolError(f"not a message: {str(raw)[:80]}")
    cls = CATALOGUE.get(raw[0])
    if cls is None:
        raise ProtocolError(f"unknown op {raw[0][:40]!r}")
    msg = cls.decode(raw)  # type: ignore[attr-defined]
    rule = RULES.get(msg.op)
    if rule is not None:
        problem = rule(msg)
        if problem:
            raise ProtocolError(f"{msg.op}: {problem}")
    return msg
