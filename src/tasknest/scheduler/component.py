"""What SchedulerState expects of a component: an object that owns its own records,
registers the message ops it handles (``state.register``) and hears of these events.
A component overrides the hooks it needs."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .state import SchedulerState


class Component:
    def __init__(self, state: "SchedulerState") -> None:
        self.state = state
        state.components.append(self)

    def source_gone(self, source: str) -> None:
        """A client or worker left (called before the state forgets it)."""

    def worker_added(self, wid: str) -> None:
        """A worker joined."""

    def validate(self) -> None:
        """Raise AssertionError if its records contradict the state's."""
