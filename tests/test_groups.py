"""Job groups against a real daemon: fan-out from a job and from a front end, cancelling a
run as one, no job outliving its run, no deadlock, roll-up progress, results by reference."""
from __future__ import annotations

import concurrent.futures
import json

import psutil
import pytest

import helpers_groups as jobs
import warmd
from helpers_fakegpu import fake_gpu_daemon, wait_warm
from helpers_procs import gone
from warmd.client.events import ChildProgress
from warmd.client.info import JobInfo
from warmd.errors import RemoteError, RequestFailed

FOUR = "[workers]\ncount = 4\nspares = 0\n"
TWO = "[workers]\ncount = 2\nspares = 0\n"
ONE = "[workers]\ncount = 1\nspares = 0\n"
ONE_NO_EXTRA = "[workers]\ncount = 1\nspares = 0\nmax_extra = 0\n"
HANG = 120  # seconds: a run that takes this long is hung, and the test fails


def below(client, job_id: str) -> list[JobInfo]:
    """Every job listed under ``job_id`` (children, and the jobs of its groups)."""
    listed = client.jobs()
    out, frontier = [], {job_id}
    while frontier:
        step = [j for j in listed if (j.group or j.parent) in frontier]
        out += step
        frontier = {j.id for j in step}
    return out


def sleeping_pids(events, count: int) -> set[int]:
    """Read a parent's events until ``count`` children report the processes they started;
    those pids (the children's workers outlive them)."""
    pids: dict[str, int] = {}
    for event in events:
        if isinstance(event, ChildProgress) and event.fields.get("grandchild"):
            pids[event.child] = event.fields["grandchild"]
            if len(pids) >= count:
                break
    return set(pids.values())


# ---------------------------------------------------------------- fan-out from a job

def test_a_parent_maps_16_children_over_4_warm_workers_in_order(make_daemon):
    d = make_daemon(FOUR)
    with d.client() as client:
        warm = {w.pid for w in wait_warm(client, 4).workers}
        parent = client.submit(jobs.plate, 16)
        results = parent.result(timeout=HANG)
        assert [i for i, _ in results] == list(range(16))
        pids = [p for _, p in results]
        workers = {w.pid: w for w in client.status().workers}
        children = below(client, parent.job_id)
    assert parent.finished.worker_pid in warm
    assert parent.finished.worker_pid not in pids  # it held its worker while it waited
    assert set(pids) <= set(workers) and len(set(pids)) < len(pids)  # warm workers, reused
    assert sum(w.jobs_run for w in workers.values()) == 17
    groups = [j for j in children if j.kind == "group"]
    wells = [j for j in children if j.kind == "call"]
    assert len(groups) == 1 and groups[0].parent == parent.job_id and groups[0].state == "succeeded"
    assert len(wells) == 16 and {j.group for j in wells} == {groups[0].id}
    assert {j.parent for j in wells} == {parent.job_id}


def test_cancelling_a_parent_mid_map_cancels_its_children_and_their_processes(make_daemon):
    d = make_daemon(FOUR)
    with d.client() as client:
        warm = {w.pid for w in wait_warm(client, 4).workers}
        parent = client.submit(jobs.plate_of_sleepers, 12)
        pids = sleeping_pids(parent.events(), 3)
        assert client.cancel(parent.job_id) == "cancelled"
        # Answered once every job below it has ended, and with them their processes.
        children = below(client, parent.job_id)
        assert gone(pids), [p for p in pids if psutil.pid_exists(p)]
        assert parent.finished.state == "cancelled"
        assert {j.state for j in children} == {"cancelled"}
        never_ran = [j for j in children if j.kind == "call" and j.started is None]
        assert never_ran and all(j.worker_pid is None for j in never_ran)
        # The workers were interrupted, not killed: the next run finds them warm.
        assert client.submit(jobs.pid_of_self).result(timeout=HANG) in warm


