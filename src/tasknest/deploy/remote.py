"""What a cluster starts on a remote host (over SSH): ``python -m tasknest.deploy.remote
scheduler|worker ARGS...``.

    ssh host remote.py ──stdin line 1: the secret──> TASKNEST_TOKEN of the child
                       ──stdin stays open: the lifeline──> EOF: stop the child, exit
    child (tasknest scheduler|worker) ──stdout──> relayed (first line: its address)

The secret never appears on a command line (``ps`` and ``/proc/*/cmdline`` show
those to every user). When the process that made the cluster dies, for any
reason, its end of the pipe closes, ssh forwards the EOF, and this process stops
its child; the child also watches this process (``TASKNEST_PARENT_PID``).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    stdin = sys.stdin.buffer
    token = stdin.readline().decode().strip()
    env = dict(os.environ)
    if token:
        env["TASKNEST_TOKEN"] = token
    env["TASKNEST_PARENT_PID"] = str(os.getpid())
    child = subprocess.Popen([sys.executable, "-m", "tasknest", *argv], env=env,
                             stdin=subprocess.DEVNULL)
    stop = threading.Event()

    def lifeline() -> None:
        while stdin.read(4096):     # (the cluster writes nothing more; EOF is the signal)
            pass
        stop.set()
        if child.poll() is None:
            child.send_signal(signal.SIGINT)     # at once: the cluster is gone or closing
    threading.Thread(target=lifeline, daemon=True).start()

    def forward(sig: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(sig)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    code = child.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
