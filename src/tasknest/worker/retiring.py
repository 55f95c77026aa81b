"""A worker's part in graceful retirement (see scheduler/retirement.py).

* ``replicate``: the scheduler asks this worker to copy results a retiring worker
  alone holds; they are fetched from it like any dependency and kept as owned data
  (``replicated`` says which arrived, so the scheduler counts this copy).
* ``retire``: SIGTERM, ``--lifetime`` or a batch job's walltime asks the scheduler
  to retire this worker; it then drains and is told to close. A scheduler that is
  gone, or that never answers within the timeout (plus a margin), ends it anyway.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..errors import SerializationError
from ..protocol import messages as m
from ..protocol.serialize import loads_value, nbytes

if TYPE_CHECKING:
    from .server import Worker

log = logging.getLogger("tasknest.worker")

MARGIN = 10.0     # seconds a retiring worker waits beyond its timeout for the scheduler


async def replicate(worker: "Worker", msg: Any) -> None:
    keys, source = msg.keys, msg.source
    got: dict[str, Any] = {}
    try:
        got = await worker.peers.get_data(source, keys)  # type: ignore[union-attr]
    except Exception as exc:
        log.info("copying %d keys from retiring worker %s failed: %s", len(keys), source, exc)
    stored, sizes = [], []
    values = []
    for key in keys:
        frames = got.get(key)
        if frames is None:
            continue
        try:
            values.append(loads_value(frames))
        except SerializationError as exc:
            log.warning("cannot unpickle %s from %s: %s", key, source, exc)
            continue
        stored.append(key)
        sizes.append(nbytes(frames))
    with worker.lock:
        for k, v in zip(stored, values):
            worker.data[k] = v
        done = worker.apply(worker.state.put_data(stored, sizes))
    worker.send(m.Replicated(msg.rid, stored, sizes))
    worker.settle(done)


async def retire(worker: "Worker", timeout: float, reason: str) -> None:
    """Ask to be retired; close when told to (or when nobody answers)."""
    if worker.closing:
        return
    if worker.retiring:     # (a batch system may signal both the nanny and the worker)
        return
    worker.retiring = True
    comm = worker.comm
    if comm is None or comm.closed:
        await worker.close(reason)
        return
    log.info("worker %s retiring: %s (draining for up to %g s)", worker.name, reason, timeout)
    worker.send(m.Retire(0, [], max(1, int(timeout * 1000))), now=True)
    try:
        await asyncio.wait_for(worker.finished.wait(), timeout + MARGIN)
    except asyncio.TimeoutError:
        await worker.close(f"{reason}: the scheduler did not retire it within "
                           f"{timeout + MARGIN:g} s")
