"""How fast this machine is at what a round trip is made of, so that figures taken
on different machines can be compared.

    python -m benchmarks.calibrate

A trivial task's round trip is mostly wake-ups: a process woken by a packet on
loopback, a thread woken by another. Virtual machines differ most in exactly
that (waking an idle virtual CPU goes through the hypervisor), and far less in
plain Python speed; both are measured here, with nothing of tasknest involved.
"""
from __future__ import annotations

import os
import socket
import statistics
import threading
import time

ROUNDS = 2000


def python_loop_ms(n: int = 2_000_000) -> float:
    """Best of 5: an empty Python loop of ``n`` iterations."""
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            pass
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def process_pingpong_us(rounds: int = ROUNDS) -> float:
    """Median round trip of one byte to a child process and back over loopback TCP
    (two process wake-ups)."""
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        port = ls.getsockname()[1]
        pid = os.fork()
        if pid == 0:                      # the child echoes until the parent hangs up
            try:
                with socket.create_connection(("127.0.0.1", port)) as s:
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    while data := s.recv(64):
                        s.sendall(data)
            finally:
                os._exit(0)
        conn, _ = ls.accept()
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            conn.sendall(b"x")
            conn.recv(64)
            times.append(time.perf_counter() - t0)
    os.waitpid(pid, 0)
    return statistics.median(times) * 1e6


def thread_pingpong_us(rounds: int = ROUNDS) -> float:
    """Median round trip of a hand-off to another thread and back through a
    threading.Condition (two thread wake-ups, and the GIL changing hands)."""
    cond = threading.Condition()
    state = {"sent": 0, "seen": 0}

    def echo() -> None:
        with cond:
            while True:
                cond.wait_for(lambda: state["sent"] != state["seen"])
                if state["sent"] < 0:
                    return
                state["seen"] = state["sent"]
                cond.notify_all()

    peer = threading.Thread(target=echo, daemon=True)
    peer.start()
    times = []
    for i in range(1, rounds + 1):
        t0 = time.perf_counter()
        with cond:
            state["sent"] = i
            cond.notify_all()
            cond.wait_for(lambda: state["seen"] == i)
        times.append(time.perf_counter() - t0)
    with cond:
        state["sent"] = -1
        cond.notify_all()
    peer.join()
    return statistics.median(times) * 1e6


def calibrate() -> dict[str, float]:
    return {"python_loop_ms": round(python_loop_ms(), 1),
            "process_pingpong_us": round(process_pingpong_us(), 1),
            "thread_pingpong_us": round(thread_pingpong_us(), 1)}


if __name__ == "__main__":
    for name, value in calibrate().items():
        print(f"{name}: {value}")
