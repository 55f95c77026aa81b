"""Many real workers on one small machine: several ``Worker`` instances per process.

Each instance is the real ``tasknest.worker.server.Worker`` (its own thread pool,
listener and connection to the scheduler, speaking the real protocol); a process
runs ``--instances`` of them in one event loop, so 500 workers cost a few
processes instead of 500 interpreters.

    python -m benchmarks.fleet ADDRESS --instances 100 [--name-prefix p]

prints ``ready`` once every instance has joined, then runs until stdin closes
(or SIGTERM), and closes its workers politely (they say goodbye).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from tasknest.worker.server import Worker


async def run_fleet(address: str, instances: int, prefix: str, token: str | None,
                    stop: asyncio.Event, ready: Any = None) -> list[Worker]:
    workers = [Worker(address, nthreads=1, name=f"{prefix}-{i}", token=token)
               for i in range(instances)]
    for w in workers:     # one at a time: a burst of 100 handshakes helps nobody
        await w.start()
    if ready is not None:
        ready()
    await stop.wait()
    await asyncio.gather(*(w.close("fleet stopped") for w in workers), return_exceptions=True)
    return workers


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("address")
    ap.add_argument("--instances", type=int, default=100)
    ap.add_argument("--name-prefix", default=f"fleet{os.getpid()}")
    args = ap.parse_args(argv)
    threading.stack_size(1024 * 1024)   # (pool threads of tiny tasks: no deep nesting here)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def on_stdin_closed() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)
    threading.Thread(target=on_stdin_closed, daemon=True).start()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.run_until_complete(run_fleet(args.address, args.instances, args.name_prefix,
                                      os.environ.get("TASKNEST_TOKEN"), stop,
                                      lambda: print("ready", flush=True)))


def start_fleet(address: str, token: str, instances: int, per_process: int = 100,
                timeout: float = 120.0) -> list[subprocess.Popen]:
    """Start ``instances`` workers in processes of ``per_process`` each; returns the
    processes once all are ready (close their stdin to stop them)."""
    env = dict(os.environ, TASKNEST_TOKEN=token)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    procs = []
    left = instances
    while left > 0:
        k = min(per_process, left)
        left -= k
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fleet", address, "--instances", str(k),
             "--name-prefix", f"fleet{len(procs)}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env))
    for p in procs:
        line = p.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != b"ready":
            stop_fleet(procs)
            raise RuntimeError(f"a fleet process failed to start ({line!r})")
    return procs


def stop_fleet(procs: list[subprocess.Popen], timeout: float = 60.0) -> None:
    for p in procs:
        try:
            p.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
