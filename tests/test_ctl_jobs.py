"""warmctl jobs as a shell user lists them: by state, by name pattern, the newest N, with
an age column, long names cut with an ellipsis and control characters escaped."""
from __future__ import annotations

import json


def submit(daemon, *args):
    run = daemon.warmctl("submit", *args)
    assert run.returncode == 0, run.stderr
    job = run.stdout.strip()
    daemon.warmctl("wait", job)
    return job


def test_jobs_filters_by_state_name_and_limit(daemon):
    ok1 = submit(daemon, "--name", "plate-P1", "-c", "pass")
    bad = submit(daemon, "--name", "plate-P2", "-c", "raise SystemExit(4)")
    ok2 = submit(daemon, "--name", "qc-report", "-c", "pass")
    ok3 = submit(daemon, "--name", "plate-P3", "-c", "pass")

    def ids(*args):
        run = daemon.warmctl("jobs", "--json", *args)
        assert run.returncode == 0, run.stderr
        return [j["id"] for j in json.loads(run.stdout)]

    assert ids("--state", "failed") == [bad]
    assert ids("--state", "succeeded", "--name", "plate-*") == [ok1, ok3]
    assert ids("--name", "plate-*", "--limit", "2") == [bad, ok3]  # the newest two, oldest first
    assert ids("--state", "failed", "--state", "succeeded", "--limit", "1") == [ok3]
    assert ids("--name", "nothing*") == []
    text = daemon.warmctl("jobs", "--name", "qc-*").stdout.splitlines()
    assert text[0].split() == ["JOB", "STATE", "KIND", "NAME", "PROGRESS", "EXIT", "WORKER", "TIME", "AGE"]
    assert len(text) == 2 and ok2 in text[1] and "qc-report" in text[1]
    bad_state = daemon.warmctl("jobs", "--state", "sleepy")
    assert bad_state.returncode == 2 and "invalid choice" in bad_state.stderr


def test_long_names_are_cut_and_control_characters_escaped(daemon):
    long_name = "segment-" + "x" * 60
    submit(daemon, "--name", long_name, "-c", "pass")
    submit(daemon, "--name", "evil\x1b[31mred\x07", "-c", "pass")
    text = daemon.warmctl("jobs").stdout
    assert "\x1b" not in text and "\x07" not in text
    assert "evil\\x1b[31mred\\x07" in text
    assert "segment-" + "x" * 31 + "…" in text and long_name not in text
    listed = json.loads(daemon.warmctl("jobs", "--json").stdout)
    assert long_name in [j["name"] for j in listed]  # JSON keeps the name whole
