"""warmctl top, against a real daemon, through Textual's pilot: jobs appear as they are
submitted and their progress moves, ``c`` cancels the selected job (its processes go),
enter shows its output, and the app survives the daemon going away and coming back.
Plus what needs no terminal: the rows the model makes, the install hint without
Textual, and warmctl starting without importing Textual.

The tests are plain functions that run ``asyncio.run``; each waits for a condition with
a deadline (``until``), never for a fixed time.
"""
from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers_procs import gone
from warmd.aio import AsyncClient
from warmd.client.info import JobInfo, WorkerInfo
from warmd.client.watch import JobChanged, JobProgress, Snapshot, WorkerChanged
from warmd.ctl import exitcodes
from warmd.ctl.top import TopModel, job_rows, progress_text, worker_rows
from warmd.ctl.topcmd import HINT

DEADLINE = 60
SIZE = (150, 45)

GATED_PROGRESS = """
import os, sys, time, warmd
for i in range(1, 4):
    warmd.progress(i, 4, f"step {i}")
    time.sleep(0.05)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
warmd.progress(4, 4, "done")
"""

WITH_A_CHILD = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(child.pid))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    time.sleep(0.05)
"""

CHATTY = """
import os, sys, time
print("hello from the job")
print("a line on stderr", file=sys.stderr)
sys.stdout.flush()
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
print("after the gate")
"""


def textual_app():
    pytest.importorskip("textual")
    from warmd.ctl.topapp import TopApp
    return TopApp


async def until(pilot, condition, what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


def cell(app, job_id: str, column: str) -> str | None:
    table = app.jobs_table
    return str(table.get_cell(job_id, column)) if job_id in table.rows else None


def run_app(daemon, scenario, **options) -> None:
    """Run ``scenario(app, pilot, client)`` in a TopApp watching ``daemon``; ``client`` is
    an AsyncClient of the test's own to submit jobs with."""
    TopApp = textual_app()

    async def main() -> None:
        app = TopApp(daemon.socket, autostart=False, **options)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.connected, "the first snapshot")
            async with AsyncClient(daemon.socket, autostart=False) as client:
                await scenario(app, pilot, client)
    asyncio.run(main())


def select(app, job_id: str) -> None:
    app.jobs_table.move_cursor(row=app.jobs_table.get_row_index(job_id))


# ---------------------------------------------------------------- against a daemon

def test_a_submitted_job_appears_and_its_progress_advances(daemon, tmp_path):
    gate = tmp_path / "gate"

    async def scenario(app, pilot, client):
        job = await client.run_code(GATED_PROGRESS, [str(gate)], name="plate-7")
        await until(pilot, lambda: cell(app, job.id, "name") is not None, "the job's row")
        assert cell(app, job.id, "name") == "plate-7"
        # three reports of four, then it waits on the gate: an intermediate state
        await until(pilot, lambda: (cell(app, job.id, "progress") or "").endswith(" 75%"), "75%")
        assert cell(app, job.id, "state") == "running"
        assert cell(app, job.id, "progress") == "[#######...]  75%"
        assert "[#######...]" in app.export_screenshot()  # shown as it is, not read as markup
        worker = cell(app, job.id, "worker")
        assert worker != "-" and worker in app.workers_table.rows
        assert str(app.workers_table.get_cell(worker, "state")) == "busy"
        gate.touch()
        await until(pilot, lambda: cell(app, job.id, "state") == "succeeded", "the job's end")
        assert cell(app, job.id, "progress") == "[##########] 100%"
        assert app.model.summary and app.model.summary in str(app.query_one("#summary").content)

    run_app(daemon, scenario)


def test_c_cancels_the_selected_job_and_its_processes_go(daemon, tmp_path):
    pid_file = tmp_path / "child.pid"

    async def scenario(app, pilot, client):
        job = await client.run_code(WITH_A_CHILD, [str(pid_file)], name="victim")
        other = await client.run_code("import time\ntime.sleep(600)", name="bystander")
        await until(pilot, lambda: pid_file.exists() and cell(app, job.id, "state") == "running",
                    "the job running, with its child")
        child = int(pid_file.read_text())
        assert not gone([child])
        select(app, job.id)
        assert app.selected_job() == job.id
        await pilot.press("c")
        await until(pilot, lambda: cell(app, job.id, "state") == "cancelled", "the job cancelled")
        await until(pilot, lambda: gone([child]), f"the job's child {child} gone")
        assert cell(app, other.id, "state") in ("queued", "running")  # only the selected one
        select(app, other.id)
        await pilot.press("k")
        await until(pilot, lambda: cell(app, other.id, "state") == "cancelled", "the other killed")

    run_app(daemon, scenario)


