"""Cancel kills exactly one job's processes, quickly, and leaves warmd warm."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import wait

import psutil
import pytest

import warmd
from warmd.client.events import Output
from warmd.client.info import WorkerInfo

import helpers_cancel
import helpers_jobs
from helpers_procs import gone

FAST = "[cancel]\ninterrupt_grace = 0.3\nterminate_grace = 0.3\n"


def job_pids(future) -> list[int]:
    """The pids a job prints as a 'PIDS ...' line, awaited from its output stream."""
    text = ""
    for event in future.events():
        if isinstance(event, Output) and event.stream == "stdout":
            text += event.text  # a line may arrive in pieces (another thread may flush mid-print)
            for line in text.splitlines(keepends=True):
                if line.startswith("PIDS") and line.endswith("\n"):
                    return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"job ended before reporting its pids: {future.finished}")


def warm_tokens(client) -> set[str]:
    return {w.token for w in client.status().workers if w.state in ("idle", "busy")}


def wait_for_workers(client, count: int, deadline: float = 30.0) -> list[WorkerInfo]:
    """Workers warm up on their own schedule; the daemon pushes no event for it, so poll status."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        workers = [w for w in client.status().workers if w.state in ("idle", "busy")]
        if len(workers) >= count:
            return workers
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} warm workers after {deadline} s")


def test_cancel_kills_the_whole_tree_and_nothing_else(make_daemon, tmp_path):
    d = make_daemon(FAST, "--workers", "2", "--spares", "1")
    fifo = tmp_path / "release"
    os.mkfifo(fifo)
    with d.client() as client:
        wait_for_workers(client, 3)
        before = warm_tokens(client)
        other = client.submit(helpers_cancel.wait_for_file, str(fifo))
        other_pid = job_pids(other)[0]
        victim = client.submit(helpers_cancel.pool_with_escapee)
        pids = job_pids(victim)
        worker_pid, tree = pids[0], pids[1:]
        assert len(tree) == 6 and all(psutil.pid_exists(p) for p in tree)
        assert psutil.Process(tree[1]).getpgid() != worker_pid if hasattr(psutil.Process, "getpgid") \
            else os.getpgid(tree[1]) != worker_pid  # the grandchild really left the group

        assert victim.cancel() is True
        assert victim.cancelled()
        assert gone(tree), [p for p in tree if psutil.pid_exists(p)]
        assert victim.finished.state == "cancelled"
        # untouched: the daemon, this client, the other job and its worker
        assert psutil.pid_exists(d.pid) and psutil.pid_exists(other_pid)
        assert not other.done()
        with open(fifo, "w") as f:
            f.write("released")
        assert other.result(timeout=30) == "released"
        # the next job runs on a worker that was warm before the cancel
        nxt = client.submit(helpers_cancel.quick, 1)
        assert nxt.result(timeout=30) == 1
        assert nxt.finished.token in before


def test_cooperative_cancel_keeps_the_worker_warm(make_daemon):
    d = make_daemon(FAST, "--spares", "0")
    with d.client() as client:
        job = client.submit(helpers_cancel.sleeper_with_child)
        worker_pid, child = job_pids(job)
        token = wait_for_workers(client, 1)[0].token
        assert job.cancel() is True
        assert gone([child])
        assert psutil.pid_exists(worker_pid)
        nxt = client.submit(helpers_cancel.token_and_pid)
        assert nxt.result(timeout=30) == worker_pid
        assert nxt.finished.token == token


def test_stuck_job_is_killed_after_both_graces(make_daemon):
    d = make_daemon(FAST)
    with d.client() as client:
        wait_for_workers(client, 2)
        job = client.submit(helpers_cancel.stuck)
        (worker_pid,) = job_pids(job)
        start = time.monotonic()
        assert client.cancel(job.job_id) == "cancelled"
        assert time.monotonic() - start >= 0.6  # it took the interrupt and terminate graces
        assert job.exception if job.cancelled() else False
        assert gone([worker_pid])
        assert job.finished.state == "cancelled"
        assert "SIGKILL" in job.finished.error["message"]
        workers = wait_for_workers(client, 2)
        assert worker_pid not in {w.pid for w in workers}  # a replacement appeared


def test_forced_cancel_goes_straight_to_sigkill(make_daemon):
    d = make_daemon("[cancel]\ninterrupt_grace = 30\nterminate_grace = 30\n")
    with d.client() as client:
        job = client.submit(helpers_cancel.cooperative)
        (worker_pid,) = job_pids(job)
        start = time.monotonic()
        assert job.cancel(force=True) is True
        assert time.monotonic() - start < 10  # did not wait out a 30 s grace
        assert gone([worker_pid])


