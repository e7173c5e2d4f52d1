"""warmctl logs and attach as a shell user expects them: logs -f follows live, Ctrl-C in
logs -f or attach stops following and leaves the job running, logs shows stderr and a
failed job's traceback, and --tail, --since and --timestamps cut and stamp the lines."""
from __future__ import annotations

import re
import select
import signal
import subprocess
import sys
import time

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d ")


def waiting_job(daemon, go, before="one", after="two", status=0):
    code = (f"import os, sys, time\nprint({before!r}, flush=True)\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
            f"print({after!r}, flush=True)\nsys.exit({status})")
    run = daemon.warmctl("submit", "-c", code)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def warmctl_live(daemon, *args):
    return subprocess.Popen([sys.executable, "-m", "warmd.ctl", "--socket", str(daemon.socket),
                             "--no-autostart", *args], env=daemon.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def read_line(stream, timeout=60.0) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "no line within the timeout"
    return stream.readline()


def test_logs_follow_prints_live_output_until_the_job_ends(daemon, tmp_path):
    go = tmp_path / "go"
    job = waiting_job(daemon, go, status=3)
    proc = warmctl_live(daemon, "logs", "-f", job)
    assert read_line(proc.stdout) == "one\n"
    go.touch()
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (0, "two\n"), err  # a log viewer: 0 whatever the job did


def _interrupt_and_check(daemon, proc, job, go):
    assert read_line(proc.stdout) == "one\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"stopped following job {job}; it goes on" in err and "logs -f" in err
    state = {j["id"]: j["state"] for j in __import__("json").loads(daemon.warmctl("jobs", "--json").stdout)}
    assert state[job] == "running"
    go.touch()
    assert daemon.warmctl("wait", job).returncode == 0  # it ran to its end


def test_ctrl_c_in_logs_follow_leaves_the_job_running(daemon, tmp_path):
    go = tmp_path / "go"
    job = waiting_job(daemon, go)
    _interrupt_and_check(daemon, warmctl_live(daemon, "logs", "-f", job), job, go)


def test_ctrl_c_in_attach_leaves_the_job_running(daemon, tmp_path):
    go = tmp_path / "go"
    job = waiting_job(daemon, go)
    _interrupt_and_check(daemon, warmctl_live(daemon, "attach", job), job, go)


def test_logs_shows_stderr_and_a_failed_jobs_traceback(daemon):
    code = "import sys\nprint('to stderr', file=sys.stderr, flush=True)\nraise ValueError('boom')"
    job = daemon.warmctl("submit", "-c", code).stdout.strip()
    assert daemon.warmctl("wait", job).returncode == 1
    run = daemon.warmctl("logs", job)
    assert run.returncode == 0
    assert "to stderr" in run.stderr and "ValueError: boom" in run.stderr and "Traceback" in run.stderr


def test_logs_tail_since_and_timestamps(daemon):
    job = daemon.warmctl("submit", "-c", "for i in range(5): print('line', i)").stdout.strip()
    assert daemon.warmctl("wait", job).returncode == 0
    assert daemon.warmctl("logs", "--tail", "2", job).stdout == "line 3\nline 4\n"
    assert daemon.warmctl("logs", "--tail", "0", job).stdout == ""
    assert daemon.warmctl("logs", "--since", "1h", job).stdout.count("line") == 5
    assert daemon.warmctl("logs", "--since", "2099-01-01T00:00", job).stdout == ""
    stamped = daemon.warmctl("logs", "--timestamps", "--tail", "3", job).stdout.splitlines()
    assert len(stamped) == 3 and all(STAMP.match(line) for line in stamped), stamped
    assert [STAMP.sub("", line) for line in stamped] == ["line 2", "line 3", "line 4"]
    bad = daemon.warmctl("logs", "--since", "yesterday-ish", job)
    assert bad.returncode == 2 and "--since" in bad.stderr


def test_logs_follow_with_tail_cuts_only_what_was_there(daemon, tmp_path):
    go = tmp_path / "go"
    code = (f"import os, time\nfor i in range(4): print('old', i, flush=True)\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\nprint('new', flush=True)")
    job = daemon.warmctl("submit", "-c", code).stdout.strip()
    # Wait until the first lines are in the daemon, then follow with a tail.
    deadline = time.monotonic() + 60
    while daemon.warmctl("logs", job).stdout.count("old") < 4:
        assert time.monotonic() < deadline
    proc = warmctl_live(daemon, "logs", "-f", "--tail", "1", job)
    assert read_line(proc.stdout) == "old 3\n"
    go.touch()
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (0, "new\n"), err
