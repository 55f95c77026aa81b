"""Command line: ``tasknest scheduler``, ``tasknest worker ADDRESS``, ``tasknest demo``.

A scheduler and a worker each print their address as the first line of stdout
(LocalCluster reads it), then run until SIGINT or SIGTERM.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import socket
import sys
from typing import Any

from ..protocol.auth import new_token
from ..errors import CallerError
from ..dashboard import serve_dashboard
from ..sizes import parse_size
from .security import Security

log = logging.getLogger("tasknest")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def parse_resources(text: str) -> dict[str, float]:
    """ "GPU=2,MEM=16e9" -> {"GPU": 2.0, "MEM": 16e9}"""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, eq, amount = part.partition("=")
        try:
            value = float(amount)
        except ValueError:
            value = -1.0
        if not eq or not name.strip() or value < 0:
            raise CallerError(f"--resources: {part!r} is not NAME=AMOUNT (a non-negative number)")
        out[name.strip()] = value
    return out


def _positive_size(text: str) -> int:
    try:
        n = parse_size(text)
    except ValueError:
        n = 0
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive size like 64MiB, got {text!r}")
    return n


def _token(args: argparse.Namespace) -> str | None:
    if getattr(args, "insecure", False):
        return None
    if args.token:
        return args.token
    if args.token_file:
        with open(args.token_file) as f:
            token = f.read().strip()
        if not token:   # never fall back to running open because a file was empty
            raise SystemExit(f"tasknest: the token file {args.token_file} is empty")
        return token
    return os.environ.get("TASKNEST_TOKEN") or None


def _security(args: argparse.Namespace) -> Security | None:
    if args.tls_cert or args.tls_key or args.tls_ca:
        if not (args.tls_cert and args.tls_key):
            raise SystemExit("tasknest: --tls-cert and --tls-key go together")
        return Security(args.tls_cert, args.tls_key, args.tls_ca)
    return None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token", help="shared secret (else $TASKNEST_TOKEN or --token-file)")
    p.add_argument("--token-file", help="file holding the shared secret")
    p.add_argument("--tls-cert", help="TLS certificate (PEM)")
    p.add_argument("--tls-key", help="TLS private key (PEM)")
    p.add_argument("--tls-ca", help="CA certificate(s) to verify peers (PEM)")
    p.add_argument("--log-level", default=None)


GC_THRESHOLD = 20_000    # allocations between collections of the youngest generation


def _tune_gc() -> None:
    """For the scheduler and workers (never a user's process): their records and
    messages are containers that hold strings, not each other, so the cyclic
    collector finds little, yet by default it walks the young objects every 700
    allocations, and a scheduler allocates several per task (a flat map ran 15-25%
    faster without that). Collect 30 times less often, and leave what start-up made
    (modules, classes) out of full collections."""
    import gc
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 10, 10)


def run_loop(main: Any) -> int:
    _tune_gc()
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        loop.close()


async def _watch_parent(stop: Any) -> None:
    """Exit with the process that started us (LocalCluster), if it asked."""
    parent = os.environ.get("TASKNEST_PARENT_PID")
    if not parent:
        return
    import psutil
    while True:
        await asyncio.sleep(1.0)
        if not psutil.pid_exists(int(parent)):
            await stop("parent process is gone")
            return


def _on_signals(stop: Any, on_term: Any = None) -> list[asyncio.Future]:
    """Stop on SIGINT/SIGTERM (SIGTERM calls ``on_term`` instead, if given: a worker
    retires); the list gets the stopping tasks, for main to await (a loop closed
    under one still running would complain)."""
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Future] = []
    def on_signal(sig: int) -> None:
        act = on_term if sig == signal.SIGTERM and on_term is not None else stop
        stopping.append(asyncio.ensure_future(act(f"received {signal.Signals(sig).name}")))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    return stopping


async def _lifetime(worker: Any, seconds: float, stagger: float, drain: float) -> None:
    """--lifetime: retire gracefully after this long (staggered, so that workers
    started together do not all leave at once)."""
    import random
    await asyncio.sleep(max(0.0, seconds - random.uniform(0, stagger)))
    await worker.retire(drain, f"its lifetime of {seconds:g} s is over")


# -- scheduler ---------------------------------------------------------------------------------
async def _scheduler_main(args: argparse.Namespace) -> int:
    from ..scheduler.server import Scheduler
    security = _security(args)
    token = _token(args)
    generated = False
    if token is None and not args.insecure:
        token, generated = new_token(), True
    if args.insecure and not _is_loopback(args.host):
        print(f"tasknest: warning: listening on {args.host} WITHOUT authentication "
              "(--insecure): anyone who can reach it can run code here", file=sys.stderr)
    from ..scheduler.journal import StateDirInUse
    try:
        sched = await Scheduler(args.host, args.port, token,
                                security and security.server_context(),
                                heartbeat_timeout=args.heartbeat_timeout,
                                allowed_failures=args.allowed_failures,
                                max_frame=args.max_frame_size, state_dir=args.state_dir,
                                recovery_wait=args.recovery_wait,
                                fsync=args.journal_fsync,
                                dashboard_address=None if args.no_dashboard
                                else args.dashboard_address,
                                dashboard_factory=serve_dashboard).start()
    except StateDirInUse as exc:
        print(f"tasknest scheduler: {exc}", file=sys.stderr)
        return 2
    print(sched.address, flush=True)

    def dashboard_up(_: Any = None) -> None:
        if sched.dashboard is not None:
            print(f"tasknest dashboard at {sched.dashboard.link}", file=sys.stderr,
                  flush=True)
    if sched.dashboard_started is not None:
        if sched.dashboard_started.done():
            dashboard_up()
        else:                                   # (a recovering scheduler starts it after)
            sched.dashboard_started.add_done_callback(dashboard_up)
    if generated:
        print(f"tasknest scheduler at {sched.address}\n"
              f"token (pass to workers and clients with --token, $TASKNEST_TOKEN or a token "
              f"file):\n  {token}", file=sys.stderr, flush=True)

    async def stop(reason: str) -> None:
        log.info("scheduler stopping: %s", reason)
        await sched.close()
    stopping = _on_signals(stop)
    watcher = asyncio.ensure_future(_watch_parent(stop))
    await sched.closed.wait()
    watcher.cancel()
    await asyncio.gather(*stopping, return_exceptions=True)
    return 0


# -- worker -------------------------------------------------------------------------------------
async def _worker_main(args: argparse.Namespace) -> int:
    from ..errors import AuthenticationError, CommClosedError
    from ..worker.pool import configure_process
    from ..worker.server import Worker
    configure_process()
    security = _security(args)
    worker = Worker(args.address, nthreads=args.nthreads, name=args.name, host=args.host,
                    port=args.port, token=_token(args), security=security,
                    memory_limit=parse_size(args.memory_limit),
                    reconnect_timeout=args.reconnect_timeout, max_frame=args.max_frame_size,
                    resources=parse_resources(args.resources),
                    http=not getattr(args, "no_metrics", False),
                    shared_memory=not args.no_shared_memory)
    try:
        await worker.start()
    except AuthenticationError as exc:
        print(f"tasknest worker: {exc}", file=sys.stderr)
        return 2
    except (CommClosedError, OSError) as exc:
        print(f"tasknest worker: cannot reach the scheduler: {exc}", file=sys.stderr)
        return 3   # the nanny does not restart a worker that gave up on its scheduler
    print(worker.address, flush=True)

    async def stop(reason: str) -> None:
        log.info("worker stopping: %s", reason)
        await worker.close(reason)
    async def retire(reason: str) -> None:
        await worker.retire(args.retire_timeout, reason)
    stopping = _on_signals(stop, retire)
    watcher = asyncio.ensure_future(_watch_parent(stop))
    if args.lifetime:
        worker._spawn(_lifetime(worker, args.lifetime, args.lifetime_stagger,
                                args.retire_timeout))
    await worker.finished.wait()
    watcher.cancel()
    await asyncio.gather(*stopping, return_exceptions=True)
    if "unreachable" in worker.exit_reason:
        print(f"tasknest worker: {worker.exit_reason}", file=sys.stderr)
        return 3
    if "restart requested" in worker.exit_reason:
        return 4   # client.restart(): the nanny starts a new worker process at once
    return 0


def _worker_with_nanny(args: argparse.Namespace, argv: list[str]) -> int:
    from .nanny import run_nanny
    return run_nanny(argv, args)


# options that fall back to the configuration (tasknest/config.py): dest -> key
_COMMON = {"log_level": "log-level"}
CONFIGURED = {
    "scheduler": {**_COMMON, "host": "scheduler.host", "port": "scheduler.port",
                  "heartbeat_timeout": "scheduler.heartbeat-timeout",
                  "allowed_failures": "scheduler.allowed-failures",
                  "dashboard_address": "scheduler.dashboard-address"},
    "worker": {**_COMMON, "nthreads": "worker.nthreads", "memory_limit": "worker.memory-limit",
               "resources": "worker.resources",
               "reconnect_timeout": "worker.reconnect-timeout"},
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="tasknest", description="tasknest: distributed "
                                     "futures in which tasks can launch tasks")
    sub = parser.add_subparsers(dest="command", required=True)

    ps = sub.add_parser("scheduler", help="run a scheduler")
    ps.add_argument("--host", default=None,
                    help="interface to listen on (default loopback; 0.0.0.0 for all)")
    ps.add_argument("--port", type=int, default=None)
    ps.add_argument("--insecure", action="store_true",
                    help="no authentication: anyone who can connect can run code")
    ps.add_argument("--heartbeat-timeout", type=float, default=None)
    ps.add_argument("--allowed-failures", type=int, default=None,
                    help="workers a task may see die under it before it fails with KilledWorker")
    ps.add_argument("--max-frame-size", default=None, type=_positive_size,
                    help="largest message frame accepted from any peer, e.g. 64MiB")
    ps.add_argument("--dashboard-address", default=None,
                    help="HOST:PORT of the web dashboard (default 127.0.0.1:8787, the next "
                         "free port if taken)")
    ps.add_argument("--no-dashboard", action="store_true", help="serve no dashboard")
    ps.add_argument("--state-dir", default=None,
                    help="keep a journal here; a scheduler restarted on it (same command) "
                         "picks up where the last one died")
    ps.add_argument("--recovery-wait", type=float, default=10.0,
                    help="seconds a restarted scheduler waits for the workers it knew "
                         "before running their tasks elsewhere")
    ps.add_argument("--journal-fsync", action="store_true",
                    help="fsync the journal at every commit (survives the machine's crash, "
                         "not only the process's)")
    _common(ps)

    pst = sub.add_parser("status", help="workers, tasks by state, what is running")
    pst.add_argument("address", nargs="?", default=None,
                     help="the scheduler (default tcp://scheduler.host:scheduler.port)")
    _common(pst)

    pw = sub.add_parser("worker", help="run a worker")
    pw.add_argument("address", help="the scheduler, tcp://HOST:PORT or tls://HOST:PORT")
    pw.add_argument("--nthreads", type=int, default=None)
    pw.add_argument("--name", default=None)
    pw.add_argument("--host", default="127.0.0.1", help="interface for peer connections")
    pw.add_argument("--port", type=int, default=0)
    pw.add_argument("--memory-limit", default=None, help="e.g. 4GB; 0 for none")
    pw.add_argument("--resources", default=None,
                    help='what tasks may ask for with resources=, e.g. "GPU=2,MEM=16e9"')
    pw.add_argument("--reconnect-timeout", type=float, default=None,
                    help="seconds to keep trying a lost scheduler before exiting")
    pw.add_argument("--no-nanny", action="store_true", help="run without a supervisor")
    pw.add_argument("--no-shared-memory", action="store_true",
                    help="never share results with same-host processes through /dev/shm")
    pw.add_argument("--max-frame-size", default=None, type=_positive_size,
                    help="largest message frame accepted from a peer, e.g. 64MiB "
                         "(default: the machine's memory)")
    pw.add_argument("--insecure", action="store_true", help="connect without a token")
    pw.add_argument("--retire-timeout", type=float, default=60.0,
                    help="on SIGTERM (or at the end of --lifetime) the worker retires: it "
                         "hands its results over and lets running tasks finish for up to "
                         "this many seconds (SIGINT stops it at once)")
    pw.add_argument("--lifetime", type=float, default=0.0,
                    help="retire gracefully after this many seconds (e.g. before a batch "
                         "job's walltime)")
    pw.add_argument("--lifetime-stagger", type=float, default=0.0,
                    help="leave up to this many seconds before --lifetime, at random")
    pw.add_argument("--no-metrics", action="store_true",
                    help="serve no HTTP endpoint (/metrics, /health, /stacks)")
    _common(pw)

    sub.add_parser("demo", help="run the specification's examples on a local cluster")
    sub.add_parser("config", help="print the effective configuration and where each value "
                                  "came from")

    args = parser.parse_args(argv)
    from ..config import ConfigError, describe, get
    try:
        for dest, key in CONFIGURED.get(args.command, {}).items():
            setattr(args, dest, get(key, getattr(args, dest, None)))
        if args.command == "config":
            print(describe())
            return 0
    except ConfigError as exc:
        parser.error(str(exc))
    level = getattr(args, "log_level", "WARNING")
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.WARNING),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "scheduler":
        return run_loop(_scheduler_main(args))
    if args.command == "worker":
        if args.nthreads < 1:
            parser.error("--nthreads must be at least 1")
        try:
            parse_resources(args.resources)
        except ValueError as exc:
            parser.error(str(exc))
        if not args.no_nanny and _nanny_available():
            return _worker_with_nanny(args, argv)
        return run_loop(_worker_main(args))
    if args.command == "status":
        from ..config import get as config_get
        from ..dashboard.status import main as status_main
        address = args.address or (f"tcp://{config_get('scheduler.host')}:"
                                   f"{config_get('scheduler.port')}")
        return status_main(address, _token(args), _security(args))
    if args.command == "demo":
        from ..demo import main as demo_main
        return demo_main()
    return 2


def _nanny_available() -> bool:
    try:
        from . import nanny  # noqa: F401
        return True
    except ImportError:
        return False
