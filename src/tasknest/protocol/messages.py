"""The message catalogue: every control message, its fields and their types.

A message travels as a msgpack array ``[op, field1, field2, ...]``; frames carry
lists of them. ``decode`` validates arity and field types against this table
before anything reaches a state machine, so a malformed message is rejected at
the door with a clear reason.
"""
from __future__ import annotations

import sys
from types import UnionType
from typing import (TYPE_CHECKING, Annotated, Any, ClassVar, Optional, Union, get_args,
                    get_origin)

from ..errors import ProtocolError

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:
    def dataclass_transform(**_: Any) -> Any:   # (what mypy reads; nothing at run time)
        return lambda cls: cls

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


def _list_of(types: Any, nil: bool = False) -> Any:
    """The check of a list of ``types`` (or None if ``nil``): one call a field, for
    every message received."""
    def check(v: Any) -> bool:
        if type(v) is not list:
            return nil and v is None
        for x in v:            # a plain loop: these lists are short on hot paths
            if not isinstance(x, types):
                return False
        return True
    return check


_strs = _list_of(str)
BYTES_LIKE = (bytes, bytearray, memoryview)  # large buffers arrive in place: bytearrays, views
_frames = _list_of(BYTES_LIKE)
_opt_frames = _list_of(BYTES_LIKE, nil=True)
_ints = _list_of(int)
STRS = Check("list of str", _strs)
OPT_STRS = Check("list of str or nil", _list_of(str, nil=True))
INTS = Check("list of int", _ints)
NUMS = Check("list of numbers", _list_of((int, float)))
LISTS = Check("list of lists", _list_of(list))
FRAMES = Check("list of bytes", _frames)
OPT_FRAMES = Check("list of bytes or nil", _opt_frames)
FRAMES_LIST = Check("list of lists of bytes",
                    lambda v: type(v) is list and all(map(_frames, v)))
AMOUNTS = Check("map of str to non-negative numbers",
                lambda v: type(v) is dict and all(type(k) is str and type(x) in (int, float)
                                                  and x >= 0 for k, x in v.items()))
OPT_AMOUNTS = Check("map of str to non-negative numbers or nil",
                    lambda v: v is None or AMOUNTS(v))
WHO_HAS = Check("map of str to list of str",
                lambda v: type(v) is dict and (not v or _all(v, str) and all(map(_strs, v.values()))))
PLAN = Check("map of str to list of int",
             lambda v: type(v) is dict and _all(v, str) and all(map(_ints, v.values())))
DATA = Check("map of str to bytes lists or nil",
             lambda v: type(v) is dict and _all(v, str) and all(map(_opt_frames, v.values())))


# Field types: what mypy sees, and (Annotated) the check a decoder runs on the wire value
Strs = Annotated[list[str], STRS]
OptStrs = Annotated[Optional[list[str]], OPT_STRS]
Ints = Annotated[list[int], INTS]
Nums = Annotated[list, NUMS]                    # priority [user, depth, seq]: ints or floats
Lists = Annotated[list[list], LISTS]
Frames = Annotated[list[bytes], FRAMES]
OptFrames = Annotated[Optional[list[bytes]], OPT_FRAMES]
FramesList = Annotated[list[list[bytes]], FRAMES_LIST]
Amounts = Annotated[dict, AMOUNTS]
OptAmounts = Annotated[Optional[dict], OPT_AMOUNTS]
WhoHas = Annotated[dict[str, list[str]], WHO_HAS]
DataMap = Annotated[dict[str, Optional[list[bytes]]], DATA]
Plan = Annotated[dict[str, list[int]], PLAN]
# a pickled function: on the wire the number ``define-func`` gave it on this connection
# (protocol/comm.py swaps it both ways), in memory always the bytes
FUNC_NUMBER = Check("function number", lambda v: type(v) is int)
Func = Annotated[bytes, FUNC_NUMBER]


def _wire_type(hint: Any) -> Any:
    """The check of a field's wire value, from its annotation."""
    if get_origin(hint) is Annotated:
        check = hint.__metadata__[0]
        return int if check is FUNC_NUMBER else check
    if hint is Any:
        return ANY
    if get_origin(hint) in (Union, UnionType):
        return tuple(get_args(hint))
    return hint


