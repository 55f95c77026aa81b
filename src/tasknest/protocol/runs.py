"""Runs: adjacent messages of one op in a frame, sent as columns.

A map moves thousands of ``submit``, ``compute``, ``task-finished`` and
``key-memory`` messages in a row, and a frame of them as rows repeats the op and
the array around every message: msgpack then makes an op string and a list per
message, and the decoder checks each field of each one. As a run they travel as

    ["*", op, [field-1 of each], [field-2 of each], ...]

The receiver checks every column once, with its field's check, and builds the
messages from the columns, in order. Only the wire changes: each message still
reaches its handler on its own, with its own rules checked.
"""
from __future__ import annotations

from itertools import repeat
from typing import Any

from ..errors import ProtocolError
from .messages import ANY, CATALOGUE, RULES, Check, Message

RUN = "*"                  # (no op of the catalogue)
# the ops that come in runs (a receiver refuses a run of any other)
RUN_OPS = frozenset({"submit", "compute", "task-finished", "key-memory"})
MAX_RUN = 1 << 20          # messages in one run
assert RUN not in CATALOGUE


def columns(rows: list[list]) -> list:
    """The wire form of encoded messages of one op (each ``[op, field, ...]``)."""
    cols = list(zip(*rows))       # (tuples pack as arrays)
    cols[0] = rows[0][0]          # the op, once
    return [RUN, *cols]


def decode(raw: list) -> list[Message]:
    """The messages of a run, each field checked as ``decode`` checks it."""
    if len(raw) < 2 or type(raw[1]) is not str:
        raise ProtocolError("run: no op")
    op = raw[1]
    if op not in RUN_OPS:
        raise ProtocolError(f"run: {op[:40]!r} cannot come in runs")
    cls = CATALOGUE[op]
    cols = raw[2:]
    if len(cols) != len(cls.fields):
        raise ProtocolError(f"run of {op}: expected {len(cls.fields)} columns, got {len(cols)}")
    n = len(cols[0]) if cols and type(cols[0]) is list else -1
    if not 0 < n <= MAX_RUN:
        raise ProtocolError(f"run of {op}: a run holds 1 to {MAX_RUN} messages")
    for name, typ, col in zip(cls.fields, cls.types, cols):
        if type(col) is not list or len(col) != n:
            raise ProtocolError(f"run of {op}: column '{name}' is not a list of {n}")
        if typ is ANY:
            continue
        ok = all(map(typ.fn, col)) if type(typ) is Check else all(map(isinstance, col,
                                                                        repeat(typ)))
        if not ok:
            raise ProtocolError(f"run of {op}: field '{name}' fails its check "
                                f"({typ.name if type(typ) is Check else typ})")
    msgs = list(map(cls, *cols))
    rule = RULES.get(op)
    if rule is not None:
        for msg in msgs:
            problem = rule(msg)
            if problem:
                raise ProtocolError(f"{op}: {problem}")
    return msgs
