"""Streaming submission: ``map()`` over many items returns at once.

    map() ──first chunk: pickled, keyed and sent here (its errors raise at the call)
          ──one cheap StreamedFuture per item; the other chunks queue for the sender
    sender thread ──a chunk at a time: pickle, key, submit──> connection
                  (waits while the connection holds > UNSENT_BOUND bytes unsent,
                   or while IN_FLIGHT of the map's tasks are sent and not settled)

The first tasks run while the rest are still being sent, and a slow scheduler holds
the sender back instead of the client queueing every message at once; so does a
cluster that has a window of the map's tasks already, so that the scheduler, the
workers and this client hold that window rather than the whole map.

A StreamedFuture knows its chunk and index, not yet its key. Asking for its key or
its state (result, gather, wait, cancel, pickling it into another task...) sends its
chunk first: it waits if another thread is sending that chunk, else sends it itself.
Then it turns into a plain Future (its class changes: same layout, so the hot paths
never test for laziness). A future dropped before its chunk left is never sent.
Only the top-level client streams: a task's client submits through its worker's
queue, eagerly.
"""
from __future__ import annotations

import collections
import itertools
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import ClosedClientError
from ..names import content_key, funcname, hasher, unique_token
from ..protocol.serialize import dumps_call
from .future import Future, FutureState

log = logging.getLogger("tasknest.client")

if TYPE_CHECKING:
    from .client import Client

CHUNK = 1000                # items pickled and sent together
UNSENT_BOUND = 1 << 20      # bytes the connection may hold unsent before the sender waits
IN_FLIGHT = 100_000         # a map's tasks sent and not settled before the sender waits
POLL = 0.002                # seconds between looks at a connection over the bound
RECONNECT_POLL = 0.05       # ... at a client reconnecting to its scheduler
SENT_POLL = 0.005           # seconds between looks of an async gather at a chunk not sent

_key_slot: Any = Future.__dict__["key"]
_state_slot: Any = Future.__dict__["_state"]
_lazy_slot: Any = Future.__dict__["_lazy"]
_client_slot: Any = Future.__dict__["client"]


class MapCall:
    """What every item of one map() call shares."""

    __slots__ = ("client", "func", "fbytes", "kwargs", "keys", "prefix", "pure", "fname",
                 "digest", "priority", "depth", "seq0", "retries", "workers", "resources",
                 "loose", "cond", "single", "sent", "settled")

    def __init__(self, client: "Client", func: Callable, fbytes: bytes, kwargs: dict,
                 keys: Any, prefix: str | None, pure: bool, priority: Any, depth: int,
                 seq0: int, retries: int, workers: list | None, resources: dict | None,
                 loose: bool, single: bool) -> None:
        self.client, self.func, self.fbytes, self.kwargs = client, func, fbytes, kwargs
        self.single = single        # items are the arguments themselves, not tuples
        self.keys, self.prefix, self.pure = keys, prefix, pure
        self.fname = funcname(func)
        self.digest = hasher(fbytes)   # copied per pure key
        self.priority, self.depth, self.seq0 = priority, depth, seq0
        self.retries, self.workers, self.resources, self.loose = (retries, workers,
                                                                  resources, loose)
        self.cond = threading.Condition()      # a chunk's sender finished
        # new keys sent (the client's lock held) and settled or let go (the states'
        # lock held): the sender waits while IN_FLIGHT of them are in the cluster
        self.sent = self.settled = 0


class _Chunk:
    __slots__ = ("map", "start", "items", "keys", "states", "dropped", "owner", "sent")

    def __init__(self, mp: MapCall, start: int, items: Sequence) -> None:
        self.map, self.start = mp, start
        self.items: Sequence | None = items    # (a list, or a range for a map of one)
        self.keys: list | None = None
        self.states: list | None = None
        self.dropped: set[int] | None = None   # futures gone before the chunk left
        self.owner: int | None = None           # the thread sending it
        self.sent = False


def full_recipe(recipe: tuple, sent: dict) -> tuple:
    """A kept recipe as ``m.Submit``'s fields after the key. A map's item keeps only
    what is its own, (map, args) or (map, args, deps): a fifth of the bytes of the
    whole. Its place in the map's order is not kept (an int each): items sent again
    in the order they were first sent (``sent``: map -> how many so far) keep their
    order among themselves."""
    if type(recipe[0]) is not MapCall:
        return recipe
    mp, abytes, deps = recipe if len(recipe) == 3 else (*recipe, ())
    i = sent[mp] = sent.get(mp, -1) + 1
    return (mp.fbytes, abytes, list(deps), [mp.priority, mp.depth, mp.seq0 + i], mp.retries,
            mp.workers, mp.resources, mp.loose)


def _key(mp: MapCall, args: tuple, abytes: bytes) -> str:
    """The key submit() would give this call."""
    if mp.pure:
        digest = mp.digest.copy()
        digest.update(abytes)
        name = mp.prefix if mp.prefix is not None else mp.fname
        return content_key(name, digest)
    if mp.prefix is not None:
        return f"{mp.prefix}-{unique_token()}"
    return mp.client._impure_key(mp.func, mp.fbytes, abytes)