@dataclass_transform()
class _Catalogued(type):
    """Makes each message class from its annotated fields: slots, and generated (fast)
    ``__init__``, ``encode`` and validating ``decode``; registers it by its ``op``."""

    def __new__(mcs, name: str, bases: tuple, ns: dict[str, Any]) -> Any:
        if "op" not in ns:                       # (the base class itself)
            return super().__new__(mcs, name, bases, ns)
        module = sys.modules[ns["__module__"]].__dict__
        hints = {f: eval(a, module) if isinstance(a, str) else a
                 for f, a in ns.get("__annotations__", {}).items()}
        names = tuple(hints)
        types = tuple(_wire_type(h) for h in hints.values())
        ns.update(_generate(ns["op"], names, types))
        ns.update(__slots__=names, fields=names, types=types)
        ns.pop("__annotations__", None)           # (slots and class annotations clash)
        cls = super().__new__(mcs, name, bases, ns)
        CATALOGUE[ns["op"]] = cls
        return cls


def _generate(op: str, names: tuple[str, ...], types: tuple[Any, ...]) -> dict[str, Any]:
    args = ", ".join(names)
    ns: dict[str, Any] = {"ProtocolError": ProtocolError, "_new": object.__new__}
    body = "".join(f"    self.{n} = {n}\n" for n in names) or "    pass\n"
    src = [f"def __init__(self, {args}):\n{body}",
           f"def encode(self):\n    return [{op!r}, {''.join(f'self.{n}, ' for n in names)}]\n",
           "def decode(cls, raw):",
           f"    if len(raw) != {len(names) + 1}:",
           f"        raise ProtocolError(f'{op}: expected {len(names)} fields, got {{len(raw) - 1}}')"]
    for i, (name, typ) in enumerate(zip(names, types), 1):
        ns[f"t{i}"] = typ.fn if type(typ) is Check else typ
        if typ is ANY:
            continue
        if type(typ) is Check:
            cond, what = f"not t{i}(raw[{i}])", f"is not a {typ.name}"
        else:
            cond = f"not isinstance(raw[{i}], t{i})"
            what = "has type {type(raw[%d]).__name__}" % i
        src.append(f"    if {cond}:\n        raise ProtocolError(f\"{op}: field '{name}' {what}\")")
    # built without a call of __init__ (one frame less for every message received)
    src.append("    msg = _new(cls)")
    src += [f"    msg.{n} = raw[{i}]" for i, n in enumerate(names, 1)]
    src.append("    return msg")
    exec("\n".join(src), ns)
    return {"__init__": ns["__init__"], "encode": ns["encode"],
            "decode": classmethod(ns["decode"])}


CATALOGUE: dict[str, Any] = {}


class Message(metaclass=_Catalogued):
    """Base of all messages: slotted, with a class-level ``op`` and annotated fields
    (in wire order); built by keyword or position."""

    __slots__ = ()
    op: ClassVar[str]
    fields: ClassVar[tuple[str, ...]]
    types: ClassVar[tuple[Any, ...]]

    def encode(self) -> list:
        return [self.op, *[getattr(self, f) for f in self.fields]]

    @classmethod
    def decode(cls, raw: list) -> "Message":
        raise NotImplementedError

    def __repr__(self) -> str:
        body = ", ".join(f"{f}={getattr(self, f)!r:.60}" for f in self.fields)
        return f"{type(self).__name__}({body})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and type(self) is type(other) \
            and self.encode() == other.encode()


# -- connection set-up ---------------------------------------------------------
class RegisterClient(Message):
    op = 'register-client'
    client_id: str
    version: str


class RegisterWorker(Message):
    op = 'register-worker'
    name: str
    address: str
    nthreads: int
    pid: int
    memory_limit: int
    keys: Strs
    version: str
    resources: Amounts


class RegisterPeer(Message):
    op = 'register-peer'
    name: str


# the codecs this end reads (a link between hosts): the other may compress large buffers
class Codecs(Message):
    op = 'codecs'
    names: Strs


class Welcome(Message):
    op = 'welcome'
    id: str
    info: dict


class Refused(Message):
    op = 'refused'
    reason: str


# -- functions are sent once per connection and then referred to by number -----
class DefineFunc(Message):
    op = 'define-func'
    fid: int
    func: bytes


# -- client (or a worker's own client) -> scheduler ----------------------------
# task: key, fid, args (pickled), deps, priority [user, depth, seq], retries, workers, origin
# resources: {name: amount} it holds on its worker while there; loose: workers= is a wish
class Submit(Message):
    op = 'submit'
    key: str
    func: Func
    args: bytes
    deps: Strs
    priority: Nums
    retries: int
    workers: OptStrs
    resources: OptAmounts
    loose: bool


