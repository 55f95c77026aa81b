"""Per-hop cost breakdown: CPU microseconds per task in the client, the scheduler and a worker.

    python -m benchmarks.breakdown [--workload flat|fib|fanout|latency] [--seconds 5]

Runs a workload repeatedly on a LocalCluster (2 workers x 1 thread) while py-spy
samples the client, the scheduler and one worker process, then turns the
samples into CPU time per task, split by layer (protocol, state machine,
serialization, shell, user code). Idle frames (the event loop waiting, parked
threads) are left out, so the figures are CPU cost, not wall time.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

RATE = 250          # samples per second
# the py-spy of this environment (the bench extra installs it beside the interpreter)
PY_SPY = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or "py-spy"

IDLE_FUNCS = {"LoopRunner._run", "_run", "run_forever", "_run_once", "select", "poll",
              "Condition.wait", "Event.wait", "Thread.join", "wait", "_wait_for_tstate_lock"}
LAYERS = [          # first match wins, tested against the file of a frame
    ("user code", ("benchmarks/tasks.py",)),
    ("waiting awake", ("Pool._spin", "Placing.spin")),
    ("protocol", ("protocol/comm.py", "protocol/messages.py", "protocol/peers.py", "msgpack",
                  "<string>")),
    ("serialization", ("protocol/serialize.py", "pickle", "cloudpickle", "copyreg")),
    ("state machine", ("scheduler/state.py", "worker/state.py")),
    ("shell", ("tasknest/",)),
]


def _split(frame: str) -> tuple[str, str]:
    func, _, rest = frame.partition(" (")
    return func, rest.rsplit(":", 1)[0]


def classify(frames: list[str]) -> str:
    func, file = _split(frames[-1])
    if func in IDLE_FUNCS or file.endswith(("selectors.py", "threading.py")):
        return "idle"
    for frame in reversed(frames):   # a C or library leaf is charged to its nearest caller
        func, file = _split(frame)
        for layer, needles in LAYERS:
            if any(n in file or n == func for n in needles):
                return layer
    return "other"


def summarise(path: str, ntasks: int) -> dict[str, float]:
    counts: collections.Counter[str] = collections.Counter()
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            counts[classify(stack.split(";"))] += int(n)
    us_per_sample = 1e6 / RATE
    out = {layer: n * us_per_sample / ntasks for layer, n in counts.items() if layer != "idle"}
    out["total"] = sum(out.values())
    return out


def run(workload: str, seconds: float) -> dict:
    from tasknest import Client, LocalCluster

    from . import tasks
    tmp = tempfile.mkdtemp(prefix="tasknest-breakdown-")
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
        client.submit(tasks.inc, 0).result()
        pids = {"client": os.getpid(), "scheduler": cluster.scheduler_proc.pid,
                "worker": list(client.scheduler_info(-1)["workers"].values())[0]["pid"]}     # the worker, not its nanny
        spies = {name: subprocess.Popen(
            [PY_SPY, "record", "-p", str(pid), "-r", str(RATE), "-f", "raw", "--nonblocking",
             "-o", os.path.join(tmp, f"{name}.txt"), "-d", str(int(seconds) + 2)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for name, pid in pids.items()}
        time.sleep(0.5)                    # let the samplers attach before measuring
        ntasks, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            if workload == "flat":
                client.gather(client.map(tasks.inc, range(10_000)))
                ntasks += 10_000
            elif workload == "fanout":
                client.submit(tasks.fanout, 2000, "tasknest", pure=False).result()
                ntasks += 2000
            elif workload == "latency":      # per round trip
                for i in range(1000):
                    client.submit(tasks.inc, ntasks + i).result()
                ntasks += 1000
            else:
                client.submit(tasks.fib_tree, 15, "tasknest", pure=False).result()
                ntasks += 1973
        elapsed = time.perf_counter() - t0
        for spy in spies.values():
            spy.wait()
    # samplers ran slightly longer than the workload: scale to the measured share
    result = {"workload": workload, "tasks": ntasks, "seconds": elapsed,
              "tasks_per_s": ntasks / elapsed, "per_task_us": {}}
    for name in pids:
        result["per_task_us"][name] = summarise(os.path.join(tmp, f"{name}.txt"), ntasks)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=["flat", "fib", "fanout", "latency"], default="flat")
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()
    res = run(args.workload, args.seconds)
    print(json.dumps(res, indent=1))
    layers = ["protocol", "serialization", "state machine", "shell", "user code",
              "waiting awake", "other", "total"]
    print(f"\n{res['workload']}: {res['tasks']} tasks, {res['tasks_per_s']:.0f} tasks/s "
          "(with py-spy attached)\n")
    print("| process | " + " | ".join(layers) + " |")
    print("|---|" + "---:|" * len(layers))
    for proc, d in res["per_task_us"].items():
        print(f"| {proc} | " + " | ".join(f"{d.get(k, 0):.1f}" for k in layers) + " |")


if __name__ == "__main__":
    sys.exit(main())
