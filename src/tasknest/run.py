"""Run a script on a cluster made inside one allocation:
``srun -n N python -m tasknest.run [options] script.py [args...]``.

    rank 0: the scheduler; writes its address and a fresh secret (mode 0600) to
            files in --shared-dir, then waits for rank 1 to finish
    rank 1: runs script.py with a Client already connected (``Client()`` with no
            address, ``default_client()`` and ``get_client()`` all find it)
    others: workers

For sites whose compute nodes cannot reach the login node: everything stays inside
the allocation. The rank comes from SLURM (SLURM_PROCID, SLURM_NTASKS), or from
MPI launchers (PMI_RANK, OMPI_COMM_WORLD_RANK). The exit code is the script's.
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import socket
import sys
import time
from typing import Any

RANK_VARS = ("SLURM_PROCID", "PMI_RANK", "OMPI_COMM_WORLD_RANK")
SIZE_VARS = ("SLURM_NTASKS", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


def _env_int(names: tuple[str, ...]) -> int | None:
    for n in names:
        v = os.environ.get(n)
        if v is not None and v.strip().isdigit():
            return int(v)
    return None


def _my_address(contact: str | None) -> str:
    if contact:
        return contact
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _paths(shared: str) -> tuple[str, str, str]:
    job = os.environ.get("SLURM_JOB_ID", "local")
    step = os.environ.get("SLURM_STEP_ID", "0")
    d = os.path.join(shared, f".tasknest-run-{job}.{step}")
    return d, os.path.join(d, "scheduler.json"), os.path.join(d, "token")


def _wait_for(path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"tasknest.run: {path} did not appear within {timeout} s "
                             "(is --shared-dir on a file system every node shares?)")
        time.sleep(0.05)


def _scheduler(args: argparse.Namespace, directory: str, info: str, token_file: str) -> int:
    import asyncio

    from .deploy.cli import run_loop
    from .protocol.auth import new_token
    from .scheduler.server import Scheduler

    os.makedirs(directory, mode=0o700, exist_ok=True)
    token = new_token()
    fd = os.open(token_file + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    os.replace(token_file + ".tmp", token_file)
    done_file = os.path.join(directory, "done")

    async def main() -> int:
        sched = await Scheduler("0.0.0.0", args.port, token).start()
        port = sched.address.rsplit(":", 1)[1]
        with open(info + ".tmp", "w") as f:
            json.dump({"address": f"tcp://{_my_address(args.contact_address)}:{port}"}, f)
        os.replace(info + ".tmp", info)
        while not os.path.exists(done_file):     # rank 1 says when the script is over
            await asyncio.sleep(0.1)
        with open(done_file) as f:
            code = int(f.read().strip() or 1)
        await sched.close()
        return code
    try:
        return run_loop(main())
    finally:
        import shutil
        shutil.rmtree(directory, ignore_errors=True)


def _address(info: str, timeout: float) -> str:
    _wait_for(info, timeout)
    with open(info) as f:
        return json.load(f)["address"]


def _client_script(args: argparse.Namespace, directory: str, info: str,
                   token_file: str) -> int:
    address = _address(info, args.timeout)
    with open(token_file) as f:
        token = f.read().strip()
    os.environ["TASKNEST_SCHEDULER_ADDRESS"] = address   # Client() finds it
    os.environ["TASKNEST_TOKEN"] = token
    code = 1
    from .client.client import Client
    try:
        with Client(address, token=token) as client:
            if args.workers:
                client.wait_for_workers(args.workers, timeout=args.timeout)
            sys.argv = [args.script, *args.args]
            try:
                runpy.run_path(args.script, run_name="__main__")
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        with open(os.path.join(directory, "done.tmp"), "w") as f:
            f.write(str(code))
        os.replace(os.path.join(directory, "done.tmp"), os.path.join(directory, "done"))
    return code


def _worker(args: argparse.Namespace, rank: int, info: str, token_file: str) -> int:
    from .deploy.cli import main as cli_main
    address = _address(info, args.timeout)
    _wait_for(token_file, args.timeout)
    argv = ["worker", address, "--token-file", token_file, "--host", "0.0.0.0",
            "--name", f"rank-{rank}", "--no-nanny", "--reconnect-timeout", "5"]
    if args.nthreads:
        argv += ["--nthreads", str(args.nthreads)]
    if args.memory_limit:
        argv += ["--memory-limit", args.memory_limit]
    code = cli_main(argv)
    return 0 if code == 3 else code     # (the scheduler closing at the end is no failure)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tasknest.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared-dir", default=".",
                   help="a directory every node sees: the address and the secret go there")
    p.add_argument("--contact-address", default=None,
                   help="address the scheduler's node is reached at (default: its hostname)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--nthreads", type=int, default=0, help="threads per worker")
    p.add_argument("--memory-limit", default=None)
    p.add_argument("--workers", type=int, default=None,
                   help="wait for this many workers before the script starts "
                        "(default: every other rank)")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("script")
    p.add_argument("args", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    rank, size = _env_int(RANK_VARS), _env_int(SIZE_VARS)
    if rank is None or size is None:
        p.error("no rank found: start it with srun (or mpirun), e.g. "
                "srun -n 4 python -m tasknest.run script.py")
    if size < 3:
        p.error(f"{size} tasks: one scheduler, one script and at least one worker need 3")
    if args.workers is None:
        args.workers = size - 2
    directory, info, token_file = _paths(os.path.abspath(args.shared_dir))
    if rank == 0:
        return _scheduler(args, directory, info, token_file)
    if rank == 1:
        return _client_script(args, directory, info, token_file)
    return _worker(args, rank, info, token_file)


if __name__ == "__main__":
    sys.exit(main())
