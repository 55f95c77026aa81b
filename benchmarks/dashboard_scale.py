"""A million tasks with the dashboard watched: does it stay responsive, and does the
scheduler's memory stay bounded?

    python -m benchmarks.dashboard_scale [--tasks 1000000] [--batch 100000]

Maps ``inc`` over ``--tasks`` numbers in batches of ``--batch`` (each batch held until
gathered, then released), on 2 worker processes x 1 thread, while another thread asks
for /api/v1/status (the page's first request) and /metrics every second and times
the answers. Prints the answer times (median, max), the scheduler's RSS after each
batch, and the task stream and spawn edge records the scheduler keeps.
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time
import urllib.request

import psutil

from benchmarks import tasks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=100_000)
    args = ap.parse_args()
    import tasknest
    with tasknest.LocalCluster(n_workers=2, threads_per_worker=1,
                               dashboard_address="127.0.0.1:0") as cluster, \
            tasknest.Client(cluster) as client:
        base, key = client.dashboard_link.split("/status?key=")
        sched = psutil.Process(cluster.scheduler_proc.pid)
        answers: dict[str, list[float]] = {"status": [], "metrics": []}
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(1.0):
                for name, path in (("status", "/api/v1/status"), ("metrics", "/metrics")):
                    t0 = time.perf_counter()
                    with urllib.request.urlopen(f"{base}{path}?key={key}", timeout=60) as r:
                        r.read()
                    answers[name].append(time.perf_counter() - t0)
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        rss = []
        t0 = time.perf_counter()
        done = 0
        try:
            while done < args.tasks:
                n = min(args.batch, args.tasks - done)
                futs = client.map(tasks.inc, range(done, done + n))
                assert client.gather(futs)[-1] == done + n
                del futs
                done += n
                rss.append(sched.memory_info().rss)
                print(f"{done:>9} tasks  {time.perf_counter() - t0:7.1f} s  scheduler RSS "
                      f"{rss[-1] / 2**20:6.0f} MiB", flush=True)
        finally:
            stop.set()
            poller.join(60)
        elapsed = time.perf_counter() - t0
        status = client.run_on_scheduler(lambda dask_scheduler: (
            dask_scheduler.observer.rows, len(dask_scheduler.observer.batches),
            len(dask_scheduler.observer.edges())))
        print(f"{args.tasks} tasks in {elapsed:.1f} s ({args.tasks / elapsed:.0f} tasks/s)")
        for name, times in answers.items():
            if times:
                print(f"/{name}: {len(times)} answers, median {statistics.median(times) * 1e3:.1f}"
                      f" ms, max {max(times) * 1e3:.1f} ms")
        print(f"scheduler RSS after each batch (MiB): "
              f"{', '.join(f'{r / 2**20:.0f}' for r in rss)}")
        print(f"kept by the observer: {status[0]} task stream rows (in {status[1]} batches), "
              f"{status[2]} spawn edges")


if __name__ == "__main__":
    main()
