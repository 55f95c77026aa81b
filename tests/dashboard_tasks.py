"""Tasks the dashboard tests run on workers (importable by worker processes)."""
from __future__ import annotations

import logging
import time

from tasknest import worker_client


def inc(x):
    return x + 1


def tree(n, path="r", leaf_time=0.0):
    """A binary tree of tasks launched from tasks: 2**n leaves, every key distinct."""
    if n == 0:
        if leaf_time:
            time.sleep(leaf_time)       # (the workload: leaves that take a while)
        return 1
    with worker_client() as c:
        a = c.submit(tree, n - 1, path + "0", leaf_time)
        b = c.submit(tree, n - 1, path + "1", leaf_time)
        return a.result() + b.result()


def grandchild(tag):
    print(f"grandchild says {tag}")
    logging.getLogger("user.tasks").warning("grandchild logs %s", tag)
    return tag


def child(tag):
    with worker_client() as c:
        return c.submit(grandchild, tag).result()


def parent(tag):
    print(f"parent says {tag}")
    for _ in range(3):
        print("same line again")
    logging.getLogger("user.tasks").warning("parent logs %s", tag)
    with worker_client() as c:
        return c.submit(child, tag).result()


def fails(x):
    raise ValueError(f"bad input {x}")


def gated_tree(n, flag, gate=2, path="g", leaf_time=0.0):
    """tree(), but the tasks ``gate`` levels down wait until ``flag`` exists before they
    launch their children: the tree grows in two steps a test controls."""
    if len(path) - 1 == gate:
        from conftest import wait_for_file
        wait_for_file(flag, 120)
    if n == 0:
        if leaf_time:
            time.sleep(leaf_time)       # (the workload: leaves that take a while)
        return 1
    with worker_client() as c:
        a = c.submit(gated_tree, n - 1, flag, gate, path + "0", leaf_time)
        b = c.submit(gated_tree, n - 1, flag, gate, path + "1", leaf_time)
        return a.result() + b.result()