def test_enter_shows_the_jobs_output_live(daemon, tmp_path):
    gate = tmp_path / "gate"

    async def scenario(app, pilot, client):
        before = await client.run_code("print('not this one')", name="before")
        await before.wait()
        job = await client.run_code(CHATTY, [str(gate)], name="chatty")
        await until(pilot, lambda: cell(app, job.id, "state") == "running", "the job running")
        select(app, before.id)
        await pilot.press("enter")
        await until(pilot, lambda: "not this one" in app.pane.plain, "the first job's output")
        select(app, job.id)
        await pilot.press("enter")
        await until(pilot, lambda: {"hello from the job", "a line on stderr"} <= set(app.pane.plain),
                    "the job's output")
        await pilot.press("enter")  # again: from the start once more, and still live after
        await until(pilot, lambda: {"hello from the job", "a line on stderr"} <= set(app.pane.plain),
                    "the job's output again")
        assert "not this one" not in app.pane.plain  # the pane shows the followed job alone
        assert app.following == job.id
        gate.touch()
        await until(pilot, lambda: "after the gate" in app.pane.plain, "output after the gate")
        await until(pilot, lambda: any(f"job {job.id} succeeded" in line for line in app.pane.plain),
                    "the job's end in the pane")
        # r: the same code again, as a new job, listed as soon as the daemon has it
        await pilot.press("r")
        await until(pilot, lambda: [j for j in app.model.jobs.values() if j.name == "chatty"
                                    and j.id != job.id and cell(app, j.id, "name") == "chatty"],
                    "the restarted job's row")

    run_app(daemon, scenario)


def test_the_filter_hides_other_jobs(daemon):
    async def scenario(app, pilot, client):
        jobs = [await client.run_code("pass", name=name) for name in ("plate-1", "plate-2", "other")]
        await until(pilot, lambda: all(cell(app, j.id, "name") for j in jobs), "three rows")
        await pilot.press("slash", *"plate")
        await until(pilot, lambda: app.jobs_table.row_count == 2, "the filter applied")
        assert cell(app, jobs[2].id, "name") is None
        await pilot.press("enter")   # the filter stays, the jobs table has the keys again
        assert app.focused is app.jobs_table and app.model.pattern == "plate"
        late = await client.run_code("pass", name="other-2")
        plate = await client.run_code("pass", name="plate-3")
        await until(pilot, lambda: cell(app, plate.id, "name") is not None, "a new matching job")
        assert cell(app, late.id, "name") is None
        await pilot.press("slash", "escape")  # clears it: every job again
        await until(pilot, lambda: app.jobs_table.row_count == 5, "the filter cleared")
        assert app.model.pattern == "" and cell(app, late.id, "name") == "other-2"

    run_app(daemon, scenario)


def _client_without_reconnect(socket, autostart):
    """A client that does not connect again by itself (where clients can), so that the
    app's own reconnecting is what the test sees."""
    options = {"reconnect": False} if "reconnect" in inspect.signature(AsyncClient).parameters else {}
    return AsyncClient(socket, autostart=autostart, name="warmctl top", **options)


@pytest.mark.parametrize("by", ["client", "app"])
def test_a_banner_while_the_daemon_is_away_and_gone_once_it_is_back(daemon, by):
    TopApp = textual_app()

    async def main() -> None:
        app = TopApp(daemon.socket, autostart=False, backoff=(0.05, 0.5),
                     connect=_client_without_reconnect if by == "app" else None)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.connected, "the first snapshot")
            assert not app.banner.display
            await asyncio.to_thread(daemon.stop)
            await until(pilot, lambda: app.banner.display, "the banner")
            assert "reconnecting" in str(app.banner.content)
            assert not app.connected and app.is_running
            await pilot.pause(0.3)  # a few failed attempts: still waiting, still running
            assert app.banner.display and not app.connected
            await asyncio.to_thread(daemon.start)
            await until(pilot, lambda: not app.banner.display, "the banner cleared")
            assert app.connected and app.reconnects == 1
            async with AsyncClient(daemon.socket, autostart=False) as client:
                job = await client.run_code("pass", name="after the restart")
                await until(pilot, lambda: cell(app, job.id, "state") == "succeeded",
                            "a job of the new daemon")
    asyncio.run(main())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_top_recovers_in_every_one_of_30_restarts(make_daemon):
    """Killed (SIGKILL) or stopped cleanly in turn, the new daemon coming after a random
    delay of 0 to 5 s (seeded): each time the banner shows, clears once the new daemon
    answers, and a job of the new daemon appears in the table."""
    import random
    import signal
    TopApp = textual_app()
    daemon = make_daemon("[workers]\ncount = 1\nspares = 0\n")
    rng = random.Random(20261208)

    async def main() -> None:
        app = TopApp(daemon.socket, autostart=False)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.connected, "the first snapshot")
            for cycle in range(30):
                if cycle % 2:
                    await asyncio.to_thread(daemon.stop)
                else:
                    os.kill(daemon.pid, signal.SIGKILL)
                    await asyncio.to_thread(daemon.stop)  # reaps it
                await until(pilot, lambda: app.banner.display, f"the banner, cycle {cycle}")
                await asyncio.sleep(rng.uniform(0, 5))  # the scenario: the daemon comes back later
                await asyncio.to_thread(daemon.start)
                await until(pilot, lambda: app.connected and not app.banner.display,
                            f"the reconnect, cycle {cycle}")
                async with AsyncClient(daemon.socket, autostart=False) as client:
                    job = await client.run_code("pass", name=f"cycle {cycle}")
                    await until(pilot, lambda: cell(app, job.id, "state") == "succeeded",
                                f"a job of the new daemon, cycle {cycle}")
    asyncio.run(main())


