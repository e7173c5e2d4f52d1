"""warmctl's job options, as a shell user types them: the caller's environment, a timeout,
a name, a priority and a log level, each against a real daemon (command, output, status)."""
from __future__ import annotations

import json
import os
import time

import pytest

import warmd

PRINT_FOO = "import os; print(os.environ.get('FOO'))"


def ctl(daemon, *args, env=None, **kwargs):
    """Run warmctl with ``env`` added to the daemon's environment (as a shell prefix would)."""
    saved = daemon.env
    daemon.env = {**saved, **(env or {})}
    try:
        return daemon.warmctl(*args, **kwargs)
    finally:
        daemon.env = saved


def test_a_job_gets_the_callers_environment(daemon):
    run = ctl(daemon, "exec", "-c", PRINT_FOO, env={"FOO": "bar"})
    assert (run.returncode, run.stdout) == (0, "bar\n"), run.stderr
    run = ctl(daemon, "exec", "--env", "FOO=baz", "-c", PRINT_FOO, env={"FOO": "bar"})
    assert (run.returncode, run.stdout) == (0, "baz\n"), run.stderr
    # --no-env: the daemon's environment, which has no FOO; --env still adds one.
    run = ctl(daemon, "exec", "--no-env", "-c", PRINT_FOO, env={"FOO": "bar"})
    assert (run.returncode, run.stdout) == (0, "None\n"), run.stderr
    run = ctl(daemon, "exec", "--no-env", "--env", "FOO=x", "-c", PRINT_FOO)
    assert (run.returncode, run.stdout) == (0, "x\n"), run.stderr
    # Each job's environment goes with it: the worker's own is back for the next.
    with daemon.client() as client:
        assert client.submit(getenv, "FOO").result(timeout=60) is None


def test_the_workers_own_variables_stay_whatever_the_caller_has(daemon):
    code = "import os; print(os.environ.get('WARMD_PROBE'), os.environ.get('WARMD_SOCKET') is not None)"
    run = ctl(daemon, "exec", "-c", code, env={"WARMD_PROBE": "from the shell"})
    assert (run.returncode, run.stdout) == (0, "None True\n"), run.stderr


def test_a_bad_env_option_is_a_usage_error(daemon):
    run = ctl(daemon, "exec", "--env", "NOEQUALS", "-c", "pass")
    assert run.returncode == 2 and "KEY=VALUE" in run.stderr


def getenv(name):
    return os.environ.get(name)


def test_the_python_clients_take_env_as_subprocess_does(daemon):
    with daemon.client() as client:
        job = client.submit_call(getenv, ("FOO",), env={"FOO": "py", "PATH": "/usr/bin"})
        assert job.result(timeout=60) == "py"
        assert client.submit_call(getenv, ("HOME",), env={"FOO": "py"}).result(timeout=60) is None
        assert client.submit(getenv, "FOO").result(timeout=60) is None  # by default: the worker's


def test_a_job_past_its_timeout_is_cancelled_and_exits_124(daemon):
    start = time.monotonic()
    run = ctl(daemon, "exec", "--timeout", "0.5", "-c", "import time; time.sleep(60)")
    assert run.returncode == 124, (run.stdout, run.stderr)
    assert "timeout of 0.5 s" in run.stderr and time.monotonic() - start < 30
    listed = json.loads(ctl(daemon, "jobs", "--json").stdout)
    (job,) = [j for j in listed if j["kind"] == "code"]
    assert job["timed_out"] is True and job["state"] == "failed" and job["exit_status"] == 124
    with daemon.client() as client:
        future = client.submit_call(time.sleep, (60,), timeout=0.5)
        with pytest.raises(warmd.JobTimedOut) as raised:
            future.result(timeout=60)
        assert isinstance(raised.value, TimeoutError)
        # A job that ends in time is not touched.
        assert client.submit_call(sum, ([1, 2],), timeout=30).result(timeout=60) == 3


def test_a_default_timeout_comes_from_the_config(make_daemon):
    d = make_daemon("[workers]\njob_timeout = 0.5\n")
    run = d.warmctl("exec", "-c", "import time; time.sleep(60)")
    assert run.returncode == 124, run.stderr
    run = d.warmctl("exec", "--timeout", "0", "-c", "print('no limit')")
    assert (run.returncode, run.stdout) == (0, "no limit\n")


def test_a_name_shows_in_jobs(daemon):
    run = ctl(daemon, "submit", "--name", "nightly plate", "-c", "pass")
    assert run.returncode == 0, run.stderr
    job_id = run.stdout.strip()
    assert ctl(daemon, "wait", job_id).returncode == 0
    assert "nightly plate" in ctl(daemon, "jobs").stdout
    listed = json.loads(ctl(daemon, "jobs", "--json").stdout)
    assert [j["name"] for j in listed if j["id"] == job_id] == ["nightly plate"]


def test_higher_priority_starts_first_and_equal_ones_in_order(make_daemon, tmp_path):
    d = make_daemon("[workers]\ncount = 1\nspares = 0\n")
    go = tmp_path / "go"
    hold = f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)"
    ids = [d.warmctl("submit", "-c", hold).stdout.strip()]  # holds the only worker
    # The first job queued behind it is held by that worker to start next: not overtaken.
    for name, priority in [("next", "0"), ("low", "0"), ("high", "5"), ("low2", "0"), ("high2", "5")]:
        run = d.warmctl("submit", "--name", name, "--priority", priority, "-c", "pass")
        assert run.returncode == 0, run.stderr
        ids.append(run.stdout.strip())
    go.touch()
    for job_id in ids:
        assert d.warmctl("wait", job_id).returncode == 0
    listed = {j["name"]: j for j in json.loads(d.warmctl("jobs", "--json").stdout)}
    order = sorted(["next", "low", "high", "low2", "high2"], key=lambda n: listed[n]["started"])
    assert order == ["next", "high", "high2", "low", "low2"]


def test_a_jobs_log_level_is_its_own(daemon):
    code = "import logging; logging.getLogger('plate').info('segmenting well B03')"
    quiet = ctl(daemon, "exec", "-c", code)
    assert quiet.returncode == 0 and "segmenting" not in quiet.stderr + quiet.stdout
    loud = ctl(daemon, "exec", "--log-level", "info", "-c", code)
    assert loud.returncode == 0 and "segmenting well B03" in loud.stderr + loud.stdout
    again = ctl(daemon, "exec", "-c", code)  # the worker's default is back
    assert "segmenting" not in again.stderr + again.stdout


def test_the_async_client_takes_the_same_options(daemon):
    import asyncio

    from warmd.aio import AsyncClient

    async def main():
        async with AsyncClient(daemon.socket, autostart=False) as client:
            named = await client.submit_call(getenv, ("FOO",), env={"FOO": "async"}, name="probe",
                                             priority=3, log_level="info")
            slow = await client.submit_call(time.sleep, (60,), timeout=0.5)
            code = await client.run_code("import os; print(os.environ['FOO'])", env={"FOO": "c"})
            with pytest.raises(warmd.JobTimedOut):
                await slow.result()
            return await named.result(), await code.result(), named.job_id

    value, code, job_id = asyncio.run(asyncio.wait_for(main(), 60))
    assert (value, code) == ("async", None)
    with daemon.client() as client:
        (job,) = [j for j in client.jobs() if j.id == job_id]
    assert job.name == "probe" and job.priority == 3
