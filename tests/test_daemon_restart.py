"""A clean restart (SIGTERM, as ``systemctl --user restart warmd`` sends) remembers: the
job it ended is reported by the next daemon as that stop ended it, to ``warmctl wait``,
``jobs``, ``logs``, attach and the watch stream, and the finished jobs it retained come
back within the next daemon's retention limits (a call's result does not: asking for it
says so). A crash leaves jobs ``lost`` instead (tests/test_reconnect.py)."""
from __future__ import annotations

import json

import pytest

import warmd
from warmd.client.events import Output
from warmd.client.watch import Snapshot

DEADLINE = 60
CONFIG = "[workers]\ncount = 1\nspares = 0\n[daemon]\nresult_max_jobs = 2\n"
SLEEPER = "import time\nprint('running', flush=True)\ntime.sleep(300)"


def test_a_clean_restart_remembers_the_job_it_ended_and_the_jobs_it_kept(make_daemon):
    daemon = make_daemon(CONFIG)
    client = daemon.client()
    first = client.run_code("print('first')")
    first.result(DEADLINE)
    oldest = first.job_id
    call = client.submit(sum, [1, 2])
    assert call.result(DEADLINE) == 3
    running = client.run_code(SLEEPER, name="held")
    for event in running.events():
        if isinstance(event, Output) and "running" in event.text:
            break
    client.close()  # not shutdown(): it would wait for the job that never ends
    daemon.stop()  # SIGTERM: a clean stop cancels the running job
    daemon.start()

    waited = daemon.warmctl("wait", running.job_id)
    assert waited.returncode == 130 and "cancelled" in waited.stderr, waited
    listed = {j["id"]: j for j in json.loads(daemon.warmctl("jobs", "--json").stdout)}
    assert listed[running.job_id]["state"] == "cancelled" and listed[running.job_id]["name"] == "held"
    assert listed[call.job_id]["state"] == "succeeded"
    assert oldest not in listed  # over result_max_jobs = 2, as the next daemon's limits say
    assert daemon.warmctl("logs", running.job_id).returncode == 0
    with daemon.client() as client:
        with pytest.raises(warmd.JobCancelled):
            client.attach(running.job_id).result(DEADLINE)
        with pytest.raises(warmd.JobLost, match="not kept across the restart"):
            client.attach(call.job_id).result(DEADLINE)
        snapshot = next(iter(client.watch()))
        assert isinstance(snapshot, Snapshot)
        assert snapshot.jobs[running.job_id].state == "cancelled"