def test_cancel_edge_cases(daemon):
    with daemon.client() as client:
        done = client.submit(helpers_cancel.quick, 5)
        assert done.result(timeout=30) == 5
        assert client.cancel(done.job_id) == "already_finished"
        assert done.cancel() is False
        with pytest.raises(warmd.UnknownJob):
            client.cancel("nosuchjob")
        # racing a job's own end is never an error
        for _ in range(20):
            f = client.submit(helpers_cancel.quick, 1)
            assert client.cancel(f.job_id) in ("cancelled", "finished", "already_finished",
                                               "removed_from_queue")
            assert wait([f], timeout=30).done == {f}
        assert client.ping()["pid"] == daemon.pid


def test_cancel_queued_job_and_from_another_client(make_daemon):
    d = make_daemon(FAST, "--spares", "0")
    with d.client() as a, d.client() as b:
        running = a.submit(helpers_cancel.cooperative)
        job_pids(running)
        queued = a.submit(helpers_cancel.quick, 1)
        assert b.cancel(queued.job_id) == "removed_from_queue"
        assert b.cancel(running.job_id) == "cancelled"  # any client may cancel
        # client a learns of both ends through its own connection
        wait([queued, running], timeout=30)
        assert queued.cancelled() and running.cancelled()


def test_worker_killed_from_outside_makes_the_job_lost(daemon):
    with daemon.client() as client:
        job = client.submit(helpers_cancel.cooperative)
        (worker_pid,) = job_pids(job)
        os.kill(worker_pid, signal.SIGKILL)
        with pytest.raises(warmd.JobLost, match="SIGKILL"):
            job.result(timeout=30)
        assert job.finished.state == "lost"
        assert client.submit(helpers_cancel.quick, 2).result(timeout=30) == 2


def test_async_cancel(daemon):
    import asyncio
    from warmd.aio import AsyncClient

    async def go():
        async with AsyncClient(daemon.socket, autostart=False) as client:
            job = await client.submit(helpers_cancel.sleeper_with_child)
            text = ""
            async for event in job.events():
                text += event.text if isinstance(event, Output) else ""
                if text.startswith("PIDS") and text.endswith("\n"):
                    pids = [int(x) for x in text.split()[1:]]
                    break
            assert await job.cancel() is True
            with pytest.raises(warmd.JobCancelled):
                await job.result()
            return pids
    pids = asyncio.run(go())
    assert gone(pids[1:])


def test_warmctl_ctrl_c_interrupts_then_kills(daemon):
    proc = subprocess.Popen(
        [sys.executable, "-m", "warmd.ctl", "--socket", str(daemon.socket), "--no-autostart", "exec",
         "-c", "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
               "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('started', flush=True)\n"
               "while True: pass"],
        env=daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "started\n"
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)  # the job ignores SIGINT: the second Ctrl-C forces it
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "cancelling job" in err and "kill" in err


def test_status_shows_worker_details(daemon):
    r = daemon.warmctl("status", "--json")
    assert r.returncode == 0, r.stderr
    import json
    status = json.loads(r.stdout)
    for w in status["workers"]:
        assert {"pid", "pgid", "state", "jobs_run", "warmup_seconds", "rss"} <= w.keys()
        assert w["pid"] == w["pgid"]
    assert status["daemon"]["pid"] == daemon.pid


def anon_rss(pid: int) -> int:
    """The daemon's anonymous resident memory, where a leak would show: its file-backed
    pages (the interpreter, libraries) come and go with the machine's page cache."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))


@pytest.mark.slow
def test_two_hundred_cancel_cycles_leave_nothing_behind(make_daemon):
    # Ten finished jobs kept, not a thousand: what kept jobs hold (about 9 KiB each here,
    # more in a full test run) is bounded by design and would hide a leak, or pass the
    # bound without one.
    d = make_daemon("[daemon]\nresult_max_jobs = 10\n[cancel]\ninterrupt_grace = 0.05\nterminate_grace = 0.05\n")
    kinds = [helpers_cancel.sleeper_with_child, helpers_cancel.stuck, helpers_cancel.cooperative]
    seen: list[int] = []
    with d.client() as client:
        client.submit(helpers_cancel.quick, 0).result(timeout=30)
        # A round of each kind first, so what the daemon loads on first use (modules for the
        # kill path, a replacement worker's bookkeeping) is in the baseline: a leak grows
        # with the cycles after it.
        def cycles(n: int) -> int:
            """Cancel ``n`` jobs of every kind, some by force; the daemon's memory after."""
            for i in range(n):
                job = client.submit(kinds[i % 3])
                seen.extend(job_pids(job))
                assert job.cancel(force=(i % 5 == 0)) is True
            client.submit(helpers_cancel.quick, 0).result(timeout=30)
            return anon_rss(d.pid)

        rss_before = cycles(15)
        rss_after = cycles(200)
        workers = {w.pid for w in client.status().workers}
    strays = [p for p in set(seen) - workers if not gone([p])]
    assert strays == []
    children = {p.pid for p in psutil.Process(d.pid).children(recursive=True)}
    assert children <= workers | {c.pid for w in workers if psutil.pid_exists(w)
                                  for c in psutil.Process(w).children(recursive=True)}
    assert rss_after - rss_before < 8 * 1024 * 1024, (rss_before, rss_after)


