"""What tasks printed or logged, shown at the client that submitted them.

Each line is prefixed with the function and the worker; a line that repeats the one
before it is counted instead of printed again (say, a thousand children printing
the same progress line), and the count shows when a different line arrives.
"""
from __future__ import annotations

import sys
import threading
from typing import Any, TextIO


class OutputPrinter:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._last: tuple | None = None
        self._repeats = 0
        self._lock = threading.Lock()

    def show(self, lines: list[list[Any]]) -> None:
        out = self.stream or sys.stdout
        text = []
        with self._lock:
            for func, worker, _key, stream, line in lines:
                what = (func, worker, stream, line)
                if what == self._last:
                    self._repeats += 1
                    continue
                text.extend(self._flush_repeats())
                self._last = what
                tag = "" if stream == "stdout" else f" {stream}"
                text.append(f"({func} on {worker}{tag}) {line}\n")
        if text:
            try:
                out.write("".join(text))
                out.flush()
            except (ValueError, OSError):      # (the stream was closed: nothing to do)
                pass

    def _flush_repeats(self) -> list[str]:
        if not self._repeats:
            return []
        n, self._repeats = self._repeats, 0
        return [f"  (the line above repeated {n} more time{'s' if n > 1 else ''})\n"]

    def close(self) -> None:
        with self._lock:
            text = self._flush_repeats()
        if text:
            try:
                (self.stream or sys.stdout).write("".join(text))
            except (ValueError, OSError):
                pass
