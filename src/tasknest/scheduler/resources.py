"""Resources (``resources={"GPU": 1}``): what a worker has, what its tasks hold.

A task that asks for resources holds them on its worker while it is processing
there (from assignment to its end); it goes to a worker whose free amount covers
the request, else it waits among the unrunnable tasks, tried again after each
event. Such tasks are never stolen.
"""
from __future__ import annotations

from typing import Any

from .records import Task


def free_for(tasks: dict[str, Task], ts: Task, workers: Any) -> list:
    """Those of ``workers`` with the task's resources free now."""
    need = ts.resources or {}
    out = []
    for w in workers:
        used: dict = {}
        for k in w.processing:
            r = tasks[k].resources
            if r:
                for name, n in r.items():
                    used[name] = used.get(name, 0) + n
        if all(w.resources.get(r, 0) - used.get(r, 0) >= n for r, n in need.items()):
            out.append(w)
    return out
