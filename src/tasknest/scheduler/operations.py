"""Functions run on the workers or the scheduler itself, outside any task
(``client.run``, ``run_on_scheduler``, worker plugins and uploaded files).

A component of SchedulerState: it owns its records and registers its handlers.
A ``run`` goes out as ``run-on`` to each chosen worker (or to the scheduler's own
shell, the target ``SCHEDULER``); their ``run-done`` answers are collected and
the client gets one ``reply`` ({address: [ok, frames]}). A worker that dies
meanwhile answers for itself with an error. A run that names a plugin is kept
and sent to every worker that joins later.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..memory import EMPTY
from ..protocol import messages as m

if TYPE_CHECKING:
    from .state import SchedulerState

SCHEDULER = "@scheduler"     # the shell runs these itself and answers as this source


class Operations:
    def __init__(self, state: "SchedulerState") -> None:
        self.state = state
        self.runs: dict[int, list] = {}      # our rid -> [client, its rid, pending, results]
        self.plugins: dict[str, bytes] = {}  # name -> its setup call, for workers to come
        self._rid = 0
        self.restarts: list[list] = []       # [client, rid, workers before, how many]
        state.register("restart", self._on_restart)
        state.register("run", self._on_run)
        state.register("run-done", self._on_run_done)
        state.components.append(self)

    def _address(self, source: str) -> str:
        ws = self.state.workers.get(source)
        return ws.address if ws is not None else "scheduler"

    def _on_run(self, cid: str, msg: m.Run) -> None:
        call, wanted, where, plugin = msg.call, msg.workers, msg.where, msg.plugin
        if where == "scheduler":
            targets = [SCHEDULER]
        elif where == "workers":
            targets = [w.id for w in self.state.workers.values()
                       if not wanted or w.address in wanted or w.name in wanted]
        else:
            self.state._emit(cid, m.Reply(msg.rid, None, f"cannot run on {where!r}"))
            return
        if plugin:
            self.plugins[plugin] = call
        if not targets:
            self.state._emit(cid, m.Reply(msg.rid, {}, None))
            return
        self._rid += 1
        self.runs[self._rid] = [cid, msg.rid, set(targets), {}]
        for t in targets:
            self.state._emit(t, m.RunOn(self._rid, call))

    def _on_run_done(self, source: str, msg: m.RunDone) -> None:
        self._answered(source, msg.rid, [msg.ok, msg.value])

    def _answered(self, source: str, rid: int, result: list) -> None:
        entry = self.runs.get(rid)
        if entry is None or source not in entry[2]:
            return
        entry[2].discard(source)
        entry[3][self._address(source)] = result
        if not entry[2]:
            del self.runs[rid]
            if entry[0] in self.state.clients:
                self.state._emit(entry[0], m.Reply(entry[1], entry[3], None))

    # -- restart: every task errs, every worker is asked to exit (its nanny restarts it) --
    def _on_restart(self, cid: str, msg: m.Restart) -> None:
        st = self.state
        for ts in list(st.tasks.values()):
            if st.tasks.get(ts.key) is not ts or ts.state == "erred":
                continue
            for wid in ts.who_has:
                st.workers[wid].has_what.discard(ts.key)
            ts.who_has = EMPTY
            ts.value = None
            if ts.state == "memory":
                ts.state = "released"
            st._err(ts, [], f"the cluster was restarted (client.restart()): {ts.key} is lost; "
                            "submit it again", "restarted")
        for wid in st.workers:
            st._emit(wid, m.Close("restart requested"))
        if st.workers:
            self.restarts.append([cid, msg.rid, set(st.workers), len(st.workers)])
        else:
            st._emit(cid, m.Reply(msg.rid, 0, None))

    def source_gone(self, source: str) -> None:
        self.restarts = [r for r in self.restarts if r[0] != source]
        if source not in self.state.workers:
            return
        for rid in [r for r, e in self.runs.items() if source in e[2]]:
            self._answered(source, rid, [False, []])     # (no frames: the worker died)

    def worker_added(self, wid: str) -> None:
        for entry in list(self.restarts):
            if wid not in entry[2]:
                entry[3] -= 1
                if entry[3] <= 0:
                    self.restarts.remove(entry)
                    self.state._emit(entry[0], m.Reply(entry[1], len(entry[2]), None))
        for call in self.plugins.values():
            self.state._emit(wid, m.RunOn(0, call))      # (rid 0: nobody waits for it)

    def validate(self) -> None:
        for rid, (_, _, pending, _) in self.runs.items():
            assert pending, rid
            for t in pending:
                assert t == SCHEDULER or t in self.state.workers, (rid, t)