class Want(Message):    # hold futures on existing keys
    op = 'want'
    keys: Strs


class Remind(Message):    # report these (known ones) yourself
    op = 'remind'
    keys: Strs


class Release(Message):    # no future refers to these any more
    op = 'release'
    keys: Strs


class Cancel(Message):
    op = 'cancel'
    keys: Strs


class Retry(Message):
    op = 'retry'
    keys: Strs


class FireAndForget(Message):
    op = 'fire-and-forget'
    keys: Strs


class Scatter(Message):
    op = 'scatter'
    rid: int
    keys: Strs
    values: FramesList
    broadcast: bool
    workers: OptStrs

# a scatter whose data goes straight from the client to the workers (scheduler/scatter.py):
# answered by ``scatter-to`` (where each value goes), then by ``reply`` once all are stored
class ScatterPlan(Message):
    op = 'scatter-plan'
    rid: int
    keys: Strs
    broadcast: bool
    workers: OptStrs

# coordination primitives (scheduler/coordination.py): kind queue|variable|dataset|event|
# semaphore, an action on the one called name; holder: the lease of a semaphore; value and
# keys: a pickled value and the futures inside it; answered by ``reply`` (rid)
class Coord(Message):
    op = 'coord'
    rid: int
    kind: str
    name: str
    action: str
    holder: str
    value: OptFrames
    keys: Strs
    arg: Any

# a function outside any task (scheduler/operations.py): call = pickled (fn, args, kwargs);
# where: workers | scheduler; plugin: a name keeps it for workers that join later
class Run(Message):
    op = 'run'
    rid: int
    call: bytes
    workers: OptStrs
    where: str
    plugin: str

# every task errs ("restarted"), every worker exits (its nanny starts it again); answered
# once as many new workers have joined
class Restart(Message):
    op = 'restart'
    rid: int


class Query(Message):
    op = 'query'
    rid: int
    what: str
    arg: Any

# graceful retirement (scheduler/retirement.py): these workers (addresses or names; none
# from a worker: itself) get no new task, hand over what only they hold, drain running
# tasks for up to timeout_ms, then leave; answered by ``reply`` [addresses]
class Retire(Message):
    op = 'retire'
    rid: int
    workers: Strs
    timeout_ms: int


class Reply(Message):
    op = 'reply'
    rid: int
    value: Any
    error: str | None


# scatter-plan's plan: the values of these indices to each worker address, ``scatter-data``
# with this scatter id (the workers' ``put-data-done`` carries it back to the scheduler)
class ScatterTo(Message):
    op = 'scatter-to'
    rid: int
    id: int
    plan: Plan


# the client could not hand a worker its part of a planned scatter (no connection, or
# it broke): the scheduler forwards these values as ``put-data``
class ScatterVia(Message):
    op = 'scatter-via'
    id: int
    worker: str
    keys: Strs
    values: FramesList

# a request answered by ``reply`` (its rid is set as it leaves)
Request = Union["Scatter", "ScatterPlan", "Coord", "Run", "Restart", "Query", "Retire"]
# a key's last word to the clients waiting on it
KeyReport = Union["KeyMemory", "KeyErred", "KeyCancelled"]

NOT_YET = -1     # Placed.nbytes: the result has not reached the client


# a task a client placed straight on a worker (see docs/architecture.md, "Placed tasks"):
# the recipe for the scheduler, sent lazily; nbytes/type are filled in (else NOT_YET) if
# the result has reached the client by the time the message leaves; pinned: it may run on
# that worker only (an actor's call), so it is never stolen
class Placed(Message):
    op = 'placed'
    key: str
    func: Func
    args: bytes
    priority: Nums
    retries: int
    worker: str
    seq: int
    nbytes: int
    type: str
    pinned: bool

# the client's connection to that worker broke: the places it carried may never arrive
class LaneLost(Message):
    op = 'lane-lost'
    worker: str

# a client back after the scheduler restarted: every key it holds futures on (and no other)
class Holding(Message):
    op = 'holding'
    keys: Strs


# -- scheduler -> client --------------------------------------------------------
class KeyMemory(Message):
    op = 'key-memory'
    key: str
    type: str
    nbytes: int
    who_has: Strs
    value: OptFrames


class KeyErred(Message):
    op = 'key-erred'
    key: str
    exception: Frames
    traceback: str
    kind: str


class KeyCancelled(Message):
    op = 'key-cancelled'
    key: str
    reason: str


class Warn(Message):    # logged by the client as a warning
    op = 'warn'
    text: str

