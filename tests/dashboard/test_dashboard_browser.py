"""A real browser (headless Chromium driven by selenium) watches a nested computation.

It opens ``dashboard_link`` while a tree of tasks launched from tasks runs, sees the
task stream fill and the spawn tree grow, opens a task's page, and the console shows
no JavaScript error. With TASKNEST_SCREENSHOTS=DIR it saves a screenshot of each page
there (docs/img/ holds the committed ones). Under CI=true a missing Chromium fails.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import tasknest
from tasknest import Client, LocalCluster

from conftest import wait_until
from dashboard_tasks import gated_tree, tree

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)


def _browser():
    if not (CHROMIUM and DRIVER):
        if os.environ.get("CI") == "true":
            pytest.fail("headless Chromium and chromedriver (Debian: chromium, "
                        "chromium-driver) are needed for the dashboard's browser test")
        pytest.skip("chromium / chromedriver not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1300,900"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


@pytest.fixture
def browser():
    driver = _browser()
    try:
        yield driver
    finally:
        driver.quit()


def _shots(tmp_path: Path) -> Path:
    out = os.environ.get("TASKNEST_SCREENSHOTS")
    path = Path(out) if out else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path


def _errors(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _read(fn, default=None):
    """The page re-renders on every tick: an element may go stale between find and read."""
    from selenium.common.exceptions import StaleElementReferenceException
    try:
        return fn()
    except StaleElementReferenceException:
        return default


def _int(driver, css: str, attr: str) -> int:
    def read() -> int:
        els = driver.find_elements("css selector", css)
        return int(els[0].get_attribute(attr) or 0) if els else 0
    return _read(read, 0)


def _text(driver, by: str, what: str) -> str:
    def read() -> str:
        els = driver.find_elements(by, what)
        return els[0].text if els else ""
    return _read(read, "")


@pytest.mark.timeout(180)
def test_a_browser_watches_a_nested_computation(browser, tmp_path):
    shots = _shots(tmp_path)
    flag = tmp_path / "grow"
    with LocalCluster(n_workers=2, threads_per_worker=2, dashboard_address="127.0.0.1:0") \
            as cluster, Client(cluster) as c:
        link = c.dashboard_link
        assert link == cluster.dashboard_link
        base = link.split("/status")[0]
        # 255 tasks, 128 leaves of 0.15 s; the 4 tasks two levels down wait for the flag
        # before they launch theirs
        root = c.submit(gated_tree, 7, str(flag), 2, "g", 0.15)
        browser.get(link)
        wait_until(lambda: "live" in _text(browser, "id", "conn"), 60,
                   message="the page is live")
        # the workers page asks a worker for the call stacks of its running tasks
        browser.get(base + "/workers")

        def stacks_text() -> str:
            return _read(lambda: "\n".join(
                e.text for e in browser.find_elements("css selector", "pre.stack")), "")
        asked = [0]

        def ask_stacks() -> bool:        # each worker's button in turn (the page re-renders)
            def click() -> None:
                buttons = browser.find_elements("css selector", "button.stacks")
                if buttons:
                    buttons[asked[0] % len(buttons)].click()
                    asked[0] += 1
            _read(click)
            return "wait_for_file" in stacks_text()
        wait_until(ask_stacks, 30, interval=0.2, message="a running task's call stack")
        browser.save_screenshot(str(shots / "workers.png"))
        browser.get(base + "/tree")
        wait_until(lambda: _int(browser, "#tree", "data-nodes") >= 7, 60,
                   message="the spawn tree shows its first levels")
        first = _int(browser, "#tree", "data-nodes")
        assert first == 7                   # root, 2 children, 4 grandchildren: all waiting
        flag.touch()
        wait_until(lambda: _int(browser, "#tree", "data-nodes") > first, 60,
                   message="the spawn tree grows")
        browser.save_screenshot(str(shots / "tree.png"))
        browser.get(link)
        wait_until(lambda: _int(browser, "canvas#stream", "data-bars") > 0, 60,
                   message="the task stream fills")
        browser.save_screenshot(str(shots / "status.png"))
        assert root.result(timeout=120) == 128
        browser.get(base + "/tree")
        opened: list = []

        def open_a_task() -> bool:       # click the first child's link in the tree
            def click() -> bool:
                links = browser.find_elements("css selector", "#tree a.key")
                if len(links) < 2:
                    return False
                link_el = links[1]
                opened.append(link_el.text)
                link_el.click()
                return True
            return bool(_read(click, False))
        wait_until(open_a_task, 30)
        wait_until(lambda: _text(browser, "id", "task-key") == opened[-1], 30,
                   message="a task's page opens")
        page = _text(browser, "tag name", "main")
        assert "parent" in page and root.key in page and "gated_tree" in page
        assert "http://" not in page            # (children are links, shown as keys)
        browser.save_screenshot(str(shots / "task.png"))

        def tree_from_here() -> bool:
            def click() -> bool:
                browser.find_element("link text", "the spawn tree from here").click()
                return True
            return bool(_read(click, False))
        wait_until(tree_from_here, 30)
        wait_until(lambda: _int(browser, "#tree", "data-nodes") > 1 and
                   "The tree under" in _text(browser, "tag name", "main"), 30,
                   message="the spawn tree from a task")
        bad = c.submit(_fails, 1)
        bad.exception()
        browser.get(base + "/failures")
        wait_until(lambda: browser.find_elements("css selector", "#failures td"), 30,
                   message="the failure is listed")
        browser.save_screenshot(str(shots / "failures.png"))
        assert not _errors(browser), _errors(browser)
        # without the key, nothing
        browser.delete_all_cookies()
        browser.get(base + "/status")
        assert "401" in _text(browser, "tag name", "body")


def _fails(x):
    raise RuntimeError(f"this task fails on purpose ({x})")


@pytest.mark.timeout(120)
def test_performance_report_renders_in_a_browser(browser, tmp_path):
    path = tmp_path / "report.html"
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard=False) as cluster, Client(cluster) as c:
        with tasknest.performance_report(str(path)):
            assert c.submit(tree, 3, "report").result() == 8
    browser.get(path.as_uri())
    wait_until(lambda: browser.find_elements("css selector", "svg rect"), 30)
    assert len(browser.find_elements("css selector", "svg rect")) == 15
    assert "Spawn tree" in browser.find_element("tag name", "body").text
    assert not _errors(browser), _errors(browser)
