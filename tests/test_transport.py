"""The daemon's own AF_UNIX transport, from outside: descriptors a peer sends with a frame
that takes none are refused and closed, a reader that stalls in the middle of a large result holds up nobody, and a large result
leaves no copy behind in the daemon."""
from __future__ import annotations

import array
import os
import socket
import time
from contextlib import ExitStack

import psutil

from warmd.protocol import FrameReader, encode, hello

MiB = 2**20


def fill(n):
    return b"\1" * n


def _ping_with_descriptors(sock: socket.socket, count: int) -> None:
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(count)]
    try:
        frame = encode({"t": "ping", "req": 1})
        sock.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())])
    finally:
        for fd in fds:
            os.close(fd)


def _reply(sock: socket.socket, reader: FrameReader, kind: str):
    while True:
        for frame in reader.frames():
            if frame.type == kind:
                return frame
        data = sock.recv(65536)
        assert data, "the daemon closed the connection"
        reader.receive_data(data)


def test_descriptors_a_client_sends_are_closed_and_the_connection_goes_on(daemon):
    process = psutil.Process(daemon.pid)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(daemon.socket))
        s.settimeout(30)
        s.sendall(encode(hello("test", os.getpid())))
        reader = FrameReader()
        _reply(s, reader, "welcome")
        before = process.num_fds()
        for _ in range(20):
            _ping_with_descriptors(s, 16)
            refused = _reply(s, reader, "error")
            assert "takes no descriptors" in refused.get("message"), refused.header
            s.sendall(encode({"t": "ping", "req": 2}))
            assert _reply(s, reader, "pong").get("pid") == daemon.pid
        assert process.num_fds() == before


def test_clients_that_stop_reading_a_large_result_hold_up_nobody_and_cost_no_copies(daemon):
    with daemon.client() as client:
        done = client.submit(fill, 64 * MiB)
        done.result(timeout=60)
        job_id = done.job_id
    process = psutil.Process(daemon.pid)
    with ExitStack() as stack:
        for _ in range(4):  # each attaches, then never reads
            stalled = stack.enter_context(socket.socket(socket.AF_UNIX))
            stalled.connect(str(daemon.socket))
            stalled.sendall(encode(hello("test", os.getpid()))
                            + encode({"t": "attach", "req": 1, "job": job_id}))
        with daemon.client() as other:
            for _ in range(3):
                assert other.attach(job_id).result(timeout=60) == b"\1" * (64 * MiB)
            assert other.submit(fill, 3).result(timeout=60) == b"\1\1\1"
        # What the stalled readers have not taken waits as the job's own kept bytes: copied
        # for each of them, it would be 4 x 64 MiB more.
        assert process.memory_info().rss < 3 * 64 * MiB


def _settles_at(read, expected: int, timeout: float = 10.0) -> bool:
    """Whether ``read()`` comes back to ``expected``: the daemon closes a connection when its
    loop gets to the hang-up, a moment after the client's close, and says nothing of it."""
    deadline = time.monotonic() + timeout
    while read() != expected:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_client_gone_in_the_middle_of_a_large_frame_leaves_nothing_behind(daemon):
    process = psutil.Process(daemon.pid)
    keeper = daemon.client()  # one connection throughout, and the job ledger open
    keeper.submit(fill, 1).result(timeout=60)
    fds, rss = process.num_fds(), process.memory_info().rss
    frame = encode({"t": "submit", "req": 1, "kind": "code"}, b"#" * (200 * MiB))
    for _ in range(3):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(daemon.socket))
            s.sendall(encode(hello("test", os.getpid())) + frame[:len(frame) // 2])
        assert keeper.submit(fill, 2).result(timeout=60) == b"\1\1"  # served after it
    assert _settles_at(process.num_fds, fds), (process.num_fds(), fds)
    keeper.close()
    assert process.memory_info().rss < rss + 150 * MiB  # not three 200 MiB buffers kept
    assert "in the middle of a frame" in daemon.log_text()