# what tasks of this client (and tasks they launched) printed or logged:
# [function, worker, key, stream, text] each
class Output(Message):
    op = 'output'
    lines: Lists


# -- worker -> scheduler -------------------------------------------------------
# notified: the clients the worker told itself (over their own connection to it)
# attempt: the number of the compute this answers (0: a task claimed here), so that the
# report of a run the scheduler has released since is never taken for a newer one's
class TaskFinished(Message):
    op = 'task-finished'
    key: str
    nbytes: int
    type: str
    value: OptFrames
    inner: Strs
    notified: Strs
    attempt: int


class TaskErred(Message):
    op = 'task-erred'
    key: str
    exception: Frames
    traceback: str
    kind: str
    attempt: int

# confirm: the worker runs it only once the scheduler says the key is its own (answered by
# ``claim-accepted`` or ``claim-rejected``): a pure key another worker may claim at once
class Claim(Message):
    op = 'claim'
    key: str
    func: Func
    args: bytes
    deps: Strs
    priority: Nums
    retries: int
    confirm: bool


class Secede(Message):
    op = 'secede'
    key: str


class Rejoin(Message):
    op = 'rejoin'
    key: str


class Idle(Message):
    op = 'idle'

# later: not given, but not started either (a task here waits to run it next): ask again
class StealReply(Message):
    op = 'steal-reply'
    key: str
    ok: bool
    later: bool


class AddKeys(Message):
    op = 'add-keys'
    keys: Strs
    nbytes: Ints


class MissingData(Message):
    op = 'missing-data'
    key: str
    worker: str


class PutDataDone(Message):
    op = 'put-data-done'
    rid: int
    keys: Strs
    nbytes: Ints


class Heartbeat(Message):
    op = 'heartbeat'
    memory: int


class BeatEvery(Message):    # heartbeat this often from now on (the cluster grew)
    op = 'beat-every'
    seconds: float


class Goodbye(Message):    # leaving on purpose (not a crash)
    op = 'goodbye'
    reason: str


class Paused(Message):    # memory high: no new task starts
    op = 'paused'
    paused: bool


class Synced(Message):    # everything sent before this has left
    op = 'synced'
    rid: int


class NotHere(Message):    # that compute never came
    op = 'not-here'
    key: str
    attempt: int


class Replicated(Message):    # copies made
    op = 'replicated'
    rid: int
    keys: Strs
    nbytes: Ints

# after registering again with a restarted scheduler: results held (memory, nbytes, kinds:
# their types),
# tasks queued or running here [key, attempt, func, args, deps, priority, retries], and the
# keys of the in-task client's futures (see scheduler/recovery.py)
class Resume(Message):
    op = 'resume'
    memory: Strs
    nbytes: Ints
    kinds: Strs
    tasks: Any
    wants: Strs


class RunDone(Message):
    op = 'run-done'
    rid: int
    ok: bool
    value: Frames

# what people see (worker/monitor.py, dashboard/): runs [key, thread, start, stop, ok],
# spawns [parent, child], output [key, stream, text], the worker's log lines, its stats,
# events [kind (transfer | spill), start, stop, peer, keys, bytes]
class Monitor(Message):
    op = 'monitor'
    runs: bytes       # task stream rows, packed (monitoring.pack_runs)
    nruns: int
    spawns: Lists
    output: Lists
    logs: Strs
    stats: dict
    events: Lists


# -- scheduler -> worker -------------------------------------------------------
class RunOn(Message):    # answer run-done (unless rid 0)
    op = 'run-on'
    rid: int
    call: bytes

# notify: clients waiting for the result, to be told straight from the worker if connected
# attempt: numbers each assignment; the worker's report carries it back
class Compute(Message):
    op = 'compute'
    key: str
    func: Func
    args: bytes
    deps: WhoHas
    priority: Nums
    retries: int
    notify: Strs
    attempt: int


class Free(Message):
    op = 'free'
    keys: Strs


class Steal(Message):
    op = 'steal'
    key: str


class ClaimRejected(Message):
    op = 'claim-rejected'
    key: str


class ClaimAccepted(Message):    # claims kept (confirm)
    op = 'claim-accepted'
    keys: Strs


class PutData(Message):
    op = 'put-data'
    rid: int
    keys: Strs
    values: FramesList


class Close(Message):
    op = 'close'
    reason: str


class Sync(Message):    # answer ``synced`` after what you sent
    op = 'sync'
    rid: int


class Unknown(Message):    # a worker wanted a key we do not know
    op = 'unknown'
    key: str


