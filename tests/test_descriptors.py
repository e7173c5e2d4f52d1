"""Array memfds from outside: every descriptor the daemon and a worker receive is closed
again, after a thousand transfers, after results expire, after clients that vanish in the
middle of a frame, and after each kind of bad descriptor, which gets a clear error."""
from __future__ import annotations

import os
import socket
import tempfile

import psutil
import pytest

from warmd import memfd
from warmd.client import jobspec
from warmd.fdpass import rights
from warmd.protocol import FrameReader, encode, encode_parts, hello

MiB = 2**20


def echo(x):
    return x


def first(x):
    return int(x[0])


def fds(pid: int) -> int:
    return psutil.Process(pid).num_fds()


def worker_pids(daemon) -> list[int]:
    return [p.pid for p in psutil.Process(daemon.pid).children() if "warmd.worker" in " ".join(p.cmdline())]


class Raw:
    """A client speaking the protocol by hand over its own socket."""

    def __init__(self, daemon) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(daemon.socket))
        self.sock.settimeout(60)
        self.reader = FrameReader()
        self.sock.sendall(encode(hello("test", os.getpid())))
        self.reply("welcome")

    def reply(self, kind: str = ""):
        while True:
            for frame in self.reader.frames():
                if not kind or frame.type == kind:
                    return frame
            data = self.sock.recv(65536)
            assert data, "the daemon closed the connection"
            self.reader.receive_data(data)

    def submit(self, buffers, descriptors, req: int = 1):
        """A call of ``first`` whose buffer list and descriptors are given."""
        request = jobspec.call(first, (b"",), {}, jobspec.UserModules())
        header = {"t": "submit", "req": req, **request.submit_fields(None, True), "buffers": buffers}
        head, *rest = encode_parts(header, request.payload)
        self.sock.sendmsg([head], rights(list(descriptors)))
        for piece in rest:
            self.sock.sendall(piece)
        return self.reply()

    def close(self) -> None:
        self.sock.close()


def sealed(size: int) -> memfd.Descriptor:
    fd, _ = memfd.write_sealed([memoryview(bytes(size))])
    return fd


