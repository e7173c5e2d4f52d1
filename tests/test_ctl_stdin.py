"""A job's stdin, as a shell user pipes it: `grep x list | warmctl run script.py` reads the
caller's pipe live to its EOF, so do the programs the job starts, and the next job reads
/dev/null again; --no-stdin, a terminal and a closed stdin give the job none. Against a
real daemon: command, output and exit status."""
from __future__ import annotations

import asyncio
import json
import os
import pty
import shlex
import signal
import socket
import subprocess
import sys

import psutil
import pytest

from warmd.aio import AsyncClient
from warmd.client import jobspec
from warmd.fdpass import rights
from warmd.protocol import FrameReader, encode, encode_parts, hello

READ_ALL = "import sys; print(repr(sys.stdin.read()))"
FD0 = "import os; print(os.getpid(), os.readlink('/proc/self/fd/0'))"
ONE_WORKER = "[workers]\ncount = 1\nspares = 0\n"  # so the next job runs where the last one did


def warmctl_argv(daemon, *args: str) -> list[str]:
    return [sys.executable, "-m", "warmd.ctl", "--socket", str(daemon.socket), "--no-autostart", *args]


def test_a_piped_stdin_is_the_jobs_input_to_its_eof(daemon, tmp_path):
    run = daemon.warmctl("exec", "-c", READ_ALL, input="apple\nbanana\n")
    assert (run.returncode, run.stdout) == (0, "'apple\\nbanana\\n'\n"), run.stderr
    script = tmp_path / "shout.py"
    script.write_text("import sys\nfor line in sys.stdin:\n    print(line.strip().upper())\n")
    listing = tmp_path / "list"
    listing.write_text("apple\nbanana\ncherry\n")
    # grep x list | warmctl run script.py
    run = subprocess.run(f"grep an {listing} | {shlex.join(warmctl_argv(daemon, 'run', str(script)))}",
                         shell=True, capture_output=True, text=True, env=daemon.env, timeout=60)
    assert (run.returncode, run.stdout) == (0, "BANANA\n"), run.stderr
    # A file on stdin: warmctl run script.py < list
    with open(listing) as f:
        run = daemon.warmctl("run", str(script), stdin=f)
    assert (run.returncode, run.stdout) == (0, "APPLE\nBANANA\nCHERRY\n"), run.stderr


def test_the_programs_a_job_starts_read_it_too(daemon):
    code = "import subprocess; subprocess.run(['wc', '-l'], check=True)"
    run = daemon.warmctl("exec", "-c", code, input="a\nb\nc\n")
    assert (run.returncode, run.stdout.strip()) == (0, "3"), run.stderr


def test_the_job_reads_it_live_not_after_eof(daemon):
    """An echo loop: each line must come back before the next is written."""
    code = "import sys\nfor line in sys.stdin:\n    print('got', line.strip(), flush=True)\n"
    proc = subprocess.Popen(warmctl_argv(daemon, "exec", "-c", code), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=daemon.env)
    try:
        for word in ("one", "two", "three"):
            proc.stdin.write(word + "\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == f"got {word}\n"
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_a_gigabyte_of_stdin_never_passes_through_the_daemon(daemon):
    before = psutil.Process(daemon.pid).memory_info().rss
    count = "import sys\nn = 0\nwhile chunk := sys.stdin.buffer.read(1 << 20):\n    n += len(chunk)\nprint(n)"
    argv = shlex.join(warmctl_argv(daemon, "exec", "-c", count))
    run = subprocess.run(f"head -c 1G /dev/zero | {argv}", shell=True, capture_output=True,
                         text=True, env=daemon.env, timeout=300)
    assert (run.returncode, run.stdout) == (0, f"{2**30}\n"), run.stderr
    grown = psutil.Process(daemon.pid).memory_info().rss - before
    assert grown < 16 * 2**20, f"the daemon grew by {grown} bytes while a job read 1 GiB of stdin"


def test_without_a_stdin_to_pass_the_job_reads_dev_null(daemon):
    # --no-stdin
    run = daemon.warmctl("exec", "--no-stdin", "-c", READ_ALL, input="ignored\n")
    assert (run.returncode, run.stdout) == (0, "''\n"), run.stderr
    # a terminal: the job must not take the shell's keyboard (and would wait on it)
    leader, terminal = pty.openpty()
    try:
        run = daemon.warmctl("exec", "-c", READ_ALL, stdin=terminal)
    finally:
        os.close(leader)
        os.close(terminal)
    assert (run.returncode, run.stdout) == (0, "''\n"), run.stderr
    # a closed stdin: warmctl ... <&-
    argv = shlex.join(warmctl_argv(daemon, "exec", "-c", READ_ALL))
    run = subprocess.run(f"{argv} <&-", shell=True, capture_output=True, text=True,
                         env=daemon.env, timeout=60)
    assert (run.returncode, run.stdout) == (0, "''\n"), run.stderr
    # submit queues a job for later: it never takes the shell's stdin
    submitted = daemon.warmctl("submit", "-c", READ_ALL, input="ignored\n")
    assert submitted.returncode == 0, submitted.stderr
    waited = daemon.warmctl("logs", submitted.stdout.strip())
    assert waited.stdout == "''\n", waited.stderr


def test_a_stdin_open_only_for_writing_is_a_usage_error(daemon, tmp_path):
    with open(tmp_path / "out", "w") as f:
        run = daemon.warmctl("exec", "-c", "pass", stdin=f)
    assert run.returncode == 2
    assert "open for writing only" in run.stderr and "--no-stdin" in run.stderr


def test_the_next_job_reads_the_workers_dev_null_again(make_daemon):
    daemon = make_daemon(ONE_WORKER)
    run = daemon.warmctl("exec", "-c", f"{FD0}; import sys; print(sys.stdin.readline().strip())",
                         input="first\nleft unread\n")
    pid, where, line = run.stdout.split()
    assert (run.returncode, where[:5], line) == (0, "pipe:", "first"), run.stderr
    run = daemon.warmctl("exec", "--no-stdin", "-c", f"{FD0}; {READ_ALL}")
    assert (run.returncode, run.stdout) == (0, f"{pid} /dev/null\n''\n"), run.stderr


def test_a_job_cancelled_while_it_reads_stdin_leaves_the_worker_clean(make_daemon):
    daemon = make_daemon(ONE_WORKER)
    code = "import os, sys; print(os.getpid(), flush=True); sys.stdin.read()"
    proc = subprocess.Popen(warmctl_argv(daemon, "exec", "-c", code), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=daemon.env)
    try:
        pid = proc.stdout.readline().strip()
        proc.send_signal(signal.SIGINT)  # Ctrl-C in exec interrupts the job
        assert proc.wait(timeout=60) == 130, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
    run = daemon.warmctl("exec", "--no-stdin", "-c", f"{FD0}; {READ_ALL}")
    assert (run.returncode, run.stdout) == (0, f"{pid} /dev/null\n''\n"), run.stderr


def test_a_queued_job_keeps_its_stdin_until_it_runs(make_daemon, tmp_path):
    daemon = make_daemon(ONE_WORKER)
    gate = tmp_path / "gate"
    blocker = f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.01)"
    with daemon.client() as client:
        first = client.run_code(blocker)
        queued = [client.run_code(READ_ALL, stdin=_pipe_with(f"job {i}\n"))
                  for i in range(3)]
        gate.touch()
        first.result(timeout=60)
        for i, job in enumerate(queued):
            job.result(timeout=60)
            assert job.output() == f"'job {i}\\n'\n"