# A worker holds the next job while one runs where one job runs at a time (capacity 1), and
# starts it as it sends the last one's end. Cancel must still reach exactly the job it names.

def held_by(client, job_id: str) -> int | None:
    """The worker pid holding a queued job, if a worker holds it."""
    (summary,) = [j for j in client.jobs() if j.id == job_id]
    return summary.worker_pid if summary.state == "queued" else None


def test_cancelling_the_running_job_spares_the_held_one(make_daemon):
    d = make_daemon(FAST, "--spares", "0")
    with d.client() as client:
        running = client.submit(helpers_cancel.cooperative)
        (worker_pid,) = job_pids(running)
        held = client.submit(helpers_cancel.child_status)
        assert held_by(client, held.job_id) == worker_pid
        assert running.cancel() is True
        # Started on the same warm worker after the cancel, and no SIGINT reached its child.
        assert held.result(timeout=30) == (0, worker_pid)


def test_cancelling_a_held_job_skips_it(make_daemon, tmp_path):
    d = make_daemon(FAST, "--spares", "0")
    fifo, marker = tmp_path / "release", tmp_path / "ran"
    os.mkfifo(fifo)
    with d.client() as client:
        running = client.submit(helpers_cancel.wait_for_file, str(fifo))
        (worker_pid,) = job_pids(running)
        held = client.submit(helpers_cancel.touch, str(marker))
        assert held_by(client, held.job_id) == worker_pid
        assert client.cancel(held.job_id) == "removed_from_queue"
        with open(fifo, "w") as f:
            f.write("go")
        assert running.result(timeout=30) == "go"
        assert held.cancelled()
        # The worker skipped it, answered, and takes the next job.
        assert client.submit(helpers_cancel.token_and_pid).result(timeout=30) == worker_pid
    assert not marker.exists()
    assert "unexpected" not in d.log_text()


def test_a_held_job_goes_back_to_the_queue_when_its_worker_is_killed(make_daemon):
    d = make_daemon(FAST)
    with d.client() as client:
        wait_for_workers(client, 2)
        running = client.submit(helpers_cancel.cooperative)
        (worker_pid,) = job_pids(running)
        held = client.submit(helpers_cancel.child_status)
        assert held_by(client, held.job_id) == worker_pid
        assert running.cancel(force=True) is True
        status, spare_pid = held.result(timeout=30)  # run by the spare instead
        assert status == 0 and spare_pid != worker_pid
        assert gone([worker_pid])


def test_cancels_racing_the_end_of_a_job_never_touch_the_next(make_daemon):
    # The job to cancel ends as the cancel arrives, and the worker may already have started
    # the held one: every kind of cancel must leave that one alone.
    d = make_daemon("[cancel]\ninterrupt_grace = 0.02\nterminate_grace = 0.02\n")
    with d.client() as client:
        wait_for_workers(client, 2)
        for i in range(120):
            first = client.submit(helpers_cancel.quick, i)
            second = client.submit(helpers_cancel.child_status)
            client.cancel(first.job_id, ("interrupt", "terminate", "kill")[i % 3])
            wait([first], timeout=30)
            assert first.cancelled() or first.result() == i
            assert second.result(timeout=30)[0] == 0, i


def test_stopping_the_daemon_cancels_a_held_job(make_daemon):
    d = make_daemon(FAST, "--spares", "0")
    with d.client() as client:
        running = client.submit(helpers_cancel.cooperative)
        (worker_pid,) = job_pids(running)
        held = client.submit(helpers_cancel.quick, 1)
        assert held_by(client, held.job_id) == worker_pid
        client.shutdown_daemon()
        wait([running, held], timeout=30)
        assert running.cancelled() and held.cancelled()
    assert d.proc.wait(timeout=30) == 0


def test_the_sweep_spares_the_interpreters_helpers_and_kills_the_jobs_processes(make_daemon):
    d = make_daemon("[workers]\ncount = 1\nspares = 0\n")
    trackers, stderr = set(), []
    with d.client() as client:
        for _ in range(20):
            future = client.submit(helpers_jobs.shared_memory_and_pool, 50)
            total, leftover, tracker = future.result(timeout=60)
            assert total == sum(abs(i) for i in range(-50, 50))
            assert future.finished.info["leftovers_killed"] >= 1
            assert not psutil.pid_exists(leftover) or psutil.Process(leftover).status() == "zombie"
            trackers.add(tracker)
            stderr.append(future.output("stderr"))
        workers = {w.pid for w in client.status().workers}
    assert len(workers) == 1  # one worker ran all twenty
    text = "".join(stderr)
    assert "resource_tracker" not in text and "KeyError" not in text, text
    assert len(trackers) == 1  # the same tracker served every job
