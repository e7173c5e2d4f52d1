"""Bad input of every kind gets a clear error, and the daemon keeps serving."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import signal
import textwrap

import pytest

import warmd
from warmd.client.jobspec import JobRequest
from warmd.protocol import PREFIX, PROTOCOL_VERSION, FrameReader, encode, hello, source_digest

import helpers_jobs


def raw(daemon) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(daemon.socket))
    s.settimeout(30)
    return s


def read_frames(sock: socket.socket) -> list:
    """Every frame until the daemon closes the connection."""
    reader = FrameReader()
    frames = []
    while True:
        data = sock.recv(65536)
        if not data:
            return frames
        reader.receive_data(data)
        frames += reader.frames()


def still_serving(daemon) -> None:
    with daemon.client() as client:
        assert client.submit(helpers_jobs.add, 1, 1).result(timeout=30) == 2


def test_garbage_bytes(daemon):
    with raw(daemon) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        frames = read_frames(s)
    assert frames[-1].type == "error" and frames[-1].get("code") == "version_mismatch"
    assert "protocol" in frames[-1].get("message")
    still_serving(daemon)


def test_replies_held_for_one_read_still_precede_the_error_that_ends_it(daemon):
    # Replies to one read leave in one write at its end; bad bytes later in the same
    # read must not swallow the replies already due.
    with raw(daemon) as s:
        s.sendall(encode(hello("test", os.getpid())) + encode({"t": "ping", "req": 1})
                  + b"GET / HTTP/1.1\r\n\r\n")
        frames = read_frames(s)
    assert [f.type for f in frames] == ["welcome", "pong", "error"]
    assert frames[-1].get("code") == "version_mismatch"
    still_serving(daemon)


def test_truncated_frame_then_disconnect(daemon):
    with raw(daemon) as s:
        s.sendall(encode(hello("test", os.getpid())))
        s.sendall(encode({"t": "ping", "req": 1}, b"x" * 100)[:20])
    still_serving(daemon)
    assert "in the middle of a frame" in daemon.log_text()


def test_oversized_frame(make_daemon):
    d = make_daemon('[daemon]\nmax_frame = "1MiB"\n')
    with raw(d) as s:
        s.sendall(encode(hello("test", os.getpid())))
        s.sendall(PREFIX.pack(PROTOCOL_VERSION, 0, 20, 2 * 1024 * 1024))  # claims a 2 MiB payload
        frames = read_frames(s)
    assert frames[-1].get("code") == "frame_too_large"
    assert "exceeds the limit" in frames[-1].get("message")
    still_serving(d)


def test_unknown_message_type_keeps_the_connection(daemon):
    with raw(daemon) as s:
        s.sendall(encode(hello("test", os.getpid())) + encode({"t": "bogus", "req": 1})
                  + encode({"t": "ping", "req": 2}))
        reader = FrameReader()
        got = []
        while len(got) < 3:
            reader.receive_data(s.recv(65536))
            got += reader.frames()
    assert [f.type for f in got] == ["welcome", "error", "pong"]
    assert got[1].get("code") == "unknown_message" and "bogus" in got[1].get("message")


def test_request_before_handshake_and_bad_fields(daemon):
    with raw(daemon) as s:
        s.sendall(encode({"t": "ping", "req": 1}))
        frames = read_frames(s)
    assert frames[-1].get("code") == "bad_request" and "hello" in frames[-1].get("message")
    with raw(daemon) as s:
        s.sendall(encode(hello("test", os.getpid())) + encode({"t": "submit", "req": 1, "kind": "nope"}))
        reader = FrameReader()
        got = []
        while len(got) < 2:
            reader.receive_data(s.recv(65536))
            got += reader.frames()
    assert got[1].get("code") == "bad_request" and "kind" in got[1].get("message")
    still_serving(daemon)


def read_until(sock: socket.socket, reader: FrameReader, done) -> list:
    """Frames until ``done(frames)`` holds."""
    frames: list = []
    while not done(frames):
        data = sock.recv(65536)
        assert data, f"the daemon hung up after {[f.header for f in frames]}"
        reader.receive_data(data)
        frames += reader.frames()
    return frames


def test_module_sources_travel_once_per_connection_and_are_checked(daemon):
    source, path = b"def which():\n    return 'sent'\n", "/nonexistent/userstep.py"
    sha = source_digest(path, source)
    call = b"\x80\x02cuserstep\nwhich\n)}\x87."  # (userstep.which, (), {})

    def submit(req: int) -> bytes:
        return encode({"t": "submit", "req": req, "kind": "call", "name": "t",
                       "modules": {"userstep": sha}}, call)

    def source_frame(digest: str) -> bytes:
        return encode({"t": "source", "name": "userstep", "path": path, "sha": digest}, source)

    reader = FrameReader()
    with raw(daemon) as s:
        # A submit naming a source this connection never sent: refused, the connection stays.
        s.sendall(encode(hello("test", os.getpid())) + submit(1))
        got = read_until(s, reader, lambda fs: len(fs) >= 2)
        assert got[1].get("code") == "bad_request" and "userstep" in got[1].get("message")
        # Sent once, then named by two submits.
        s.sendall(source_frame(sha) + submit(2) + submit(3))
        got = read_until(s, reader, lambda fs: sum(f.type == "done" for f in fs) == 2)
        assert [f.get("job") for f in got if f.type == "accepted"] == [f.get("job") for f in got if f.type == "done"]
        assert [pickle.loads(f.payload) for f in got if f.type == "done"] == ["sent", "sent"]
        # A digest that does not match the source is an error.
        s.sendall(source_frame("0" * 64))
        got = read_until(s, reader, lambda fs: any(f.type == "error" for f in fs))
        assert got[-1].get("code") == "bad_request" and "sha does not match" in got[-1].get("message")
    still_serving(daemon)


def test_wrong_protocol_and_python_versions(daemon):
    with raw(daemon) as s:
        s.sendall(struct.pack(">BBHI", 9, 0, 2, 0) + b"{}")
        frames = read_frames(s)
    assert frames[-1].get("code") == "version_mismatch"
    assert "speaks warmd protocol 9" in frames[-1].get("message")
    with raw(daemon) as s:
        s.sendall(encode({**hello("test", os.getpid()), "python": "2.7"}))
        frames = read_frames(s)
    message = frames[-1].get("message")
    assert frames[-1].get("code") == "version_mismatch"
    assert "Python 2.7" in message and "same Python minor version" in message
    still_serving(daemon)


def test_payload_that_fails_to_unpickle_in_the_worker(daemon):
    call = b"\x80\x02cno_such_module_xyz\nfn\n)}\x87."  # (no_such_module_xyz.fn, (), {})
    with daemon.client() as client:
        future = client.submit_job(JobRequest("call", "broken", call))
        with pytest.raises(Exception) as info:
            future.result(timeout=30)
        assert "could not be unpickled" in str(info.value)
        assert "no_such_module_xyz" in str(info.value)
        worker = future.finished.worker_pid
        again = client.submit(helpers_jobs.pid)
        assert again.result(timeout=30) in {w.pid for w in client.status().workers}
    assert worker


def test_result_that_cannot_be_pickled(daemon):
    with daemon.client() as client:
        client.run_code("import threading").result(timeout=30)  # fine: code has no result
        with pytest.raises(TypeError, match="pickle"):  # the pickling error's own type
            client.submit(_lock_factory).result(timeout=30)


def _lock_factory():
    import threading
    return threading.Lock()


def test_a_daemon_nobody_can_reach_leaves_once_its_clients_are_gone(make_daemon):
    """Its socket file removed with its runtime directory (a logout, a cleaned /tmp): the
    daemon serves the client it has, then stops instead of holding warm workers for nobody."""
    daemon = make_daemon()
    client = daemon.client()
    shutil.rmtree(daemon.socket.parent)
    assert client.submit(sum, [1, 2]).result(timeout=30) == 3
    client.close()
    assert daemon.proc.wait(timeout=120) == 0
    assert "no client can reach this daemon" in daemon.log_text()


def test_unknown_job(daemon):
    r = daemon.warmctl("wait", "deadbeef")
    assert r.returncode == 66
    assert "no job 'deadbeef'" in r.stderr
    r = daemon.warmctl("attach", "deadbeef")
    assert r.returncode == 66


def test_unreachable_daemon_is_a_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "warmd.ctl", "--socket", str(tmp_path / "none.sock"),
                        "--no-autostart", "status"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 69
    assert r.stderr.count("\n") == 1 and "no warmd daemon answers" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
@pytest.mark.skipif(not shutil.which("setpriv") or not os.path.exists("/usr/bin/python3"),
                    reason="needs setpriv and /usr/bin/python3")
def test_other_uid_is_refused(daemon):
    # Open the file-system permissions on purpose: SO_PEERCRED is the second line of defence.
    os.chmod(daemon.root, 0o755)
    os.chmod(daemon.socket.parent, 0o755)
    os.chmod(daemon.socket, 0o666)
    client = textwrap.dedent(f"""
        import json, os, socket, struct
        s = socket.socket(socket.AF_UNIX); s.connect({str(daemon.socket)!r})
        head = json.dumps({{"t": "hello", "proto": 1, "python": "3.11", "cloudpickle": "x",
                            "client": "t", "pid": os.getpid()}}).encode()
        s.sendall(struct.pack(">BBHI", 1, 0, len(head), 0) + head)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        print(data[8:8 + struct.unpack(">BBHI", data[:8])[2]].decode())
    """)
    r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                        "/usr/bin/python3", "-c", client], capture_output=True, text=True, timeout=30,
                       cwd="/")
    assert r.returncode == 0, r.stderr
    reply = json.loads(r.stdout)
    assert reply["code"] == "permission_denied"
    assert "refused a connection" in daemon.log_text()
    still_serving(daemon)


def test_config_errors_name_the_key(tmp_path):
    cases = {"[daemon]\nbogus = 1\n": "daemon.bogus", "[workers]\ncount = -1\n": "workers.count",
             "[warmup]\nhooks = ['nocolon']\n": "warmup.hooks", "[nosuch]\nx = 1\n": "[nosuch]",
             "[workers]\ndevices = 'some'\n": "workers.devices", "not toml [": "not valid TOML"}
    for text, key in cases.items():
        cfg = tmp_path / "bad.toml"
        cfg.write_text(text)
        r = subprocess.run([sys.executable, "-m", "warmd", "--config", str(cfg), "--socket",
                            str(tmp_path / "s.sock")], capture_output=True, text=True, timeout=30)
        assert r.returncode == 78, (text, r.stderr)
        assert key in r.stderr, (text, r.stderr)


def test_failing_warmup_is_reported_and_not_respawned_in_a_loop(make_daemon):
    d = make_daemon('[warmup]\nhooks = ["helpers_jobs:no_such_hook"]\n')
    with d.client() as client:
        # The first submission races the first warm-up; either way it fails with the reason.
        with pytest.raises(Exception, match="no_such_hook"):
            while True:
                client.submit(helpers_jobs.add, 1, 2).result(timeout=30)
        status = client.status()
    assert "no_such_hook" in status.warmup_error
    assert "warm-up failing" in status.summary
    assert "retrying in" in d.log_text()
    r = d.warmctl("status")
    assert "warm-up failing" in r.stdout


def test_two_clients_autostarting_at_once_make_one_daemon(tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, XDG_RUNTIME_DIR=str(run), XDG_STATE_HOME=str(tmp_path / "state"))
    env.pop("WARMD_SOCKET", None)
    sock = str(run / "warmd.sock")
    if len(sock) > 100:
        pytest.skip("temporary path too long for a Unix socket")
    cmd = [sys.executable, "-m", "warmd.ctl", "ping", "--json"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    try:
        assert all(p.returncode == 0 for p in procs), outs
        pids = {json.loads(o)["pid"] for o, _ in outs}
        assert len(pids) == 1
        assert {json.loads(o)["started_by"] for o, _ in outs} == {"autostart"}
    finally:
        subprocess.run([sys.executable, "-m", "warmd.ctl", "shutdown"], env=env, timeout=60)
    import psutil
    daemon_pid = pids.pop()
    try:
        psutil.Process(daemon_pid).wait(timeout=30)
    except psutil.NoSuchProcess:
        pass
    assert not psutil.pid_exists(daemon_pid)


def _big(n):
    return b"x" * n


def test_jobs_and_results_over_the_frame_limit_are_clear_errors(make_daemon):
    d = make_daemon('[daemon]\nmax_frame = "1MiB"\n')
    with d.client() as client:
        with pytest.raises(warmd.FrameTooLarge, match="daemon.max_frame"):
            client.submit(len, b"x" * (2 * 1024 * 1024))
        with pytest.raises(warmd.RemoteError, match="daemon.max_frame"):
            client.submit(_big, 2 * 1024 * 1024).result(timeout=30)
        worker_pids = {w.pid for w in client.status().workers}
        assert len(client.submit(_big, 1000).result(timeout=30)) == 1000
        assert worker_pids == {w.pid for w in client.status().workers}  # nobody was killed


def test_named_config_files_must_exist_and_sizes_take_every_unit(tmp_path):
    env = dict(os.environ, WARMD_CONFIG=str(tmp_path / "missing.toml"))
    r = subprocess.run([sys.executable, "-m", "warmd", "--socket", str(tmp_path / "s.sock")],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 78 and "missing.toml does not exist" in r.stderr
    from warmd.config import parse_size
    assert [parse_size(v) for v in ("2Gi", "4KiB", "1M", "3tb")] == [2 * 1024**3, 4096, 10**6, 3 * 10**12]
    with pytest.raises(ValueError):
        parse_size("0.5")


def test_a_clean_stop_removes_the_socket_and_leaves_only_the_jobs_it_kept(daemon):
    def stop_and_look() -> list[str]:
        assert daemon.socket.exists()
        assert daemon.warmctl("shutdown").returncode == 0
        assert daemon.proc.wait(timeout=30) == 0
        return [p.name for p in daemon.socket.parent.iterdir() if p.name != "warmd.sock.lock"]

    with daemon.client() as client:
        job = client.submit(helpers_jobs.add, 1, 1)
        assert job.result(timeout=30) == 2
    [ledger] = stop_and_look()  # the one finished job, for the next daemon
    assert ledger.startswith("warmd.sock.jobs.") and job.job_id in (daemon.socket.parent / ledger).read_text()

    daemon.start()
    with daemon.client() as client:
        assert [j.id for j in client.jobs()] == [job.job_id]
        client.forget([job.job_id])
    assert stop_and_look() == []  # nothing held: nothing left


def test_a_daemon_crash_is_reported_as_lost_jobs_not_as_jobs_to_re_attach(make_daemon):
    d = make_daemon("[workers]\ncount = 2\n")
    code = "import time\nprint('running', flush=True)\ntime.sleep(300)"
    follower = subprocess.Popen([sys.executable, "-m", "warmd.ctl", "--socket", str(d.socket),
                                 "--no-autostart", "exec", "-c", code],
                                env=d.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with d.client() as client:
        future = client.run_code(code)
        job_id = future.job_id
        for event in future.events():
            if getattr(event, "text", "").startswith("running"):
                break
        assert follower.stdout.readline() == "running\n"
        os.kill(d.pid, signal.SIGKILL)
        with pytest.raises(warmd.JobLost) as lost:
            future.result(timeout=60)
    assert "lost" in str(lost.value) and "re-attach" not in str(lost.value)
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 125, err
    assert "is lost" in err and "re-attach" not in err
    # The next daemon on the socket knows the job from the ledger, and wait says what happened.
    d.proc.wait(30)
    d.start()
    waited = d.warmctl("wait", job_id)
    assert waited.returncode == 125
    assert "lost" in waited.stderr and "restarted" in waited.stderr