def _submit(chunk: _Chunk, raise_errors: bool) -> None:
    """Pickle, key and submit a chunk's items (its owner thread, no lock held)."""
    mp = chunk.map
    client = mp.client
    items = chunk.items
    assert items is not None
    n = len(items)
    keys: list = [None] * n
    states: list = [None] * n
    held = []          # (index, Future): the reference each took, handed to the item
    if client.status == "closed":      # nothing to send: each future fails when asked
        with client._lock:
            chunk.sent = True
            chunk.items = None
        return
    with client._lock:
        skip = set(chunk.dropped) if chunk.dropped else ()
    fresh = mp.keys is None and mp.prefix is None and not mp.pure
    kwargs, fbytes, listed, single = mp.kwargs, mp.fbytes, mp.keys, mp.single
    for j, args in enumerate(items):
        if j in skip:
            continue
        i = chunk.start + j
        if single:
            args = (args,)
        try:
            abytes, deps, futures = dumps_call(args, kwargs, Future)
            if futures:
                client._check_own(futures, "map()")
            key = listed[i] if listed is not None else _key(mp, args, abytes)
            fut = client._submit_key(key, fbytes, abytes, deps,
                                     [mp.priority, mp.depth, mp.seq0 + i], mp.retries,
                                     mp.workers, mp.resources, mp.loose, fresh,
                                     (mp, abytes, deps) if deps else (mp, abytes))
        except Exception as exc:
            if raise_errors:
                raise
            # this item's future fails with it; the others go on
            st = FutureState()
            st.fail(exc)
            keys[j], states[j] = f"{mp.fname}-{unique_token()}", st
            continue
        keys[j], states[j] = key, fut._state
        held.append((j, fut))
    with client._lock:
        late = chunk.dropped or ()
        for j, fut in held:
            if j not in late:
                fut._held = False     # the item's StreamedFuture holds the key now
        chunk.keys, chunk.states = keys, states
        chunk.sent = True
        chunk.items = None
    # (futures dropped meanwhile: ``held`` still holds theirs, released as it goes)
    if client.status == "closed":      # closed while we sent: nobody will settle these
        error = ClosedClientError("the client was closed")
        for st in states:
            if st is not None and not st.done():
                st.fail(error)


def send_chunk(chunk: _Chunk, raise_errors: bool = False) -> None:
    """Make sure the chunk was sent: send it here, or wait for the thread sending it."""
    if chunk.sent:
        return
    cond = chunk.map.cond
    me = threading.get_ident()
    with cond:
        while not chunk.sent:
            if chunk.owner is None:
                chunk.owner = me
                break
            if chunk.owner == me:
                raise RuntimeError("a map's future was used while its own chunk was "
                                   "being sent (from a __del__ or a pickling hook?)")
            cond.wait()
        else:
            return
    try:
        _submit(chunk, raise_errors)
    finally:
        with cond:
            chunk.owner = None
            cond.notify_all()


class StreamedFuture(Future):
    """A map's Future whose chunk may not have been sent yet (see the module's doc).
    Until then its ``_lazy`` slot holds the chunk and its ``key`` slot its index: one
    object and three slots each, made by the million (``client`` comes from the chunk)."""

    __slots__ = ()

    @property
    def client(self) -> "Client":  # type: ignore[override]
        chunk = _lazy_slot.__get__(self, Future)
        if chunk is None:       # (resolved by another thread since this was looked up)
            return _client_slot.__get__(self, Future)
        return chunk.map.client

    def _resolve(self) -> None:
        chunk = _lazy_slot.__get__(self, Future)
        if chunk is None:       # (resolved by another thread since this was looked up)
            return
        send_chunk(chunk)
        with chunk.map.client._lock:
            if type(self) is StreamedFuture:
                j = _key_slot.__get__(self, Future)
                if chunk.states is None:        # the client closed before it was sent
                    st = FutureState()
                    st.fail(ClosedClientError("the client was closed before this task "
                                              "was sent"))
                    _key_slot.__set__(self, f"{chunk.map.fname}-{unique_token()}")
                    _state_slot.__set__(self, st)
                else:
                    assert chunk.keys is not None
                    _key_slot.__set__(self, chunk.keys[j])
                    _state_slot.__set__(self, chunk.states[j])
                    chunk.keys[j] = chunk.states[j] = None
                _client_slot.__set__(self, chunk.map.client)
                _lazy_slot.__set__(self, None)
                self.__class__ = Future  # type: ignore[assignment]  # a plain Future now

    @property
    def key(self) -> str:  # type: ignore[override]
        self._resolve()
        return _key_slot.__get__(self, Future)

    @property
    def _state(self) -> FutureState:  # type: ignore[override]
        self._resolve()
        return _state_slot.__get__(self, Future)

    def _peek(self) -> FutureState | None:
        """The state if the chunk was sent (without waiting for it), else None."""
        chunk = _lazy_slot.__get__(self, Future)
        if chunk is None or chunk.sent:
            return self._state
        return None

    def done(self) -> bool:
        st = self._peek()
        return st is not None and st.done()

    def cancelled(self) -> bool:
        st = self._peek()
        return st is not None and st.status == "cancelled"

    @property
    def status(self) -> str:
        st = self._peek()
        return "pending" if st is None else st.status

    def __repr__(self) -> str:
        if self._peek() is None:
            return "<Future: status: pending, key: (not sent yet)>"
        return super().__repr__()

    def __del__(self) -> None:
        try:
            if not self._held:
                return
            client = self.client
            with client._lock:
                if type(self) is not StreamedFuture:     # resolved meanwhile
                    key, st = _key_slot.__get__(self, Future), _state_slot.__get__(self,
                                                                                   Future)
                else:
                    chunk = _lazy_slot.__get__(self, Future)
                    j = _key_slot.__get__(self, Future)
                    if not chunk.sent:     # never sent: nothing to release
                        if chunk.dropped is None:
                            chunk.dropped = set()
                        chunk.dropped.add(j)
                        return
                    if chunk.states is None or chunk.keys is None:    # (closed client)
                        return
                    key, st = chunk.keys[j], chunk.states[j]
                    chunk.keys[j] = chunk.states[j] = None
            client._release(key, st)
        except Exception:
            pass


