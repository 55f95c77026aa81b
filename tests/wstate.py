"""Helpers of the WorkerState tests: events as the shell would send them, each followed
by ``validate()``, and what their actions say."""
from __future__ import annotations

from tasknest.protocol import messages as m
from tasknest.worker.actions import Action, Send
from tasknest.worker.state import WorkerState

ME = "tcp://127.0.0.1:9001"
PEER = "tcp://127.0.0.1:9002"


def sent(actions: list[Action], op: str | None = None) -> list[m.Message]:
    return [a.msg for a in actions if isinstance(a, Send) and (op is None or a.msg.op == op)]


def kinds(actions: list[Action], kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def prio(depth: int, seq: int, user: int = 0) -> list:
    return [user, depth, seq]


def compute(ws: WorkerState, key: str, deps: dict | None = None, depth: int = 0, seq: int = 0,
            retries: int = 0) -> list:
    out = ws.handle(m.Compute(key=key, func=1, args=b"", deps=deps or {}, priority=prio(depth,
                              seq), retries=retries, notify=[], attempt=0))
    ws.validate()
    return out


def run(ws: WorkerState, key: str) -> None:
    t = ws.pop_ready()
    assert t is not None and t.key == key, (t, key)
    ws.validate()


def finish(ws: WorkerState, key: str, inner: list[str] | None = None) -> list:
    out = ws.finished(key, 8, "int", None, inner or [])
    ws.validate()
    return out
