"""Results retention, detach/re-attach, and what warmctl shows on a terminal."""
from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest

import warmd

import helpers_jobs


def test_detach_and_reattach_from_another_client(daemon, tmp_path):
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    code = f"print('before', flush=True)\nopen({str(fifo)!r}).read()\nprint('after')\nraise SystemExit(5)"
    r = daemon.warmctl("submit", "-c", code)
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    with daemon.client() as client:
        future = client.attach(job_id)
        text = ""
        for event in future.events():
            text += event.text if isinstance(event, warmd.Output) else ""
            if text.endswith("\n"):
                break
        assert text == "before\n"
        logs = daemon.warmctl("logs", job_id)  # a third client sees the output so far
        assert logs.stdout == "before\n"
        with open(fifo, "w") as f:
            f.write("x")
        with pytest.raises(warmd.JobExit):
            future.result(timeout=30)
        assert future.output() == "before\nafter\n"
    r = daemon.warmctl("attach", job_id)  # after the end: the whole output, then the status
    assert r.returncode == 5 and r.stdout == "before\nafter\n"
    r = daemon.warmctl("wait", "--json", job_id)
    assert r.returncode == 5 and '"state": "failed"' in r.stdout


def test_finished_results_are_bounded(make_daemon):
    d = make_daemon("[daemon]\nresult_max_jobs = 3\n")
    with d.client() as client:
        futures = [client.submit(helpers_jobs.add, i, 0) for i in range(6)]
        assert [f.result(timeout=30) for f in futures] == list(range(6))
        kept = {j.id for j in client.jobs()}
        assert len(kept) == 3
        assert {f.job_id for f in futures[-3:]} == kept
        with pytest.raises(warmd.UnknownJob, match="expired"):
            client.wait(futures[0].job_id)


def test_results_expire(make_daemon):
    d = make_daemon("[daemon]\nresult_ttl = 0.2\n")
    with d.client() as client:
        # Two results finished at different times: the one timer serves both in turn.
        job_ids = []
        for i in range(2):
            f = client.submit(helpers_jobs.add, i, 1)
            f.result(timeout=30)
            job_ids.append(f.job_id)
    for job_id in reversed(job_ids):
        r = d.warmctl("wait", job_id)
        # the daemon drops the result on a timer; ask until it has (bounded)
        for _ in range(200):
            if r.returncode == 66:
                break
            r = d.warmctl("wait", job_id)
        assert r.returncode == 66, job_id


def test_progress_bar_on_a_terminal(daemon):
    primary, secondary = pty.openpty()
    code = "import warmd\nfor i in range(3):\n    warmd.progress(i + 1, 3, 'wells')\nprint('done')"
    proc = subprocess.Popen([sys.executable, "-m", "warmd.ctl", "--socket", str(daemon.socket),
                             "--no-autostart", "exec", "-c", code], env=daemon.env,
                            stdout=subprocess.PIPE, stderr=secondary)
    os.close(secondary)
    out, _ = proc.communicate(timeout=60)
    shown = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(primary)
    assert proc.returncode == 0 and out == b"done\n"
    assert b"3/3 100%" in shown and b"wells" in shown and b"[" in shown


def test_no_progress_bar_when_not_a_terminal(daemon):
    r = daemon.warmctl("exec", "-c", "import warmd; warmd.progress(1, 2, 'x'); print('ok')")
    assert r.returncode == 0 and r.stdout == "ok\n" and r.stderr == ""


def test_plain_log_keeps_failures_not_every_success(daemon):
    with daemon.client() as client:
        ok = client.submit(helpers_jobs.add, 1, 2)
        bad = client.submit(helpers_jobs.fail, "x")
        ok.result(timeout=30)
        with pytest.raises(helpers_jobs.PipelineError):
            bad.result(timeout=30)
    text = daemon.log_text()
    assert f"job {bad.job_id} failed" in text
    assert f"job {ok.job_id}" not in text
