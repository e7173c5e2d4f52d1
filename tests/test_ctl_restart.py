"""warmctl restart, rm and clean, as a shell user runs them against a real daemon: a
finished job again as it ran, and finished jobs forgotten by id, by state or by age."""
from __future__ import annotations

import json
import subprocess
import sys


def ctl_in(daemon, cwd, *args, env=None):
    return subprocess.run([sys.executable, "-m", "warmd.ctl", "--socket", str(daemon.socket),
                           "--no-autostart", *args], env={**daemon.env, **(env or {})}, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def listed(daemon):
    return {j["id"]: j for j in json.loads(daemon.warmctl("jobs", "--json").stdout)}


def test_restart_runs_a_finished_job_again_as_it_ran(daemon, tmp_path):
    code = "import os, sys; print(os.getcwd(), os.environ['PLATE'], sys.argv[1:])"
    first = ctl_in(daemon, tmp_path, "submit", "--name", "plate run", "-c", code, "P1",
                   env={"PLATE": "384-well"}).stdout.strip()
    assert daemon.warmctl("wait", first).returncode == 0
    again = ctl_in(daemon, "/", "restart", first[:6]).stdout.strip()  # elsewhere, without PLATE
    assert again and again != first
    assert daemon.warmctl("wait", again).returncode == 0
    assert daemon.warmctl("logs", again).stdout == f"{tmp_path} 384-well ['P1']\n"
    assert listed(daemon)[again]["name"] == "plate run"
    assert json.loads(daemon.warmctl("restart", "--json", again).stdout)["job"]


def test_restart_refuses_what_it_cannot_run_again(daemon, tmp_path):
    go = tmp_path / "go"
    running = daemon.warmctl("submit", "-c", f"import os, time\nwhile not os.path.exists({str(go)!r}): "
                                             "time.sleep(0.01)").stdout.strip()
    refused = daemon.warmctl("restart", running)
    assert refused.returncode == 70 and "wait for it to end, or cancel it" in refused.stderr
    go.touch()
    with daemon.client() as client:
        call = client.submit(sum, [1, 2])
        call.result(timeout=60)
    refused = daemon.warmctl("restart", call.job_id)
    assert refused.returncode == 70 and "only script, code and module jobs" in refused.stderr
    assert daemon.warmctl("restart", "ffffffffffff").returncode == 66


def test_rm_and_clean_forget_finished_jobs(daemon, tmp_path):
    ok = daemon.warmctl("submit", "-c", "pass").stdout.strip()
    bad = daemon.warmctl("submit", "-c", "raise SystemExit(2)").stdout.strip()
    other = daemon.warmctl("submit", "-c", "pass").stdout.strip()
    for job in (ok, bad, other):
        daemon.warmctl("wait", job)
    go = tmp_path / "go"
    running = daemon.warmctl("submit", "-c", f"import os, time\nwhile not os.path.exists({str(go)!r}): "
                                             "time.sleep(0.01)").stdout.strip()
    run = daemon.warmctl("rm", ok, running)
    assert run.returncode == 1 and run.stdout == f"forgot job {ok}\n"
    assert f"kept job {running}: running" in run.stderr
    assert ok not in listed(daemon) and daemon.warmctl("wait", ok).returncode == 66
    assert daemon.warmctl("clean", "--older-than", "1h").stdout == ""  # all younger
    run = daemon.warmctl("clean", "--state", "failed")
    assert (run.returncode, run.stdout) == (0, f"forgot job {bad}\n")
    go.touch()
    daemon.warmctl("wait", running)
    run = daemon.warmctl("clean")
    assert run.returncode == 0 and set(run.stdout.split()) >= {other, running}
    assert listed(daemon) == {}
    assert daemon.warmctl("clean", "--older-than", "soon").returncode == 2
