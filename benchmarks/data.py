"""Large data between processes: tasknest (with and without same-host sharing),
dask.distributed and Ray, side by side in one run, with the machine's ceilings.

    python -m benchmarks.data [--sizes 200,1024] [--shuffle 512] [--reps 3]
                              [--systems tasknest,tasknest-tcp,dask,ray]
                              [--output docs/benchmarks.md] [--quick]

Paths (a float64 numpy array of each size; 2 worker processes x 1 thread, Ray
``num_cpus=2``; every system in a fresh driver process, warmed by one task):

* ``w2w``: the array is made on worker A, then a task on worker B reads one element
  of every page of it (Ray: a second task; its object store decides);
* ``w2c``: ``result()`` of an array held by a worker (Ray: ``ray.get``);
* ``scatter``: ``scatter(array)`` from the driver, until the worker holds it
  (``hash=False``; Ray: ``ray.put``);
* ``shuffle``: 16 producer tasks x 16 consumer tasks, every consumer reading one
  part of every producer, ``--shuffle`` MiB in all (producing included);
* ``small-during``: 1,000 sequential trivial round trips started with a ``w2w`` of
  the largest size; their latency while the transfer was in flight.

The ceilings (loopback TCP between two processes into a warm buffer, and a memcpy
between warm buffers) are measured at the start and at the end of the same run;
every rate is also given as a ratio to the loopback ceiling (the mean of both).
A sampler thread of this (orchestrating) process reads the RSS of the driver and
of all its descendants every 20 ms; each path's peaks are reported. RSS counts
shared-memory pages in every process that touched them.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
SYSTEMS = ("tasknest", "tasknest-tcp", "dask", "ray")
# also runnable: tasknest-tcp-nopool, over TCP with the receive pool off (receive-pool = 0)
PARTS = 16
SMALL_TASKS = 1000
START, END = "<!-- data:start -->", "<!-- data:end -->"


# -- ceilings -------------------------------------------------------------------------------
def _receiver(port_file: str, nbytes: int, rounds: int) -> None:
    import socket
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    Path(port_file).write_text(str(srv.getsockname()[1]))
    conn, _ = srv.accept()
    buf = bytearray(nbytes)           # allocated and touched: a warm buffer
    view = memoryview(buf)
    for _ in range(rounds):
        got = 0
        while got < nbytes:
            got += conn.recv_into(view[got:])
        conn.sendall(b"k")


def ceilings(nbytes: int = 256 * MiB, rounds: int = 3) -> dict[str, float]:
    """Loopback TCP and memcpy, MiB/s (median of ``rounds``)."""
    import socket
    import tempfile
    port_file = tempfile.mktemp(prefix="tasknest-bench-port-")
    proc = subprocess.Popen([sys.executable, "-c",
                             f"from benchmarks.data import _receiver; "
                             f"_receiver({port_file!r}, {nbytes}, {rounds})"], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file) or not Path(port_file).read_text():
            if time.monotonic() > deadline:
                raise RuntimeError("the loopback receiver did not start")
            time.sleep(0.01)
        sock = socket.create_connection(("127.0.0.1", int(Path(port_file).read_text())))
        data = bytearray(nbytes)
        data[::4096] = b"x" * len(data[::4096])
        rates = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            sock.sendall(data)
            sock.recv(1)
            rates.append(nbytes / MiB / (time.perf_counter() - t0))
        sock.close()
    finally:
        proc.wait(30)
        os.unlink(port_file)
    a, b = bytearray(nbytes), bytearray(nbytes)
    b[:] = a
    copies = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        b[:] = a
        copies.append(nbytes / MiB / (time.perf_counter() - t0))
    return {"loopback": statistics.median(rates), "memcpy": statistics.median(copies)}


# -- one system, in a fresh driver process ------------------------------------------------------
def phase(name: str) -> None:
    print(f"PHASE {name}", flush=True)


class Futures:
    """tasknest (with or without sharing) and dask.distributed: one API."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name == "dask":
            import distributed as lib
            self.cluster = lib.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)
        else:
            import tasknest as lib  # type: ignore[no-redef]
            self.cluster = lib.LocalCluster(n_workers=2, threads_per_worker=1,
                                            shared_memory=name == "tasknest")  # -tcp: off
        self.lib = lib
        self.client = lib.Client(self.cluster)
        self.a, self.b = sorted(self.client.scheduler_info()["workers"])[:2]

    def warm(self) -> None:
        from benchmarks import data_tasks as t
        for w in (self.a, self.b):
            assert self.client.submit(t.inc, 1, workers=[w], pure=False).result() == 2
        x = self.client.submit(t.make, MiB, workers=[self.a], pure=False)
        assert self.client.submit(t.touch, x, workers=[self.b], pure=False).result() > 0
        assert x.result().nbytes == MiB        # numpy imported, connections open everywhere
        del x

    def _made(self, nbytes: int) -> Any:
        from benchmarks import data_tasks as t
        x = self.client.submit(t.make, nbytes, workers=[self.a], pure=False)
        self.lib.wait([x])
        return x

    def w2w(self, nbytes: int) -> float:
        from benchmarks import data_tasks as t
        x = self._made(nbytes)
        t0 = time.perf_counter()
        got = self.client.submit(t.touch, x, workers=[self.b], pure=False).result()
        dt = time.perf_counter() - t0
        assert got == nbytes // 4096, got
        return dt

    def w2c(self, nbytes: int) -> float:
        x = self._made(nbytes)
        t0 = time.perf_counter()
        value = x.result()
        dt = time.perf_counter() - t0
        assert value.nbytes == nbytes
        return dt

    def scatter(self, array: Any) -> float:
        t0 = time.perf_counter()
        f = self.client.scatter(array, hash=False)
        self.lib.wait([f])
        return time.perf_counter() - t0

    def shuffle(self, total: int) -> float:
        from benchmarks import data_tasks as t
        piece = total // (PARTS * PARTS)
        c = self.client
        t0 = time.perf_counter()
        producers = [c.submit(t.produce, i, PARTS, piece, pure=False) for i in range(PARTS)]
        self.lib.wait(producers)
        where = c.who_has(producers)
        picks = [[c.submit(t.pick, p, j, workers=list(where[p.key])[:1], pure=False)
                  for j in range(PARTS)] for p in producers]
        consumers = [c.submit(t.consume, *[picks[i][j] for i in range(PARTS)], pure=False)
                     for j in range(PARTS)]
        got = sum(c.gather(consumers))
        dt = time.perf_counter() - t0
        assert got == piece * PARTS * PARTS, got
        return dt

    def small_during(self, nbytes: int) -> dict[str, Any]:
        from benchmarks import data_tasks as t
        x = self._made(nbytes)
        big = self.client.submit(t.touch, x, workers=[self.b], pure=False)
        return _small_loop(lambda i: self.client.submit(t.inc, i, pure=False).result(),
                           lambda: big.done())

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


