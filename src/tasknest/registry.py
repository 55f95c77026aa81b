"""What calls without an explicit client or worker use: the default client, the clients
alive in this process, and the task running in this thread or asyncio task.

A leaf: the client sets the default, the worker's shell binds its own client when no
user client exists (so futures unpickled there have a client), and the worker's task
context sets both ContextVars while a task runs.
"""
from __future__ import annotations

import contextvars
import weakref
from typing import TYPE_CHECKING

from .errors import CallerError

if TYPE_CHECKING:
    from .client.client import Client
    from .worker.context import TaskContext

# set while a task runs (thread or asyncio task): the worker's own client, and the task
current_client: "contextvars.ContextVar[Client | None]" = contextvars.ContextVar(
    "tasknest_client", default=None)
current_task: "contextvars.ContextVar[TaskContext | None]" = contextvars.ContextVar(
    "tasknest_task", default=None)

clients: "weakref.WeakSet[Client]" = weakref.WeakSet()    # every client started here
_default: "weakref.ref[Client] | None" = None


def default_client() -> "Client":
    """The client that calls without one use.

    Returns:
        Inside a task, its worker's client; else the last client started with
        ``set_as_default=True`` that is still open.

    Raises:
        CallerError: there is no such client.
    """
    c = current_client.get()
    if c is not None:
        return c
    c = _default() if _default is not None else None
    if c is None or c.status == "closed":
        raise CallerError("no running tasknest Client: create one with Client() first")
    return c


def set_default(client: "Client", only_if_unset: bool = False) -> None:
    """Make ``client`` the default (with ``only_if_unset``: unless one was ever set)."""
    global _default
    if only_if_unset and _default is not None:
        return
    _default = weakref.ref(client)
