"""What a worker tells a restarted scheduler about itself (its ``resume``).

The worker carried on while the scheduler was away: its tasks ran, their
results stayed, tasks launched from tasks were queued here. Rather than replay
every message the old scheduler may or may not have read, the worker states
where it stands now, which sums them all up: the results it holds, the tasks
queued or running here (with the compute number each answers), and the keys its
in-task client holds futures on. Tasks a client placed here that the old
scheduler may never have confirmed count as tasks claimed here (compute 0): the
new scheduler never heard of those places.
"""
from __future__ import annotations

from typing import Any

from .state import WorkerState

# (a claim waiting for the scheduler's word counts: the old one may never have read it)
RUNS = ("waiting", "confirming", "ready", "executing")


def inventory(st: WorkerState, wants: list[str]) -> tuple[list, list, list, list, list]:
    """(memory keys, their sizes, their types, tasks, wants) for ``m.Resume`` (the
    worker's lock held)."""
    for t in st.tasks.values():
        if t.placers or t.attempt == -1:
            t.placers = ()
            if t.attempt == -1:
                t.attempt = 0
                t.held = None
    st.placing.clear()
    st.idle_reported = False
    memory, sizes, types, tasks = [], [], [], []
    for key, t in st.tasks.items():
        if t.state == "memory" and t.owned:
            memory.append(key)
            sizes.append(t.nbytes)
            types.append(t.type)
        elif t.state in RUNS and t.recipe is not None:
            func, args, retries = t.recipe
            tasks.append([key, t.attempt, func, args, list(t.deps), _priority(t.priority),
                          retries])
    return memory, sizes, types, tasks, wants


def _priority(heap: Any) -> list:
    user, depth, seq = (list(heap) + [0, 0, 0])[:3]
    return [-user, -depth, seq]
