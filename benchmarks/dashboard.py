"""The dashboard's cost: flat and fib_tree with the dashboard watched, against it off.

    python -m benchmarks.dashboard [--pairs 4] [--flat 10000] [--fib 15]

"on": the status page open in headless Chromium (live over SSE) and /metrics
scraped every second by another thread, for the whole run; "off": the cluster
started with dashboard=False and no browser. Same cluster shape as the other
benchmarks (2 worker processes x 1 thread); on and off alternate, each on a fresh
cluster, so the machine's drift hits both alike. Each figure is the median over the
pairs of each run's median of up to 5 repetitions.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import statistics
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks import tasks


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or
                                            "/usr/bin/chromedriver"), options=opts)


def _settle(browser: Any, timeout: float = 20.0) -> None:
    """Wait until the page is live and Chromium has finished starting (its processes
    below 10% of a core over half a second): its start-up is not the dashboard's cost."""
    import psutil
    deadline = time.monotonic() + timeout
    while "live" not in browser.execute_script(
            "return (document.getElementById('conn') || {}).textContent || ''"):
        if time.monotonic() > deadline:
            raise RuntimeError("the dashboard page did not go live")
        time.sleep(0.05)
    procs = psutil.Process(browser.service.process.pid).children(recursive=True)
    while time.monotonic() < deadline:
        before = sum(p.cpu_times().user + p.cpu_times().system for p in procs if p.is_running())
        time.sleep(0.5)
        after = sum(p.cpu_times().user + p.cpu_times().system for p in procs if p.is_running())
        if after - before < 0.05:
            return


def _cpu(procs: list) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except Exception:       # (gone)
            pass
    return total


REPS = 5


def _timed(client: Any, fn: Any, cpu: dict | None = None, groups: dict | None = None) -> float:
    """Median wall time of REPS repetitions; puts each group's CPU seconds (mean per
    repetition) in ``cpu``."""
    times: list[float] = []
    spent = {name: 0.0 for name in (groups or {})}
    while len(times) < REPS:
        while any(client.has_what().values()):     # start from an empty cluster
            time.sleep(0.005)
        before = {name: _cpu(ps) for name, ps in (groups or {}).items()}
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        for name, ps in (groups or {}).items():
            spent[name] += _cpu(ps) - before[name]
    if cpu is not None:
        for name, v in spent.items():
            cpu[name] = v / len(times)
    return statistics.median(times)


def run_once(mode: str, n_flat: int, n_fib: int) -> dict[str, float]:
    import tasknest
    on = mode == "on"
    # "plain": no dashboard arguments at all (to run the same script on a tasknest
    # without a dashboard, to see what the workers' monitor records cost)
    kw: dict[str, Any] = {} if mode == "plain" else {"dashboard": on,
                                                      "dashboard_address": "127.0.0.1:0"}
    with tasknest.LocalCluster(n_workers=2, threads_per_worker=1, **kw) as cluster, \
            tasknest.Client(cluster) as client:
        assert client.submit(tasks.inc, -1, pure=False).result() == 0
        stop = threading.Event()
        browser = scraper = None
        scrapes = [0]
        if on:
            link = client.dashboard_link
            browser = _browser()
            browser.get(link)
            _settle(browser)
            base, key = link.split("/status?key=")

            def scrape() -> None:
                while not stop.wait(1.0):
                    with urllib.request.urlopen(f"{base}/metrics?key={key}", timeout=10) as r:
                        r.read()
                    scrapes[0] += 1
            scraper = threading.Thread(target=scrape, daemon=True)
            scraper.start()
        import psutil
        sched = psutil.Process(cluster.scheduler_proc.pid)
        workers = [q for p in cluster.worker_procs
                   for q in [psutil.Process(p.pid), *psutil.Process(p.pid).children(True)]]
        groups = {"scheduler": [sched], "workers": workers}
        if browser is not None:
            groups["browser"] = psutil.Process(browser.service.process.pid).children(True)
        cpu_flat: dict = {}
        cpu_fib: dict = {}
        try:
            flat = _timed(client, lambda: client.gather(client.map(tasks.inc, range(n_flat))),
                          cpu_flat, groups)
            fib = _timed(client, lambda: client.submit(tasks.fib_tree, n_fib, "tasknest",
                                                       pure=False).result(), cpu_fib, groups)
        finally:
            stop.set()
            if scraper is not None:
                scraper.join(5)
            if browser is not None:
                browser.quit()
        return {"flat_tasks_per_s": n_flat / flat, "fib_tree_s": fib,
                "flat_scheduler_cpu_s": cpu_flat["scheduler"],
                "flat_workers_cpu_s": cpu_flat["workers"],
                "flat_browser_cpu_s": cpu_flat.get("browser", 0.0),
                "fib_scheduler_cpu_s": cpu_fib["scheduler"],
                "fib_workers_cpu_s": cpu_fib["workers"],
                "fib_browser_cpu_s": cpu_fib.get("browser", 0.0),
                "scrapes": scrapes[0]}


def _spawn(mode: str, args: Any) -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    src = args.base_src if mode == "base" else os.path.join(root, "src")
    env["PYTHONPATH"] = os.pathsep.join([src, root])
    out = subprocess.run([sys.executable, "-m", "benchmarks.dashboard", "--one",
                          "plain" if mode == "base" else mode, "--flat", str(args.flat),
                          "--fib", str(args.fib)], env=env, capture_output=True, text=True,
                         timeout=600, cwd=root)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{mode} run failed: {out.stderr[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--flat", type=int, default=10_000)
    ap.add_argument("--fib", type=int, default=18)
    ap.add_argument("--modes", default="off,on",
                    help="off, on, and base: the tasknest in --base-src, without a dashboard")
    ap.add_argument("--base-src", default=None)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:                  # one measurement, in a fresh process: print it as JSON
        print("RESULT " + json.dumps(run_once(args.one, args.flat, args.fib)), flush=True)
        return
    modes = args.modes.split(",")
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for i in range(args.pairs):
        for mode in (modes if i % 2 == 0 else modes[::-1]):
            r = _spawn(mode, args)
            runs[mode].append(r)
            print(mode, {k: round(v, 4) for k, v in r.items()}, flush=True)
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()}
    for m in modes:
        print(m, {k: round(v, 4) for k, v in med[m].items()})
    if "off" not in med:
        return
    off = med["off"]
    for m in modes:
        if m != "off":
            r = med[m]
            print(f"{m} against off: flat {100 * (r['flat_tasks_per_s'] / off['flat_tasks_per_s'] - 1):+.1f}% "
                  f"tasks/s, fib_tree {100 * (r['fib_tree_s'] / off['fib_tree_s'] - 1):+.1f}% time; "
                  f"scheduler CPU: flat {100 * (r['flat_scheduler_cpu_s'] / off['flat_scheduler_cpu_s'] - 1):+.1f}%, "
                  f"fib_tree {100 * (r['fib_scheduler_cpu_s'] / off['fib_scheduler_cpu_s'] - 1):+.1f}%")


if __name__ == "__main__":
    main()