def test_a_parent_that_raises_gets_its_running_children_cancelled(make_daemon):
    d = make_daemon(FOUR)
    with d.client() as client:
        parent = client.submit(jobs.raise_while_children_run, 6)
        with pytest.raises(RuntimeError, match="the parent failed"):
            parent.result(timeout=HANG)
        children = [j for j in below(client, parent.job_id) if j.kind == "call"]
        ends = [client.wait(j.id) for j in children]
        pids = {e.fields["grandchild"] for e in parent.events()
                if isinstance(e, ChildProgress) and e.fields.get("grandchild")}
    assert len(children) == 6 and {e.state for e in ends} == {"cancelled"}
    assert pids and gone(pids)


# ---------------------------------------------------------------- no deadlock

def test_two_runs_fanning_out_over_two_workers_both_finish(make_daemon):
    d = make_daemon(TWO)
    with d.client() as client:
        runs = [client.submit(jobs.plate, 8, 0.05) for _ in range(2)]
        done, pending = concurrent.futures.wait(runs, timeout=HANG)
        assert not pending, "a run hung: parents filled the pool"
        assert [[i for i, _ in r.result()] for r in runs] == [list(range(8))] * 2
        status = client.status()
    assert status.capacity["extra"] >= 0


def test_a_single_worker_runs_the_children_of_the_job_it_holds(make_daemon):
    d = make_daemon(ONE)
    with d.client() as client:
        assert client.submit(jobs.fan_out_with, 4).result(timeout=HANG) == [0, 1, 2, 3]


def test_a_child_that_could_never_start_is_refused_naming_the_setting(make_daemon):
    d = make_daemon(ONE_NO_EXTRA)
    with d.client() as client:
        parent = client.submit(jobs.fan_out_with, 4)
        with pytest.raises(RequestFailed, match="workers.max_extra"):
            parent.result(timeout=HANG)


# ---------------------------------------------------------------- progress

def test_structured_progress_of_children_reaches_the_parents_follower_in_order(make_daemon):
    d = make_daemon(FOUR)
    with d.client() as client:
        parent = client.submit(jobs.plate, 4)
        parent.result(timeout=HANG)
        news = [e for e in parent.events() if isinstance(e, ChildProgress)]
    by_child: dict[str, list[ChildProgress]] = {}
    for event in news:
        by_child.setdefault(event.child, []).append(event)
    assert len(by_child) == 4
    for child, seen in by_child.items():
        steps = [(e.state, e.fields.get("phase")) for e in seen]
        assert steps == [("running", "load"), ("running", "done"), ("succeeded", "done")], steps
        assert len({e.fields.get("well") for e in seen if e.fields}) == 1
    done = [e.children_done for e in news]
    assert done == sorted(done) and done[-1] == 4 and news[-1].children_total == 4
    assert [e.seq for e in news] == sorted(e.seq for e in news)


# ---------------------------------------------------------------- groups from a front end

def test_a_front_end_group_submits_maps_rolls_up_and_waits(make_daemon):
    d = make_daemon(FOUR)
    with d.client() as client:
        with client.group(name="plate") as run:
            first = run.submit(jobs.well, 0)
            rest = list(run.map(jobs.well, range(1, 6)))
        end = run.wait()
        progress = run.progress
        listed = {j.id: j for j in client.jobs()}
    assert first.result()[0] == 0 and [i for i, _ in rest] == [1, 2, 3, 4, 5]
    assert end.state == "succeeded" and end.info["jobs"] == 6
    assert (progress.done, progress.total, progress.fraction) == (6, 6, 1.0)
    assert {c.fields["phase"] for c in progress.jobs.values()} == {"done"}
    group = listed[run.job_id]
    assert group.kind == "group" and group.name == "plate" and group.parent is None
    assert group.children == {"done": 6, "total": 6}
    assert listed[first.job_id].group == run.job_id


def test_a_failing_child_does_not_cancel_its_siblings_but_map_raises_at_it(make_daemon):
    d = make_daemon(FOUR)
    with d.client() as client:
        run = client.group(name="mixed")
        futures = [run.submit(jobs.fail_on, i, 2) for i in range(5)]
        end = run.wait(timeout=HANG)
        assert [f.exception() is None for f in futures] == [True, True, False, True, True]
        assert end.state == "failed" and "1 of 5 jobs" in end.error["message"]
        results = client.map(jobs.fail_on, range(5), [1] * 5)
        assert next(results) == 0
        with pytest.raises(ValueError, match="well 1 is bad"):
            next(results)


