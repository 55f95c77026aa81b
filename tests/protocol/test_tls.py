"""A cluster over TLS (temporary self-signed certificate) runs the specification's examples;
plain TCP, a foreign certificate or a missing client certificate get nowhere."""
from __future__ import annotations


import pytest

pytest.importorskip("cryptography", reason="temporary certificates need the 'tls' extra")

from rawpeer import RawPeer, evil_frames  # noqa: E402
from tasknest import Client, LocalCluster  # noqa: E402
from tasknest.demo import expected, fib, seed_options  # noqa: E402
from tasknest.deploy.security import Security  # noqa: E402
from tasknest.errors import AuthenticationError  # noqa: E402
from tasknest.protocol.comm import ConnectError  # noqa: E402


@pytest.fixture(scope="module")
def tls_cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, security=True) as c:
        yield c


@pytest.mark.timeout(60)
def test_seed_examples_over_tls(tls_cluster):
    assert tls_cluster.scheduler_address.startswith("tls://127.0.0.1:")
    with Client(tls_cluster) as e:
        workers = list(e.scheduler_info(-1)["workers"].values())
        assert len(workers) == 2 and all(w["address"].startswith("tls://") for w in workers)
        results = seed_options(e, "x://d")          # the seed's three ways, tasks from tasks too
        assert len(results) == 3 and set(results.values()) == {expected("x://d")}, results
        assert e.submit(fib, 100).result() == 354224848179261915075
        # results fetched from workers over TLS too (not only inline in messages)
        big = e.submit(bytes, 1 << 20)
        assert e.gather(big) == bytes(1 << 20)


@pytest.mark.timeout(30)
def test_plain_tcp_client_cannot_talk_to_a_tls_cluster(tls_cluster, tmp_path):
    plain = tls_cluster.scheduler_address.replace("tls://", "tcp://")
    with pytest.raises(ConnectError, match="no tasknest handshake"):
        Client(plain, token=tls_cluster.token, timeout=2)
    with pytest.raises(ValueError, match="tls:// address: pass security"):
        Client(tls_cluster.scheduler_address, token=tls_cluster.token, timeout=2)
    # raw bytes in the clear: no greeting comes back, the server hangs up, nothing is read
    evil = tmp_path / "must-not-exist"
    peer = RawPeer(plain)
    try:
        for data in evil_frames(evil):
            peer.send(data)
        assert peer.closed_by_server(timeout=10) is not None
    finally:
        peer.close()
    with Client(tls_cluster) as e:
        assert e.submit(len, "abc").result(timeout=20) == 3
    assert not evil.exists()


@pytest.mark.timeout(30)
def test_foreign_certificate_or_no_client_certificate_is_refused(tls_cluster, tmp_path):
    stranger = Security.temporary(str(tmp_path))
    with pytest.raises(AuthenticationError, match="TLS"):
        Client(tls_cluster.scheduler_address, token=tls_cluster.token, security=stranger,
               timeout=5)
    # the right CA, but no certificate of our own: the servers require one
    ca_only = Security(tls_ca=tls_cluster.security.tls_ca)
    with pytest.raises(AuthenticationError):
        Client(tls_cluster.scheduler_address, token=tls_cluster.token, security=ca_only,
               timeout=5)


@pytest.mark.timeout(30)
def test_tls_does_not_replace_the_token(tls_cluster):
    with pytest.raises(AuthenticationError, match="handshake|token"):
        Client(tls_cluster.scheduler_address, token="wrong", security=tls_cluster.security,
               timeout=5)


@pytest.mark.timeout(30)
def test_temporary_certificate_files_are_private_and_removed_on_close():
    import os
    import stat
    with LocalCluster(n_workers=1, processes=False, security=True) as lc:
        d = lc.security.temporary_dir
        assert d and os.path.isdir(d)
        assert stat.S_IMODE(os.stat(lc.security.tls_key).st_mode) == 0o600
        with Client(lc) as e:
            assert e.submit(len, "ab").result(timeout=20) == 2
    assert not os.path.exists(d)
