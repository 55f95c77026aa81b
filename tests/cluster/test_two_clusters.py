"""Futures that arrive in a process bind to the client that received them."""
from __future__ import annotations

import pytest

from tasknest import Client, LocalCluster, Queue, get_client

pytestmark = pytest.mark.timeout(60)


def squares_inside(x: int) -> list:
    return [get_client().submit(pow, x, 2)]


def test_two_clusters_in_one_process_each_gather_their_own_returned_futures():
    with LocalCluster(n_workers=1, threads_per_worker=1) as a, \
            LocalCluster(n_workers=1, threads_per_worker=1) as b, \
            Client(a) as ca, Client(b) as cb:      # cb is made last: the default
        inner_a = ca.submit(squares_inside, 3).result(timeout=30)[0]
        inner_b = cb.submit(squares_inside, 4).result(timeout=30)[0]
        assert inner_a.client is ca and inner_b.client is cb
        assert ca.gather(inner_a, timeout=30) == 9 and cb.gather(inner_b, timeout=30) == 16
        q = Queue("from-a", client=ca)
        q.put(ca.submit(pow, 5, 2))
        got = q.get(timeout=10)
        assert got.client is ca and got.result(timeout=30) == 25