def test_a_thousand_transfers_leave_the_daemon_and_the_worker_as_many_descriptors(make_daemon):
    import numpy as np

    # One result kept at a time: each kept result holds its memfd, by design.
    daemon = make_daemon("[workers]\nspares = 0\n[daemon]\nresult_max_jobs = 1\n")
    array = np.ones(MiB // 8)
    with daemon.client() as client:
        assert client.submit(echo, array).result(timeout=60).sum() == array.size  # warm
        (worker,) = worker_pids(daemon)
        before = fds(daemon.pid), fds(worker)
        for _ in range(1000):
            back = client.submit(echo, array).result(timeout=60)
        assert np.array_equal(back, array)
        del back
        client.ping()  # the daemon has handled everything before this
        assert (fds(daemon.pid), fds(worker)) == before


def test_descriptors_of_results_close_when_the_results_expire(make_daemon):
    import threading

    import numpy as np

    d = make_daemon("[daemon]\nresult_ttl = 1\n")
    with d.client() as client:
        client.submit(echo, 1).result(timeout=60)
        before = fds(d.pid)
        ids = [client.submit_job(jobspec.call(np.ones, (MiB // 8,), {}, jobspec.UserModules()),
                                 attach=False).job_id for _ in range(5)]
        for job_id in ids:
            client.wait(job_id)
        assert fds(d.pid) == before + 5  # each result's memfd, kept for a later attach
        # The expiry timer drops them: poll the daemon's job list for it.
        pause = threading.Event()
        for _ in range(600):
            if not {job.id for job in client.jobs()} & set(ids):
                break
            pause.wait(0.05)
        assert not {job.id for job in client.jobs()} & set(ids)
        assert fds(d.pid) == before


def test_a_client_gone_in_the_middle_of_a_frame_leaves_no_descriptor_behind(daemon):
    with daemon.client() as client:
        client.ping()
        before = fds(daemon.pid)
        for _ in range(20):
            raw = Raw(daemon)
            file = sealed(MiB)
            # A frame larger than one read, of which only the start (and its descriptor) comes.
            request = jobspec.call(first, (b"x" * 200_000,), {}, jobspec.UserModules())
            header = {"t": "submit", "req": 1, **request.submit_fields(None, True),
                      "buffers": [[0, 0, MiB]]}
            head, payload = encode_parts(header, request.payload)
            raw.sock.sendmsg([head, payload[:1000]], rights([file.fd]))
            raw.sock.shutdown(socket.SHUT_WR)  # gone mid-frame: the daemon hangs up in turn
            while raw.sock.recv(65536):
                pass
            raw.close()
        client.ping()
        assert fds(daemon.pid) == before
        assert client.submit(first, b"\3").result(timeout=60) == 3


def _tmp_file() -> int:
    fd, path = tempfile.mkstemp()
    os.unlink(path)
    os.write(fd, bytes(2 * MiB))
    return fd


def _unsealed() -> int:
    fd = os.memfd_create("unsealed", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, 2 * MiB)
    return fd


def _small() -> int:
    file = sealed(4096)
    return os.dup(file.fd)


BAD = {
    "a regular file": (_tmp_file, "not a memfd"),
    "a socket": (lambda: socket.socket(socket.AF_UNIX).detach(), "not a memfd"),
    "/dev/zero": (lambda: os.open("/dev/zero", os.O_RDONLY), "not a memfd"),
    "an unsealed memfd": (_unsealed, "not sealed"),
    "a memfd smaller than declared": (_small, "fewer than"),
}


@pytest.mark.parametrize("kind", BAD)
def test_a_bad_descriptor_gets_a_clear_error_and_is_closed(daemon, kind):
    make, message = BAD[kind]
    raw = Raw(daemon)
    before = fds(daemon.pid)
    for _ in range(5):
        fd = make()
        try:
            refused = raw.submit([[0, 0, MiB]], [fd])
        finally:
            os.close(fd)
        assert refused.type == "error" and refused.get("code") == "bad_request", refused.header
        assert message in refused.get("message"), refused.get("message")
    raw.sock.sendall(encode({"t": "ping", "req": 9}))
    assert raw.reply("pong")
    assert fds(daemon.pid) == before
    with daemon.client() as client:
        assert client.submit(first, b"\5").result(timeout=60) == 5


def test_a_buffer_list_that_does_not_match_the_descriptors_is_refused(daemon):
    raw = Raw(daemon)
    before = fds(daemon.pid)
    a, b = sealed(MiB), sealed(MiB)
    cases = [([[0, 0, MiB]], [a.fd, b.fd], "name 1 of them"),         # one descriptor too many
             ([[0, 0, MiB], [1, 0, MiB]], [a.fd], "1 descriptors came"),  # one too few
             ([[0, 0, MiB]], [], "0 descriptors came"),
             ([], [a.fd], "name 0 of them")]
    for i, (buffers, descriptors, message) in enumerate(cases):
        refused = raw.submit(buffers, descriptors, req=i + 1)
        assert refused.type == "error" and message in refused.get("message"), refused.header
    raw.sock.sendall(encode({"t": "ping", "req": 9}))
    assert raw.reply("pong")
    assert fds(daemon.pid) == before


def test_descriptors_in_the_middle_of_a_frame_end_the_connection_and_are_closed(daemon):
    raw = Raw(daemon)
    before = fds(daemon.pid)
    files = [sealed(4096) for _ in range(memfd.MAX_FDS)]
    frame = encode({"t": "ping", "req": 1, "pad": "x" * 1000})
    # More than one sendmsg may carry: the frame's start with some, its middle with the rest.
    raw.sock.sendmsg([frame[:10]], rights([f.fd for f in files[:200]]))
    raw.sock.sendmsg([frame[10:]], rights([f.fd for f in files[200:]]))
    refused = raw.reply()
    assert refused.type == "error" and "middle of a frame" in refused.get("message"), refused.header
    assert raw.sock.recv(65536) == b""  # and the daemon hung up
    raw.close()
    with daemon.client() as client:
        client.ping()
        assert fds(daemon.pid) == before
        assert client.submit(first, b"\7").result(timeout=60) == 7


HOLDER = """
import resource, sys
import numpy as np
import warmd
with warmd.Client(sys.argv[1], autostart=False) as client:
    held = [client.submit(np.full, 2**17, i).result(timeout=60) for i in range(150)]
    assert [int(a[0]) for a in held] == list(range(150))
    print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def test_a_client_holding_many_results_takes_the_descriptors_it_needs(daemon):
    import resource
    import subprocess
    import sys

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit on open descriptors is {hard}: no room to raise 64 to")

    def small_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))

    # Each result it holds keeps its memfd open: 150 of them, under a soft limit of 64.
    run = subprocess.run([sys.executable, "-c", HOLDER, str(daemon.socket)], env=daemon.env,
                         capture_output=True, text=True, timeout=120, preexec_fn=small_limit)
    assert run.returncode == 0, run.stderr[-3000:]
    assert int(run.stdout) > 64


def test_clients_that_attach_and_vanish_without_reading_leave_no_descriptor_behind(daemon):
    import numpy as np

    with daemon.client() as client:
        job = client.submit(np.ones, 8 * MiB)
        job.result(timeout=60)
        client.ping()
        before = fds(daemon.pid)
        for i in range(20):
            raw = Raw(daemon)
            raw.sock.sendall(encode({"t": "attach", "req": i, "job": job.job_id}))
            raw.sock.shutdown(socket.SHUT_WR)  # the daemon hangs up in turn: wait for it
            while raw.sock.recv(1 << 16, socket.MSG_TRUNC):  # drop what came: its memfds too
                pass
            raw.close()
        assert client.attach(job.job_id).result(timeout=60).sum() == 8 * MiB
        assert fds(daemon.pid) == before


def hold(gate: str) -> int:
    import os
    import time
    while not os.path.exists(gate):
        time.sleep(0.01)
    return 0


def test_near_its_descriptor_limit_the_daemon_refuses_buffers_clearly_and_serves_everyone(
        make_daemon, tmp_path):
    """At a lowered limit (1024), a client queues jobs of one 4 KiB array each (one memfd
    each) until the daemon refuses one with an error frame naming the limit and what to
    change; raw frames of 253 descriptors are refused the same way with the connection
    kept; other clients and new connections are served; once the queue drains there is
    room again."""
    import resource

    import numpy as np

    import warmd
    daemon = make_daemon("[workers]\ncount = 1\nspares = 0\n[buffers]\nmin_bytes = 4096\n")
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (1024, 1024))
    gate = tmp_path / "gate"
    array = np.zeros(4096, dtype=np.uint8)
    with daemon.client() as client:
        held = client.submit(hold, str(gate))
        queued, refused = [], None
        for _ in range(1024):
            future = client.submit(first, array)
            try:
                future.job_id  # the daemon's refusal raises here
            except warmd.RequestFailed as exc:
                refused = exc
                break
            queued.append(future)
        assert refused is not None and refused.code == "out_of_descriptors", len(queued)
        assert "RLIMIT_NOFILE" in str(refused) and "LimitNOFILE" in str(refused)
        assert 300 < len(queued) < 1024

        raw = Raw(daemon)
        files = [sealed(4096) for _ in range(253)]
        reply = raw.submit([[i, 0, 4096] for i in range(253)], [f.fd for f in files])
        assert reply.type == "error" and reply.get("code") == "out_of_descriptors"
        raw.sock.sendall(encode({"t": "ping", "req": 2}))
        assert raw.reply("pong") is not None  # the connection goes on
        raw.close()
        other = daemon.client()  # a new connection, and its requests
        assert other.status().daemon["pid"] == daemon.pid
        later = other.submit(sum, [1, 2])  # queued behind the others

        gate.touch()
        assert later.result(timeout=60) == 3
        other.close()
        assert held.result(timeout=60) == 0
        assert all(f.result(timeout=60) == 0 for f in queued)
        assert client.submit(first, array).result(timeout=60) == 0  # room again
