"""``tasknest.progress(futures)``: a progress bar, in a terminal or a notebook.

tqdm draws it (tqdm.auto picks a notebook widget when there is one): it is small, has
no dependencies and is what most Python users already have; rich would bring a whole
terminal toolkit for one bar. On a stream that is not a terminal (a log file, CI) a
bar redrawn with carriage returns is noise, so there a plain line is printed at most
every ``interval`` seconds, and once at the end.
``nested=True`` counts the whole spawn tree under the futures (as the scheduler knows
it so far: the total grows while tasks launch tasks).
"""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from .registry import default_client
from .client.future import flatten_futures


def progress(*futures: Any, nested: bool = False, file: TextIO | None = None,
             interval: float = 0.5, timeout: float | None = None) -> None:
    """Show the progress of these futures (lists and dicts of them too) until all are done.

    Args:
        futures: futures, or lists and dicts of them.
        nested: count the tasks they launch from inside too (the whole tree).
        file: where to draw (stderr by default; a plain line per update if not a terminal).
        interval: seconds between updates.
        timeout: give up after this many seconds.
    """
    from tqdm import tqdm as plain_tqdm
    from tqdm.auto import tqdm
    futs = flatten_futures(list(futures))
    out = file if file is not None else sys.stderr
    client = futs[0].client if futs and hasattr(futs[0], "client") else default_client()
    keys = [f.key for f in futs]
    terminal = bool(getattr(out, "isatty", lambda: False)())

    def counts() -> tuple[int, int]:
        done = sum(1 for f in futs if f.done())
        if not nested:
            return len(futs), done
        total, finished = client._query("tree_progress", keys)
        if done == len(futs):
            finished = total
        return max(total, len(futs)), finished

    deadline = None if timeout is None else time.monotonic() + timeout
    start = time.monotonic()
    total, done = counts()
    bar = tqdm(total=total, file=out, unit="task") if terminal or file is None and \
        "ipykernel" in sys.modules else None
    last_line = -1.0
    try:
        while True:
            finished = done >= total and all(f.done() for f in futs)
            if bar is not None:
                bar.total = total
                bar.n = done
                bar.refresh()
            elif finished or time.monotonic() - last_line >= interval:
                last_line = time.monotonic()
                out.write(plain_tqdm.format_meter(done, total, last_line - start,
                                                  unit="task", ncols=80) + "\n")
                out.flush()
            if finished:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"progress: not done within {timeout} s")
            _wait_any(futs, interval)
            total, done = counts()
    finally:
        if bar is not None:
            bar.close()


def _wait_any(futs: list, interval: float) -> None:
    """Until something changes, at most ``interval`` seconds."""
    from .client.future import wait
    pending = [f for f in futs if not f.done()]
    if pending:
        try:
            wait(pending, timeout=interval, return_when="FIRST_COMPLETED")
        except Exception:
            pass
    else:
        time.sleep(interval)
