"""What python runs, warmctl runs: -m MODULE, a directory or a zip with __main__.py, and a
clear word for a directory without one (command, output, status, against a real daemon)."""
from __future__ import annotations

import subprocess
import sys
import zipfile

SHOW = "import sys\nprint(__name__, sys.argv[1:], sys.argv[0].endswith('.py') or sys.argv[0])\n"


def run_in(daemon, cwd, *args):
    return subprocess.run([sys.executable, "-m", "warmd.ctl", "--socket", str(daemon.socket),
                           "--no-autostart", *args], env=daemon.env, cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_run_and_submit_take_a_module_as_python_m_does(daemon, tmp_path):
    (tmp_path / "plate_tool.py").write_text(SHOW)
    (tmp_path / "platepkg").mkdir()
    (tmp_path / "platepkg" / "__init__.py").write_text("")
    (tmp_path / "platepkg" / "__main__.py").write_text(SHOW)
    run = run_in(daemon, tmp_path, "run", "-m", "plate_tool", "a", "--flag")
    assert (run.returncode, run.stdout) == (0, "__main__ ['a', '--flag'] True\n"), run.stderr
    run = run_in(daemon, tmp_path, "run", "-m", "platepkg", "b")
    assert (run.returncode, run.stdout) == (0, "__main__ ['b'] True\n"), run.stderr
    job = run_in(daemon, tmp_path, "submit", "-m", "plate_tool", "c").stdout.strip()
    assert run_in(daemon, tmp_path, "wait", job).returncode == 0
    assert run_in(daemon, tmp_path, "logs", job).stdout == "__main__ ['c'] True\n"
    missing = run_in(daemon, tmp_path, "run", "-m", "no_such_module_here")
    assert missing.returncode == 1 and "No module named no_such_module_here" in missing.stderr
    bad = run_in(daemon, tmp_path, "run", "-m", "not a name")
    assert bad.returncode == 2 and "not a module name" in bad.stderr


def test_run_takes_a_directory_or_zip_with_a_main(daemon, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "__main__.py").write_text("import sys, helper\nprint(helper.WORD, sys.argv[1:])\n")
    (app / "helper.py").write_text("WORD = 'from the directory'\n")
    run = run_in(daemon, tmp_path, "run", str(app), "x")
    assert (run.returncode, run.stdout) == (0, "from the directory ['x']\n"), run.stderr
    archive = tmp_path / "app.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("__main__.py", "import helper\nprint(helper.WORD)\n")
        z.writestr("helper.py", "WORD = 'from the zip'\n")
    run = run_in(daemon, tmp_path, "run", str(archive))
    assert (run.returncode, run.stdout) == (0, "from the zip\n"), run.stderr


def test_a_directory_without_a_main_says_so(daemon, tmp_path):
    (tmp_path / "empty").mkdir()
    run = run_in(daemon, tmp_path, "run", "empty")
    assert run.returncode == 2 and "is a directory without a __main__.py" in run.stderr
    run = run_in(daemon, tmp_path, "run")
    assert run.returncode == 2 and "needs a SCRIPT, or -m MODULE" in run.stderr


def test_the_python_clients_run_modules(daemon, tmp_path, monkeypatch):
    import asyncio

    from warmd.aio import AsyncClient

    (tmp_path / "plate_tool.py").write_text(SHOW)
    monkeypatch.chdir(tmp_path)
    with daemon.client() as client:
        job = client.run_module("plate_tool", ["s"])
        job.result(timeout=60)
        assert job.output() == "__main__ ['s'] True\n"

    async def main():
        async with AsyncClient(daemon.socket, autostart=False) as client:
            job = await client.run_module("plate_tool", ["a"], name="tool")
            await job.result()
            return job.job_id

    assert asyncio.run(asyncio.wait_for(main(), 60))