class Sender:
    """One client's background sender of map chunks (a thread while it has work)."""

    def __init__(self, client: "Client") -> None:
        self.client = client
        self.queue: collections.deque[_Chunk] = collections.deque()
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.holding: str | None = None     # what it waits for: "connection" or "window"

    def add(self, chunks: list[_Chunk]) -> None:
        with self.cond:
            self.queue.extend(chunks)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, daemon=True,
                                               name="tasknest-map-sender")
                self.thread.start()

    def _run(self) -> None:
        while True:
            with self.cond:
                if not self.queue:
                    self.thread = None
                    return
                chunk = self.queue.popleft()
            if chunk.sent:
                continue
            try:
                self._hold_back(chunk.map)
            finally:
                self.holding = None
            try:
                send_chunk(chunk)
            except Exception:      # a bug: the chunk's futures send it when asked
                log.exception("map sender failed")
            comm = self.client._comm
            if comm is not None:
                comm.wake()         # this thread writes the frame, not the event loop

    def _hold_back(self, mp: MapCall) -> None:
        """Backpressure: wait while the connection holds more than UNSENT_BOUND bytes,
        while the map has IN_FLIGHT tasks sent and not settled (the cluster then holds
        only so many of its tasks: the scheduler's records, the workers' queues and this
        client's recipes, not the whole map at once), and while the client reconnects to
        a restarted scheduler (what is sent meanwhile is only kept, to be sent again).
        A future asked for sends its chunk at once, whatever the window."""
        client = self.client
        while True:
            status = client.status
            if status == "reconnecting":
                with self.cond:
                    self.cond.wait(RECONNECT_POLL)
                continue
            comm = client._comm
            if comm is None or comm.closed or status != "running":
                return
            if comm.unsent() > UNSENT_BOUND:
                self.holding = "connection"
            elif mp.sent - mp.settled >= IN_FLIGHT:
                self.holding = "window"
            else:
                return
            with self.cond:
                self.cond.wait(POLL)


_seq_lock = threading.Lock()


def stream_map(client: "Client", func: Callable, fbytes: bytes, items: Sequence, single: bool,
               kwargs: dict, keys: Any, prefix: str | None, pure: bool, priority: Any,
               seq: Any, retries: int, workers: list | None, resources: dict | None,
               loose: bool, chunk: int) -> list[Future]:
    """map() over ``items`` (more than one chunk; each the argument itself if
    ``single``, else a tuple of them): the first chunk is sent before this returns,
    the rest by the client's sender; a StreamedFuture for every item."""
    n = len(items)
    # n consecutive priorities, taken in one C call: FIFO order as if submitted now
    last = next(itertools.islice(seq, n - 1, None))
    mp = MapCall(client, func, fbytes, kwargs, keys, prefix, pure, priority, client._depth(),
              last - n + 1, retries, workers, resources, loose, single)
    chunks = [_Chunk(mp, s, items[s:s + chunk]) for s in range(0, n, chunk)]
    del items
    send_chunk(chunks[0], raise_errors=True)      # bad arguments raise here
    out: list[Future] = []
    append, new, set_index = out.append, StreamedFuture.__new__, _key_slot.__set__
    for c in chunks:
        for j in range(min(chunk, n - c.start)):
            f = new(StreamedFuture)
            f._held = True
            f._lazy = c
            set_index(f, j)
            append(f)
    # the sender starts once the futures are made: it would slow this thread down, and
    # the first chunk keeps the workers busy meanwhile
    sender = getattr(client, "_sender", None)
    if sender is None:
        sender = client._sender = Sender(client)
    sender.add(chunks[1:])
    return out