def test_cancelling_a_group_with_warmctl_returns_once_its_processes_are_gone(make_daemon):
    d = make_daemon(FOUR)
    with d.client() as client:
        run = client.group(name="sleepers")
        for i in range(8):
            run.submit(jobs.sleeper, i)
        run.close()
        pids = sleeping_pids(run.events(), 4)
        r = d.warmctl("cancel", run.job_id[:6])
        assert r.returncode == 0, r.stderr
        assert gone(pids)
        assert run.wait(timeout=HANG).state == "cancelled"
        assert {j.state for j in below(client, run.job_id)} == {"cancelled"}


def test_warmctl_jobs_shows_children_under_their_parent(make_daemon):
    d = make_daemon(FOUR)
    with d.client() as client:
        parent = client.submit(jobs.plate, 3)
        parent.result(timeout=HANG)
    r = d.warmctl("jobs")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    top = next(i for i, line in enumerate(lines) if line.startswith(parent.job_id))
    assert lines[top + 1].startswith("└ ") and "group" in lines[top + 1]
    assert all(line.startswith("  └ ") and "3/3" not in line for line in lines[top + 2:top + 5])
    assert "3/3" in lines[top] and "3/3" in lines[top + 1]
    listed = json.loads(d.warmctl("jobs", "--json").stdout)
    wells = [j for j in listed if j["parent"] == parent.job_id and j["kind"] == "call"]
    assert len(wells) == 3 and all(j["group"] for j in wells)
    assert all(j["progress"]["fields"]["phase"] == "done" for j in wells)


# ---------------------------------------------------------------- results by reference

def test_a_result_passed_by_reference_is_never_unpickled_by_the_client(make_daemon):
    d = make_daemon(FOUR)
    with d.client() as client:
        compiled = client.submit(jobs.compile_plate, 4)
        uses = [client.submit(jobs.use_compiled, compiled, i) for i in range(3)]
        uses.append(client.submit(jobs.use_compiled, warmd.ref(compiled.job_id), 3))
        assert [u.result(timeout=HANG) for u in uses] == [0, 10, 20, 30]
        assert compiled.done() and compiled.exception() is None
        with pytest.raises(RuntimeError, match="unpickled outside a warmd job"):
            compiled.result()  # proof that nothing here unpickled it before


def test_a_job_whose_needed_result_failed_does_not_run(make_daemon):
    d = make_daemon(FOUR)
    with d.client() as client:
        bad = client.submit(jobs.fail_on, 1, 1)
        after = client.submit(jobs.use_compiled, bad, 0)
        with pytest.raises(RemoteError, match="DependencyFailed|did not run") as info:
            after.result(timeout=HANG)
        assert bad.job_id in str(info.value)
        assert after.finished.info.get("started") is None
        late = client.submit(jobs.use_compiled, bad, 0)  # asked for after it failed
        with pytest.raises(RemoteError, match="did not run"):
            late.result(timeout=HANG)
        assert late.finished.info.get("started") is None
        with pytest.raises(RequestFailed, match="does not hold"):
            client.submit(jobs.use_compiled, warmd.ref("0123456789ab"), 0).result(timeout=HANG)


# ---------------------------------------------------------------- placement

def test_map_spreads_over_every_device(make_daemon):
    d = fake_gpu_daemon(make_daemon, "[workers]\nspares = 0\n", devices=2)
    with d.client() as client:
        wait_warm(client, 2)
        assert set(client.map(jobs.device_after, [0.2] * 6)) == {0, 1}
        assert set(client.map(jobs.device_after, [0] * 3, device=1)) == {1}


# ---------------------------------------------------------------- asyncio

