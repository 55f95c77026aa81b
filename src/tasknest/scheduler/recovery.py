"""Recovery: a restarted scheduler learns the facts again from those who hold them.

The journal gave back the intents (intents.py): every task released, every
holder wanting what it wanted. Then:

* each worker registers again and sends ``resume``: the results it holds, the
  tasks queued or running on it (with the compute number they answer), the keys
  its in-task client holds. Results become ``memory`` there, tasks
  ``processing`` there, as compute number n: its report is taken as usual.
  A task two workers report (a steal or a claim race the old scheduler had not
  settled) is kept by the first; the other is told to let go. A claim (compute 0)
  is confirmed: the old scheduler may never have read it. A task whose inputs
  nobody has named yet is kept aside until a later resume names them (or recovery
  settles: then it errs, its inputs lost).
* ``settle()`` ends recovery, once every worker the journal knew has resumed (or
  the wait ran out): the holders of workers that did not come back let go, and
  whatever is still wanted and neither held nor running is computed again. Until
  then nothing resumed is dropped and no key is declared unknown: a task a client
  placed on a worker, which the old scheduler never heard of, is named only by
  that worker's resume, and the worker whose task wants it may resume first. Such
  records are held (wanted by HOLDER) until every client the journal knew has sent
  ``holding``, or the shell's grace period ends: their client may come back last.
* a client that comes back sends ``holding``: the keys it holds futures on,
  which replace what the journal said it wanted (releases it sent while the
  scheduler was away are thereby applied).

A component of SchedulerState: pure, the shell decides when recovery ends.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..protocol import messages as m
from .records import CLAIMED, Task

if TYPE_CHECKING:
    from .state import SchedulerState

HOLDER = "~recovery"     # holds resumed records the journal never knew, for their clients


class Recovery:
    def __init__(self, state: "SchedulerState") -> None:
        self.state = state
        self.pending = False        # recovering: tasks are not (re)assigned yet
        # tasks workers resumed whose inputs nobody has named yet: another worker's
        # resume (or a later entry of the same one) may still make them known
        self.parked: list[tuple[str, list, set[str]]] = []
        # what a worker's in-task client wants that nobody has named yet: a worker that
        # resumes later may hold or run it (a task placed there that the old scheduler
        # never heard of); answered at settle
        self.unknown: list[tuple[str, str]] = []
        # records resumed that the journal never knew (a task a client placed straight
        # on a worker, its result): the client that wants them may come back after the
        # worker did, so they are held (wanted by HOLDER) until every client the journal
        # knew has said what it holds (``holding``), or the shell's grace period ends
        self.clients_due: set[str] = set()
        state.register("resume", self._on_resume)
        state.register("holding", self._on_holding)

    # -- workers ---------------------------------------------------------------------------
    def _on_resume(self, wid: str, msg: m.Resume) -> None:
        st = self.state
        ws = st.workers.get(wid)
        if ws is None:
            return
        wants = set(msg.wants)
        free: list[str] = []
        for key, nbytes, type_name in zip(msg.memory, msg.nbytes, msg.kinds):
            ts = st.tasks.get(key)
            if ts is None:
                if key not in wants and not self._holding_orphans():
                    free.append(key)        # nobody holds it any more
                    continue
                ts = st.tasks[key] = Task(key, None, None, [], [0, 0, 0])  # (no recipe)
                if key not in wants:
                    self._hold(ts)
            if ts.state == "erred":
                free.append(key)
            elif ts.state == "processing":  # running elsewhere too: the result is here
                st._task_done(ts, ws, nbytes, type_name, None, [], [])
            else:
                ts.nbytes, ts.type = nbytes, type_name
                st._add_replica(ts, ws)
                if ts.state != "memory":
                    ts.state = "memory"
                    ts.waiting_on.clear()
                    if not self.pending:
                        st._memory_reached(ts, wid)
                    else:               # (tasks resumed earlier waited on it: no more)
                        for dk in ts.dependents:
                            dts = st.tasks.get(dk)
                            if dts is not None:
                                dts.waiting_on.discard(key)
        if free:
            st._emit(wid, m.Free(free))
        self._place_parked([*self.parked, *((wid, e, wants) for e in msg.tasks)])
        if not self.pending:
            self._fail_parked()
        parked = {e[0] for _, e, _ in self.parked}
        for key in msg.wants:
            ts = st.tasks.get(key)
            if ts is None:
                if key in parked:           # (one kept aside is wanted once taken up)
                    continue
                if self.pending:            # another worker's resume may name it
                    self.unknown.append((wid, key))
                else:
                    st._emit(wid, m.Unknown(key))      # its future claims the task anew
                continue
            st._want(ts, wid)
            if not self.pending:
                if ts.state == "released":
                    st._recompute(ts)
                else:
                    st._report(ts, wid)

    def _place_parked(self, parked: list) -> None:
        """Take up every resumed task whose inputs are known, in as many rounds as it
        takes (an entry may name inputs that later entries make known); keep the rest."""
        st = self.state
        while parked:
            rest = []
            for wid, entry, wants in parked:
                ws = st.workers.get(wid)
                if ws is None:
                    continue            # its worker left meanwhile
                if entry[0] in st.tasks or all(d in st.tasks for d in entry[4]):
                    self._resume_task(ws, entry, wants)
                    if entry[0] in wants:
                        st._want(st.tasks[entry[0]], wid)
                else:
                    rest.append((wid, entry, wants))
            if len(rest) == len(parked):
                break
            parked = rest
        self.parked = parked

    def _fail_parked(self) -> None:
        """Resumed tasks whose inputs nobody knows: they cannot be placed."""
        st = self.state
        parked, self.parked = self.parked, []
        for wid, entry, _ in parked:
            if wid not in st.workers:
                continue
            key, attempt, deps = entry[0], entry[1], entry[4]
            st._emit(wid, m.ClaimRejected(key) if attempt == CLAIMED else m.Free([key]))
            missing = [d for d in deps if d not in st.tasks]
            st._emit(wid, m.KeyErred(key, [], f"dependencies {missing} of {key} were "
                                     "lost with the scheduler", "lost"))

    def _resume_task(self, ws: Any, entry: Any, wants: set[str]) -> None:
        st = self.state
        key, attempt, func, args, deps, priority, retries = entry
        ts = st.tasks.get(key)
        if ts is None:
            ts = st._new_task(key, func, args, deps, priority, retries, None)
            assert ts is not None       # (its inputs are known: _place_parked)
            if key not in wants and self._holding_orphans():
                self._hold(ts)
        if ts.state in ("released", "waiting"):
            if ts.func is None:
                ts.func, ts.args = func, args
            st.unrunnable.pop(ts.key, None)
            st._set_processing(ts, ws)
            ts.attempt = attempt
            ts.waiting_on = {d for d in ts.deps if st.tasks[d].state != "memory"}
            if attempt == CLAIMED:            # a claim perhaps never confirmed: it is now
                st._emit(ws.id, m.ClaimAccepted([key]))
            if not self.pending:
                self._inputs(ts)
        elif ts.state == "processing" and ts.processing_on == ws.id:
            if attempt == CLAIMED:
                st._emit(ws.id, m.ClaimAccepted([key]))
        else:                           # it runs, or ran, elsewhere: this copy goes
            st._emit(ws.id, m.ClaimRejected(key) if attempt == CLAIMED else m.Free([key]))
            if key in wants:
                st._want(ts, ws.id)
                st._report(ts, ws.id)

    def _inputs(self, ts: Task) -> None:
        """A task running on a worker again: inputs lost meanwhile are recomputed, and
        the worker hears where the others live."""
        st = self.state
        for dk in ts.deps:
            dts = st.tasks[dk]
            if dts.state == "released":
                st._recompute(dts)
            elif dts.state == "memory" and ts.processing_on is not None \
                    and ts.processing_on not in dts.who_has:
                st._emit(ts.processing_on, st._key_memory(dts, inline=False))

    def _holding_orphans(self) -> bool:
        return self.pending or bool(self.clients_due)

    def _hold(self, ts: Task) -> None:
        self.state._want(ts, HOLDER)

    @property
    def orphans(self) -> set[str]:
        """The keys held for clients still due."""
        return self.state.clients.get(HOLDER, set())

    def release_orphans(self) -> list:
        """Every client the journal knew has said what it holds (or the grace period
        ended): what was held for them and nobody wants is dropped."""
        self._release()
        return self.state._flush()

    def _release(self) -> None:
        self.clients_due.clear()
        self.state._drop_client(HOLDER)      # (a holder gone: what only it wanted goes)

    # -- clients ---------------------------------------------------------------------------
    def _on_holding(self, cid: str, msg: m.Holding) -> None:
        st = self.state
        keys = set(msg.keys)
        for key in list(st.clients.get(cid, ())):
            if key not in keys:
                ts = st.tasks.get(key)
                if ts is not None:
                    st._unwant(ts, cid)
                    st._maybe_release(ts)
        st.clients.setdefault(cid, set())
        for key in msg.keys:
            ts = st.tasks.get(key)
            if ts is None:
                st._emit(cid, m.KeyErred(key, [], f"{key} was lost with the scheduler (its "
                                         "recipe and result are gone)", "lost"))
                continue
            st._want(ts, cid)
            if ts.state == "released":
                st._recompute(ts)
            else:
                st._report(ts, cid)
        if cid in self.clients_due:
            self.clients_due.discard(cid)
            if not self.clients_due and not self.pending:
                self._release()

    # -- the end of recovery -------------------------------------------------------------------
    def settle(self) -> list:
        """Every worker that will come back has: run what is wanted and nowhere."""
        st = self.state
        self.pending = False
        self._place_parked(self.parked)
        self._fail_parked()
        unknown, self.unknown = self.unknown, []
        for wid, key in unknown:
            if wid in st.workers:
                ts = st.tasks.get(key)
                if ts is None:
                    st._emit(wid, m.Unknown(key))      # nobody has it: claim it anew
                else:
                    st._want(ts, wid)                  # told below, or when it is done
        for holder in [h for h in st.clients if h[:2] in ("w-", "!w")
                       and h.lstrip("!") not in st.workers]:
            st._drop_client(holder)
        for ts in list(st.tasks.values()):
            if st.tasks.get(ts.key) is not ts:
                continue
            if ts.state == "processing":
                self._inputs(ts)
            elif ts.state == "memory":
                for dk in list(ts.dependents):
                    dts = st.tasks.get(dk)
                    if dts is not None and dts.state == "processing" \
                            and dts.processing_on is not None \
                            and dts.processing_on not in ts.who_has:
                        st._emit(dts.processing_on, st._key_memory(ts, inline=False))
        for ts in list(st.tasks.values()):
            if st.tasks.get(ts.key) is not ts or ts.state != "released":
                continue
            if st._needed(ts):
                st._recompute(ts)
            else:
                st._maybe_release(ts)
        for cid, keys in st.clients.items():     # what finished while we were away
            if cid[:2] == "w-":
                for key in keys:
                    ts = st.tasks[key]
                    if ts.state in ("memory", "erred"):
                        st._report(ts, cid)
        return st._flush()