class Ray:
    name = "ray"

    def __init__(self) -> None:
        import ray
        os.environ.pop("RAY_ADDRESS", None)
        ray.init(num_cpus=2)
        from benchmarks import data_tasks as t
        self.ray = ray
        self.make = ray.remote(t.make)
        self.touch = ray.remote(t.touch)
        self.inc = ray.remote(t.inc)
        self.produce = ray.remote(t.produce_tuple)
        self.consume = ray.remote(t.consume)

    def warm(self) -> None:
        x = self.make.remote(MiB)
        assert self.ray.get(self.touch.remote(x)) > 0
        assert self.ray.get(x).nbytes == MiB

    def _made(self, nbytes: int) -> Any:
        x = self.make.remote(nbytes)
        self.ray.wait([x], fetch_local=False)
        return x

    def w2w(self, nbytes: int) -> float:
        x = self._made(nbytes)
        t0 = time.perf_counter()
        got = self.ray.get(self.touch.remote(x))
        dt = time.perf_counter() - t0
        assert got == nbytes // 4096
        return dt

    def w2c(self, nbytes: int) -> float:
        x = self._made(nbytes)
        t0 = time.perf_counter()
        value = self.ray.get(x)
        dt = time.perf_counter() - t0
        assert value.nbytes == nbytes
        return dt

    def scatter(self, array: Any) -> float:
        t0 = time.perf_counter()
        self.ray.put(array)
        return time.perf_counter() - t0

    def shuffle(self, total: int) -> float:
        piece = total // (PARTS * PARTS)
        t0 = time.perf_counter()
        parts = [self.produce.options(num_returns=PARTS).remote(i, PARTS, piece)
                 for i in range(PARTS)]
        consumers = [self.consume.remote(*[parts[i][j] for i in range(PARTS)])
                     for j in range(PARTS)]
        got = sum(self.ray.get(consumers))
        dt = time.perf_counter() - t0
        assert got == piece * PARTS * PARTS
        return dt

    def small_during(self, nbytes: int) -> dict[str, Any]:
        x = self._made(nbytes)
        big = self.touch.remote(x)
        return _small_loop(lambda i: self.ray.get(self.inc.remote(i)),
                           lambda: bool(self.ray.wait([big], timeout=0)[0]))

    def close(self) -> None:
        self.ray.shutdown()


