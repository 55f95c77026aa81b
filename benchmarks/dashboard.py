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
import shutil
import statistics
import threading
import time
import urllib.request
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


def _timed(client: Any, fn: Any) -> float:
    times: list[float] = []
    while sum(times) < 1.0 and len(times) < 5:
        while any(client.has_what().values()):     # start from an empty cluster
            time.sleep(0.005)
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
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
        try:
            flat = _timed(client, lambda: client.gather(client.map(tasks.inc, range(n_flat))))
            fib = _timed(client, lambda: client.submit(tasks.fib_tree, n_fib, "tasknest",
                                                       pure=False).result())
        finally:
            stop.set()
            if scraper is not None:
                scraper.join(5)
            if browser is not None:
                browser.quit()
        return {"flat_tasks_per_s": n_flat / flat, "fib_tree_s": fib, "scrapes": scrapes[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--flat", type=int, default=10_000)
    ap.add_argument("--fib", type=int, default=15)
    ap.add_argument("--modes", default="off,on", help="off, on, plain (see run_once)")
    args = ap.parse_args()
    modes = args.modes.split(",")
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for i in range(args.pairs):
        for mode in (modes if i % 2 == 0 else modes[::-1]):
            r = run_once(mode, args.flat, args.fib)
            runs[mode].append(r)
            print(mode, {k: round(v, 4) for k, v in r.items()}, flush=True)
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()}
    for m in modes:
        print(m, {k: round(v, 4) for k, v in med[m].items()})
    if "on" not in med or "off" not in med:
        return
    print(f"flat {args.flat}: off {med['off']['flat_tasks_per_s']:.0f} tasks/s, "
          f"on {med['on']['flat_tasks_per_s']:.0f} tasks/s "
          f"({100 * (med['on']['flat_tasks_per_s'] / med['off']['flat_tasks_per_s'] - 1):+.1f}%)")
    print(f"fib_tree {args.fib}: off {med['off']['fib_tree_s']:.3f} s, "
          f"on {med['on']['fib_tree_s']:.3f} s "
          f"({100 * (med['on']['fib_tree_s'] / med['off']['fib_tree_s'] - 1):+.1f}% time)")


if __name__ == "__main__":
    main()