def test_no_daemon_and_no_autostart_exits_unavailable(tmp_path):
    TopApp = textual_app()

    async def main():
        app = TopApp(tmp_path / "none.sock", autostart=False)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: not app.is_running or app.failure is not None, "the exit")
        return app

    app = asyncio.run(main())
    assert app.return_code == exitcodes.UNAVAILABLE
    assert "none.sock" in str(app.failure)


# ---------------------------------------------------------------- without a terminal

def _job(id, name, state="running", **row):
    return JobInfo.from_row({"id": id, "name": name, "state": state, "kind": "code",
                             "submitted": row.pop("submitted", 1.0), **row})


def test_the_model_maps_the_watch_state_to_rows():
    group = _job("g1", "plate", kind="group", submitted=1.0, children={"done": 1, "total": 4})
    child = _job("c1", "well 1", group="g1", submitted=2.0, started=10.0, worker_pid=42,
                 progress={"done": 1, "total": 4})
    alone = _job("a1", "alone", state="succeeded", submitted=3.0, started=10.0, finished=12.5)
    worker = WorkerInfo.from_row({"slot": 0, "pid": 42, "pgid": 42, "state": "busy", "jobs_run": 3,
                                  "warmup_seconds": 1.5, "rss": 3 * 2**20, "device": 0,
                                  "gpu": {"pool_bytes": 2**20, "memory_limit": 2**30}})
    model = TopModel()
    status = type("S", (), {"summary": "1 worker busy", "daemon": {"pid": 7, "version": "1"}})()
    assert model.apply(Snapshot(status, {j.id: j for j in (alone, child, group)}, {42: worker})) == "all"
    rows = model.job_rows(now=20.0)
    assert [k for k, _ in rows] == ["g1", "c1", "a1"]  # the child under its group
    assert rows[0][1][1] == "plate" and rows[1][1][1] == "└ well 1"
    assert rows[0][1][3] == "[##........]  25%"
    assert rows[1][1][3:] == ("[##........]  25%", "10.00s", "42")
    assert rows[2][1][2:] == ("succeeded", "-", "2.50s", "-")
    assert worker_rows(model) == [("42", ("42", "gpu0", "busy", "1.50s", "3", "3.0MiB", "1.0MiB/1.0GiB"))]
    assert job_rows(model, "WELL", 20.0) == [("c1", model.job_cells("c1", 20.0))]
    assert model.job_cells("c1", 20.0)[1] == "└ well 1"  # its depth kept when filtered
    assert "1 worker busy" in model.header("/s")

    assert model.apply(JobProgress(child.with_progress({"done": 3, "total": 4}, None))) == "job"
    assert model.job_cells("c1", 20.0)[3] == "[#######...]  75%"
    assert model.apply(JobChanged("dropped", alone)) == "job" and "a1" not in model.jobs
    gone_worker = WorkerInfo.from_row({**worker.raw, "state": "exited"})
    assert model.apply(WorkerChanged(gone_worker)) == "worker" and model.worker_rows() == []
    assert progress_text(_job("x", "x", progress={"done": 5})) == "5"
    assert progress_text(_job("y", "y")) == "-"


def test_without_textual_top_prints_the_install_hint(tmp_path):
    fake = tmp_path / "fake" / "textual"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no Textual here')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(fake.parent)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    done = subprocess.run([sys.executable, "-m", "warmd.ctl", "--socket", str(tmp_path / "s.sock"),
                           "--no-autostart", "top"], env=env, capture_output=True, text=True,
                          timeout=DEADLINE)
    assert done.stderr == HINT + "\n"
    assert done.stdout == ""
    assert done.returncode == exitcodes.UNAVAILABLE == 69


def test_warmctl_starts_without_importing_textual():
    code = ("import sys, warmd.ctl.main as m; m.build_parser(); "
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('textual', 'rich')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          timeout=DEADLINE, cwd=Path(__file__).parent)
    assert done.stdout.strip() == "[]"