def _small_loop(call: Any, big_done: Any) -> dict[str, Any]:
    during, after = [], []
    for i in range(SMALL_TASKS):
        in_flight = not big_done()
        t0 = time.perf_counter()
        assert call(i) == i + 1
        (during if in_flight else after).append(time.perf_counter() - t0)
    out: dict[str, Any] = {"during": len(during), "after": len(after)}
    for name, xs in (("during", during), ("after", after)):
        if xs:
            xs.sort()
            out[f"{name}_median_ms"] = 1e3 * xs[len(xs) // 2]
            out[f"{name}_p99_ms"] = 1e3 * xs[min(len(xs) - 1, int(len(xs) * 0.99))]
            out[f"{name}_max_ms"] = 1e3 * xs[-1]
    return out


def child(system: str, sizes: list[int], shuffle: int, reps: int) -> None:
    from benchmarks import data_tasks as t
    t0 = time.perf_counter()
    sut: Any = Ray() if system == "ray" else Futures(system)
    sut.warm()
    result: dict[str, Any] = {"system": system, "start_s": time.perf_counter() - t0, "paths": {}}
    paths = result["paths"]
    try:
        for size in sizes:
            nbytes = size * MiB
            for path in ("w2w", "w2c", "scatter"):
                phase(f"{path}-{size}")
                times = []
                for _ in range(reps):
                    if path == "scatter":
                        array = t.make(nbytes)
                        times.append(sut.scatter(array))
                        del array
                    else:
                        times.append(getattr(sut, path)(nbytes))
                paths[f"{path}-{size}"] = {"mib": size, "seconds": times}
        phase(f"shuffle-{shuffle}")
        paths[f"shuffle-{shuffle}"] = {"mib": shuffle,
                                       "seconds": [sut.shuffle(shuffle * MiB) for _ in range(reps)]}
        phase("small-during")
        result["small_during"] = sut.small_during(max(sizes) * MiB)
        result["small_during"]["mib"] = max(sizes)
        phase("done")
    finally:
        print("DATA_RESULT " + json.dumps(result), flush=True)
        sut.close()


# -- the orchestrator ---------------------------------------------------------------------------
class Sampler(threading.Thread):
    """Peak RSS of a process and its descendants, per phase (the last PHASE line)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.phase = "start"
        self.peaks: dict[str, dict[int, int]] = {}
        self.names: dict[int, str] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            peaks = self.peaks.setdefault(self.phase, {})
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    if p.pid not in self.names:
                        self.names[p.pid] = _role(p, self.root.pid)
                except psutil.Error:
                    continue
                if rss > peaks.get(p.pid, 0):
                    peaks[p.pid] = rss


def _role(p: psutil.Process, driver: int) -> str:
    if p.pid == driver:
        return "driver"
    cmd = " ".join(p.cmdline())
    for word, role in (("tasknest worker", "worker"), ("tasknest scheduler", "scheduler"),
                       ("ray::", "worker"), ("default_worker", "worker"),
                       ("distributed.nanny", "worker"), ("spawn_main", "worker")):
        if word in cmd:
            return role
    return "other"


def run_system(system: str, sizes: list[int], shuffle: int, reps: int,
               timeout: float) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(ROOT / "src"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])}
    cmd = [sys.executable, "-m", "benchmarks.data", "--child", system, "--sizes",
           ",".join(map(str, sizes)), "--shuffle", str(shuffle), "--reps", str(reps)]
    if system.endswith("-nopool"):      # (the driver and the workers it starts alike)
        env["TASKNEST_RECEIVE_POOL"] = "0"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    sampler = Sampler(proc.pid)
    sampler.start()
    result: dict[str, Any] = {"system": system, "error": "no result"}
    killer = threading.Timer(timeout, lambda: _kill(proc))
    killer.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("PHASE "):
            sampler.phase = line.split(" ", 1)[1].strip()
        elif line.startswith("DATA_RESULT "):
            result = json.loads(line.split(" ", 1)[1])
    proc.wait()
    killer.cancel()
    sampler.stop.set()
    sampler.join()
    if proc.returncode and "paths" not in result:
        result["error"] = f"driver exited with {proc.returncode}"
    result["peaks"] = {ph: _peak_summary(pk, sampler.names) for ph, pk in sampler.peaks.items()}
    return result


def _kill(proc: subprocess.Popen) -> None:
    try:
        for c in psutil.Process(proc.pid).children(recursive=True):
            c.kill()
        proc.kill()
    except psutil.Error:
        pass


def _peak_summary(peaks: dict[int, int], names: dict[int, str]) -> dict[str, float]:
    out: dict[str, float] = {"total_mib": sum(peaks.values()) / MiB}
    for pid, rss in peaks.items():
        role = names.get(pid, "other")
        out[f"{role}_mib"] = max(out.get(f"{role}_mib", 0.0), rss / MiB)
    return out


# -- the report -----------------------------------------------------------------------------------
def render(run: dict[str, Any]) -> str:
    ceil = run["ceilings"]
    loop = statistics.mean([c["loopback"] for c in ceil])
    systems = [r["system"] for r in run["results"]]
    by = {r["system"]: r for r in run["results"]}
    out = [START, "", "## Large data (`python -m benchmarks.data`)", "",
           f"Run on {run['date']}; {run['cpus']} cores; sizes {run['sizes']} MiB, shuffle "
           f"{run['shuffle']} MiB, median of {run['reps']} (and the first of them, into memory the "
           "receiver had not used yet). Each system in a fresh driver, "
           "2 worker processes x 1 thread (Ray `num_cpus=2`), default settings otherwise. "
           "`tasknest-tcp` is tasknest with same-host sharing off (`shared_memory=False`).", "",
           "Machine ceilings, measured in this run (start / end): loopback TCP "
           + " / ".join(f"{c['loopback']:.0f}" for c in ceil) + " MiB/s, memcpy "
           + " / ".join(f"{c['memcpy']:.0f}" for c in ceil) + " MiB/s. Ratios are to the "
           f"mean loopback ceiling ({loop:.0f} MiB/s).", "",
           "| path | " + " | ".join(systems) + " |", "|---|" + "---|" * len(systems)]
    names = [p for r in run["results"] for p in r.get("paths", {})]
    for path in dict.fromkeys(names):
        cells = []
        for s in systems:
            p = by[s].get("paths", {}).get(path)
            if not p:
                cells.append(by[s].get("error", "—"))
                continue
            sec = statistics.median(p["seconds"])
            rate = p["mib"] / sec if sec else float("inf")
            cell = f"{sec * 1e3:.1f} ms, {rate:.0f} MiB/s ({rate / loop:.2f}x)"
            first = p["seconds"][0]
            if len(p["seconds"]) > 1 and first:
                cell += f"; first {p['mib'] / first / loop:.2f}x"
            cells.append(cell)
        out.append(f"| {path} | " + " | ".join(cells) + " |")
    out += ["", "Peak RSS during each path (MiB: driver / largest worker / all processes; "
            "shared pages count in every process that maps them):", "",
            "| path | " + " | ".join(systems) + " |", "|---|" + "---|" * len(systems)]
    for path in dict.fromkeys(names):
        cells = []
        for s in systems:
            pk = by[s].get("peaks", {}).get(path)
            cells.append(f"{pk.get('driver_mib', 0):.0f} / {pk.get('worker_mib', 0):.0f} / "
                         f"{pk['total_mib']:.0f}" if pk else "—")
        out.append(f"| {path} | " + " | ".join(cells) + " |")
    out += ["", f"Small round trips (`submit(inc).result()`, {SMALL_TASKS} in a row) started "
            "with a worker-to-worker transfer of the largest size: latency while it was in "
            "flight, and after:", "",
            "| system | in flight: n, median / p99 / max ms | after: n, median / p99 ms |",
            "|---|---|---|"]
    for s in systems:
        d = by[s].get("small_during")
        if not d:
            continue
        during = (f"{d['during']}, {d['during_median_ms']:.2f} / {d['during_p99_ms']:.2f} / "
                  f"{d['during_max_ms']:.1f}" if d["during"] else "0 (it finished first)")
        after = (f"{d['after']}, {d['after_median_ms']:.2f} / {d['after_p99_ms']:.2f}"
                 if d["after"] else "—")
        out.append(f"| {s} | {during} | {after} |")
    out += ["", END]
    return "\n".join(out)


def write_report(text: str, output: Path) -> None:
    existing = output.read_text() if output.exists() else ""
    i, j = existing.find(START), existing.find(END)
    if i != -1 and j > i:
        existing = existing[:i] + text + existing[j + len(END):]
    else:
        existing = existing.rstrip("\n") + "\n\n" + text + "\n"
    output.write_text(existing)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--sizes", default="200,1024", help="array sizes in MiB")
    ap.add_argument("--shuffle", type=int, default=512, help="MiB moved by the shuffle")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "data.json"))
    ap.add_argument("--quick", action="store_true", help="smallest sizes (1 MiB, 16 MiB), 1 rep")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    if args.quick:
        sizes, args.shuffle, args.reps = [1], 16, 1
    if args.child:
        child(args.child, sizes, args.shuffle, args.reps)
        return {}
    run: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "cpus": os.cpu_count(), "sizes": sizes, "shuffle": args.shuffle,
                           "reps": args.reps, "ceilings": [ceilings()], "results": []}
    for system in args.systems.split(","):
        print(f"{system} ...", file=sys.stderr, flush=True)
        r = run_system(system, sizes, args.shuffle, args.reps, args.timeout)
        print(json.dumps(r), file=sys.stderr, flush=True)
        run["results"].append(r)
    run["ceilings"].append(ceilings())
    text = render(run)
    if args.output:
        write_report(text, Path(args.output))
    if args.json:
        Path(args.json).write_text(json.dumps(run, indent=1) + "\n")
    print(text)
    return run


if __name__ == "__main__":
    main()
