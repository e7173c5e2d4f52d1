"""warmctl's errors and machine-readable output, as a shell user meets them: a daemon it
had to start with a bad configuration, a syntax error in exec -c, and --json."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import warmd
from warmd.errors import ConfigError

BAD_CONFIG = '[daemon]\nbogus = 1\n[workers]\ncount = -3\n'


def test_an_autostarted_daemon_with_a_bad_config_says_why_and_exits_78(make_daemon):
    d = make_daemon(BAD_CONFIG, start=False)
    env = {**d.env, "WARMD_CONFIG": str(d.config)}
    run = subprocess.run([sys.executable, "-m", "warmd.ctl", "--socket", str(d.socket), "ping"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 78, run.stderr
    # Every problem at once, each naming its key.
    assert "daemon.bogus" in run.stderr and "workers.count" in run.stderr
    assert "No such file" not in run.stderr
    code = ("import sys, warmd\ntry:\n    warmd.Client(sys.argv[1])\nexcept warmd.ConfigError as e:\n"
            "    print('ConfigError', e)\n")
    client = subprocess.run([sys.executable, "-c", code, str(d.socket)], env=env, capture_output=True,
                            text=True, timeout=120)
    assert client.stdout.startswith("ConfigError") and "workers.count" in client.stdout, client.stderr


def test_every_config_error_is_reported_at_once(tmp_path):
    from warmd import config
    path = tmp_path / "warmd.toml"
    path.write_text(BAD_CONFIG + "[nope]\nx = 1\n")
    with pytest.raises(ConfigError) as raised:
        config.load(path)
    lines = str(raised.value).splitlines()
    assert len(lines) == 3 and "daemon.bogus" in lines[0] and "workers.count" in lines[1]
    assert "[nope]" in lines[2]


def test_a_syntax_error_in_exec_shows_the_users_code_only(daemon):
    run = daemon.warmctl("exec", "-c", "x = (1,")
    assert run.returncode == 1
    assert run.stderr.startswith('  File "<warmd -c>", line 1'), run.stderr
    assert "SyntaxError: '(' was never closed" in run.stderr and "execute.py" not in run.stderr


def test_json_for_submit_exec_and_run(daemon, tmp_path):
    run = daemon.warmctl("submit", "--json", "-c", "print('hi')")
    job = json.loads(run.stdout)["job"]
    assert daemon.warmctl("wait", job).returncode == 0
    run = daemon.warmctl("exec", "--json", "-c", "print('out'); raise SystemExit(3)")
    assert run.returncode == 3
    out, last = run.stdout.rsplit("\n", 2)[0], run.stdout.splitlines()[-1]
    assert out == "out"
    record = json.loads(last)
    assert record["state"] == "failed" and record["exit_status"] == 3 and record["job"]
    script = tmp_path / "hello.py"
    script.write_text("print('from the script')\n")
    run = daemon.warmctl("run", "--json", str(script))
    assert run.returncode == 0 and run.stdout.splitlines()[0] == "from the script"
    assert json.loads(run.stdout.splitlines()[-1])["state"] == "succeeded"


def test_config_error_is_exported():
    assert warmd.ConfigError is ConfigError