class Replicate(Message):    # copy these from there
    op = 'replicate'
    rid: int
    keys: Strs
    source: str

# the scheduler's answer to a client's ``placed``: attempt >= 0: your copy is the task, as
# that compute (report it as such); -1: drop your copy (the task lives elsewhere)
class Confirm(Message):
    op = 'confirm'
    key: str
    client: str
    seq: int
    attempt: int


class ClientGone(Message):    # its unconfirmed places go
    op = 'client-gone'
    client: str


class Withdraw(Message):    # its places <= upto came
    op = 'withdraw'
    client: str
    upto: int


# -- client -> worker, straight: a task to run here (the scheduler hears by ``placed``) --
class Place(Message):
    op = 'place'
    key: str
    func: Func
    args: bytes
    priority: Nums
    retries: int
    seq: int


# -- peer data transfer (worker <-> worker, client -> worker) -------------------
class GetData(Message):
    op = 'get-data'
    rid: int
    keys: Strs

# the asker's host (sharedmem.host_id): a worker on the same one answers large values
# with references to shared-memory segments; "" takes it back
class PeerHost(Message):
    op = 'peer-host'
    host: str


# a client's part of a planned scatter, straight to the worker; it answers with
# ``put-data-done`` (rid: this request) once stored, and tells the scheduler (id)
class ScatterData(Message):
    op = 'scatter-data'
    rid: int
    id: int
    keys: Strs
    values: FramesList


class Data(Message):
    op = 'data'
    rid: int
    values: DataMap


# -- what an op means to a connection (protocol/comm.py reads these, never op names) ------
# ``func`` (a ``Func``, second field) is a function sent once per connection by
# ``define-func``: on the wire its number, the receiver swaps the number back for the bytes
FUNC_OPS = frozenset({"submit", "claim", "compute", "place", "placed"})
assert all(CATALOGUE[op].fields[1] == "func" for op in FUNC_OPS)
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


def _resume_problem(msg: Any) -> str | None:
    if not len(msg.memory) == len(msg.nbytes) == len(msg.kinds):
        return "memory, nbytes and kinds differ in length"
    if type(msg.tasks) is not list:
        return "tasks is not a list"
    for entry in msg.tasks:     # [key, attempt, func, args, deps, priority, retries]
        if not (type(entry) is list and len(entry) == 7 and _strs(entry[4]) and NUMS(entry[5])
                and [*map(type, entry[:4]), type(entry[6])] == [str, int, bytes, bytes, int]):
            return f"a task entry is malformed: {str(entry)[:80]}"
    return None


# rules across fields: a message breaking one would corrupt a state machine
RULES: dict[str, Any] = {
    "submit": _not_own_dep, "claim": _not_own_dep,
    "scatter": _same_length("keys", "values"), "put-data": _same_length("keys", "values"),
    "scatter-via": _same_length("keys", "values"), "scatter-data": _same_length("keys", "values"),
    "add-keys": _same_length("keys", "nbytes"), "put-data-done": _same_length("keys", "nbytes"),
    "replicated": _same_length("keys", "nbytes"),
    "resume": _resume_problem,
    "query": lambda msg: None if msg.what != "who_has" or msg.arg is None or _strs(msg.arg)
    else "who_has takes a list of keys or nil",
}


def handler_name(op: str) -> str:
    """The method that handles ``op`` in every dispatch table: ``_on_<op>``."""
    return "_on_" + op.replace("-", "_")


def handlers(*owners: Any) -> dict[str, Any]:
    """op -> the ``_on_<op>`` method of the first owner that has one, for the ops of
    the catalogue (owners: objects, for bound methods, or classes)."""
    # (owners in reverse: the first owner's method is the one written last, and kept)
    return {op: getattr(owner, handler_name(op)) for op in CATALOGUE
            for owner in reversed(owners) if hasattr(owner, handler_name(op))}


def decode(raw: Any) -> Message:
    """Turn a decoded msgpack array into a validated message, or raise ProtocolError."""
    if type(raw) is not list or not raw or type(raw[0]) is not str:
        raise ProtocolError(f"not a message: {str(raw)[:80]}")
    cls = CATALOGUE.get(raw[0])
    if cls is None:
        raise ProtocolError(f"unknown op {raw[0][:40]!r}")
    msg = cls.decode(raw)
    rule = RULES.get(msg.op)
    if rule is not None:
        problem = rule(msg)
        if problem:
            raise ProtocolError(f"{msg.op}: {problem}")
    return msg