def _pipe_with(text: str):
    """The read end of a pipe holding ``text``, its write end closed (so EOF after it)."""
    r, w = os.pipe()
    os.write(w, text.encode())
    os.close(w)
    return os.fdopen(r)


def test_the_python_clients_take_stdin_per_job(daemon, tmp_path):
    listing = tmp_path / "list"
    listing.write_text("x\ny\n")
    with daemon.client() as client, open(listing) as f:
        job = client.run_code(READ_ALL, stdin=f)
        job.result(timeout=60)
        assert job.output() == "'x\\ny\\n'\n"
        assert client.submit_call(_read_stdin, stdin=_pipe_with("call")).result(timeout=60) == "call"
        assert client.submit(_read_stdin).result(timeout=60) == ""  # by default: none

    async def main():
        async with AsyncClient(daemon.socket, autostart=False) as client:
            job = await client.run_code(READ_ALL, stdin=_pipe_with("async"))
            await job.result()
            return job.output()
    assert asyncio.run(main()) == "'async'\n"


def _read_stdin():
    return sys.stdin.read()


def test_restart_runs_the_job_again_without_its_stdin(daemon):
    run = daemon.warmctl("exec", "--name", "reader", "-c", READ_ALL, input="once\n")
    assert (run.returncode, run.stdout) == (0, "'once\\n'\n"), run.stderr
    (job,) = [j for j in json.loads(daemon.warmctl("jobs", "--json").stdout) if j["name"] == "reader"]
    again = daemon.warmctl("restart", job["id"])
    assert again.returncode == 0, again.stderr
    logs = daemon.warmctl("logs", "-f", again.stdout.split()[-1])
    assert logs.stdout == "''\n", (again.stdout, logs.stderr)


@pytest.mark.parametrize("case", ["no descriptor", "write only", "not a boolean"])
def test_the_daemon_refuses_a_stdin_it_could_not_pass_on(daemon, tmp_path, case):
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(daemon.socket))
    sock.settimeout(60)
    reader = FrameReader()
    sock.sendall(encode(hello("test", os.getpid())))
    request = jobspec.code("pass", [])
    header = {"t": "submit", "req": 1, **request.submit_fields(None, True),
              "stdin": "yes" if case == "not a boolean" else True}
    head, *rest = encode_parts(header, request.payload)
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT) if case == "write only" else None
    sock.sendmsg([head], rights([fd]) if fd is not None else [])
    for piece in rest:
        sock.sendall(piece)
    if fd is not None:
        os.close(fd)
    replies = []
    while not any(f.get("req") == 1 for f in replies):
        data = sock.recv(65536)
        assert data, "the daemon closed the connection"
        reader.receive_data(data)
        replies += [f for f in reader.frames() if f.type != "welcome"]
    (reply,) = replies
    assert reply.type == "error" and reply.get("code") == "bad_request", reply.header
    expected = {"no descriptor": "none did", "write only": "open for writing only",
                "not a boolean": "true or false"}[case]
    assert expected in reply.get("message")
    sock.close()
