"""The client's connection to the scheduler, which any thread writes to directly."""
from __future__ import annotations

import asyncio
import threading

import pytest

from tasknest.client.loop import new_event_loop
from tasknest.protocol import messages as m
from tasknest.protocol.comm import connect, listen


def _run(coro):
    loop = new_event_loop()         # the event loop clients run on (uvloop when present)
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


@pytest.mark.timeout(60)
def test_threads_writing_at_once_interleave_whole_messages_in_order():
    """Eight threads send 2,000 messages each (waking the comm now and then, so
    they write frames themselves): every message arrives once, whole, and each
    thread's in the order it sent them."""
    threads, per_thread = 8, 2000

    async def main() -> None:
        keys: list[str] = []        # adjacent wants merge: count their keys
        done = asyncio.Event()

        def on_comm(comm):
            def handle(msg):
                keys.extend(msg.keys)
                if len(keys) == threads * per_thread:
                    done.set()
            comm.start(handle)

        listener = await listen("tcp://127.0.0.1:0", on_comm, "secret")
        comm = await connect(listener.address, "secret", threadsafe=True)
        assert comm._direct, "the client side should use the thread-safe transport"
        comm.start(lambda msg: None)

        def sender(t: int) -> None:
            for i in range(per_thread):
                comm.send_threadsafe(m.Want(keys=[f"t{t}-{i}-" + "x" * (i % 300)]))
                if i % 7 == 0:
                    comm.wake()
            comm.wake()
        workers = [threading.Thread(target=sender, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: [w.join() for w in workers])
        await asyncio.wait_for(done.wait(), 30)
        assert len(keys) == threads * per_thread
        for t in range(threads):
            mine = [int(k.split("-")[1]) for k in keys if k.startswith(f"t{t}-")]
            assert mine == list(range(per_thread))
        comm.close()
        listener.close()
    _run(main())


@pytest.mark.timeout(60)
def test_frames_larger_than_the_socket_buffer_arrive_whole(client):
    """40 MB through the direct path (a submit's argument, written by this thread)
    and through the loop (a scatter): partial writes are finished by the loop."""
    blob = bytes(range(256)) * (40 * 1024 * 1024 // 256)
    assert client.submit(len, blob).result(timeout=30) == len(blob)
    [f] = client.scatter([blob])
    assert client.submit(len, f).result(timeout=30) == len(blob)


@pytest.mark.timeout(20)
def test_a_write_on_the_loop_that_meets_a_closed_peer_reports_the_loss():
    """A write from the loop's own thread that fails (the peer is gone) reports the
    connection lost; it used to take the transport's lock a second time and hang the
    loop (a client's loop froze when the scheduler was killed under load)."""
    import socket

    from tasknest.protocol.transport import SocketTransport

    async def main() -> None:
        lost: list = []

        class Proto(asyncio.Protocol):
            def connection_lost(self, exc):
                lost.append(exc)

        ours, theirs = socket.socketpair()
        transport = SocketTransport(asyncio.get_running_loop(), ours, Proto())
        theirs.close()
        transport.writelines([b"x" * 1024])     # on the loop's thread: EPIPE
        assert len(lost) == 1 and isinstance(lost[0], OSError), lost
        assert transport.is_closing()
        transport.writelines([b"y"])            # a closed transport takes nothing more
        assert len(lost) == 1

    _run(main())