def test_a_group_takes_job_options_for_each_call_in_both_clients(make_daemon):
    import asyncio

    from warmd.aio import AsyncClient

    d = make_daemon(FOUR)
    with d.client() as client:
        with client.group(name="named wells") as run:
            well = run.submit_call(jobs.well, (1,), name="well A01", priority=5, log_level="info")
        well.result(timeout=HANG)
        row = {j.id: j for j in client.jobs()}[well.job_id]
    assert (row.name, row.priority, row.group) == ("well A01", 5, run.job_id)

    async def main():
        async with AsyncClient(d.socket, autostart=False) as client:
            async with await client.group(name="async named") as group:
                job = await group.submit_call(jobs.well, (2,), name="well B02", timeout=60)
            await job.result()
            return {j.id: j for j in await client.jobs()}[job.job_id]
    row = asyncio.run(asyncio.wait_for(main(), HANG))
    assert (row.name, row.timeout) == ("well B02", 60)


def test_the_async_client_maps_and_groups_as_the_sync_one_does(make_daemon):
    import asyncio

    from warmd.aio import AsyncClient

    d = make_daemon(FOUR)

    async def main():
        async with AsyncClient(d.socket, autostart=False) as client:
            mapped = await client.map(jobs.well, range(4))
            async with await client.group(name="async plate") as run:
                first = await run.submit(jobs.well, 10)
                rest = await run.map(jobs.well, [11, 12])
            end = await run.wait()
            sleepers = await client.group(name="async sleepers")
            for i in range(4):
                await sleepers.submit(jobs.sleeper, i)
            await sleepers.close()
            pids = set()
            async for event in sleepers.events():
                if isinstance(event, ChildProgress) and event.fields.get("grandchild"):
                    pids.add(event.fields["grandchild"])
                    if len(pids) == 2:
                        break
            cancelled = await sleepers.cancel()
            return mapped, (await first.result())[0], rest, end, run.progress, cancelled, pids

    mapped, first, rest, end, progress, cancelled, pids = asyncio.run(asyncio.wait_for(main(), HANG))
    assert [i for i, _ in mapped] == [0, 1, 2, 3] and first == 10 and [i for i, _ in rest] == [11, 12]
    assert end.state == "succeeded" and (progress.done, progress.total) == (3, 3)
    assert cancelled and gone(pids)


def test_warmctl_run_shows_one_bar_for_a_job_that_fans_out(make_daemon, tmp_path):
    import os
    import pty
    import subprocess
    import sys

    d = make_daemon(FOUR)
    script = tmp_path / "plate.py"
    script.write_text("import helpers_groups\nprint(len(helpers_groups.plate(4)), 'wells')\n")
    master, terminal = pty.openpty()  # stderr a terminal: warmctl draws its bar there
    proc = subprocess.Popen([sys.executable, "-m", "warmd.ctl", "--socket", str(d.socket), "--no-autostart",
                             "run", str(script)], env=d.env, stdout=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's last writer has gone
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    out, _ = proc.communicate(timeout=HANG)
    assert proc.returncode == 0 and out.decode().strip() == "4 wells"
    bars = [b for b in shown.decode(errors="replace").split("\r") if " jobs " in b]
    assert bars and "4/4 jobs 100%" in bars[-1] and "well=W0" in bars[-1], shown[-500:]


def test_a_group_kept_on_does_not_keep_its_evicted_jobs_results(make_daemon):
    d = make_daemon('[daemon]\nresult_max_bytes = "8MiB"\n[workers]\ncount = 2\nspares = 0\n')
    MiB = 2**20
    with d.client() as client:
        client.submit(jobs.pid_of_self).result(timeout=HANG)
        rss = psutil.Process(d.pid).memory_info().rss
        with client.group(name="blobs") as run:
            for i in range(40):  # 160 MiB of results, where 8 MiB may be retained
                run.submit(jobs.blob, i, 4 * MiB).result(timeout=HANG)
        assert run.wait().state == "succeeded" and run.wait().info["jobs"] == 40
        assert client.jobs()  # the group is retained ...
    assert psutil.Process(d.pid).memory_info().rss < rss + 48 * MiB  # ... its jobs' results not
