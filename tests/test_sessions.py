"""Sessions: a warm worker held for one client's calls, which go straight between the two.

Each guarantee of a job is checked on the session's direct path: listed with the same
fields, cancel of a call (running or not yet started) keeps the session, a worker or
client killed mid-call leaves nothing stuck, arrays travel as memfds, and the held
worker runs nothing else.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import helpers_session as hs
import warmd
from warmd.channel import take_socket
from warmd import ResultElsewhere, SessionClosed
from warmd.errors import JobLost, RequestFailed
from warmd.memfd import Descriptor
from test_cancel import wait_for_workers

FAST = "[workers]\ncount = 1\nspares = 0\n[cancel]\ninterrupt_grace = 2\nterminate_grace = 1\n"


def wait_for_path(path, proc=None, timeout: float = 30.0) -> str:
    """The job writes the file when it has started (a rename: it is whole once seen)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        assert proc is None or proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    return open(path).read()


def job_row(client, job_id):
    return next(j for j in client.jobs() if j.id == job_id)


def until_state(client, job_id, states, timeout: float = 30.0):
    """Poll the daemon's listing: its end comes from the worker, after the caller's."""
    deadline = time.monotonic() + timeout
    while True:
        row = next((j for j in client.jobs() if j.id == job_id), None)
        if row is not None and row.state in states:
            return row
        assert time.monotonic() < deadline, f"job {job_id} never reached {states}: {row}"
        time.sleep(0.02)


def test_calls_keep_module_state_and_are_listed_like_jobs(make_daemon):
    d = make_daemon(FAST)
    with d.client() as client:
        with client.session(name="tuning") as session:
            pid = session.submit(hs.remember, "image", [1, 2, 3]).result()
            assert pid == session.worker_pid
            assert session.submit(hs.recall, "image").result() == [1, 2, 3]
            assert list(session.map(hs.add, range(4), range(4))) == [0, 2, 4, 6]
            with pytest.raises(ValueError, match="boom"):
                session.submit(hs.fail, "boom").result()
            said = session.submit(hs.shout, 7)
            assert said.result() == 7
            workers = {w.pid: w for w in client.status().workers}
            assert workers[session.worker_pid].state == "held"
            assert workers[session.worker_pid].raw["session"] == session.id
            rows = {j.id: j for j in client.jobs()}
            assert rows[session.id].kind == "session" and rows[session.id].state == "running"
            assert rows[session.id].name == "tuning"
        call = until_state(client, said.job_id, ("succeeded",))
        assert call.group == session.id and call.worker_pid == session.worker_pid
        assert call.client_pid == os.getpid() and call.exit_status == 0
        assert call.raw["seconds"] >= 0 and call.raw["peak_rss"] > 0
        assert "call 7 says hello" in d.warmctl("logs", said.job_id).stdout
        with d.client() as other:  # the result went to its caller alone
            with pytest.raises(ResultElsewhere, match="its caller alone"):
                other.attach(said.job_id).result(timeout=30)
        listed = until_state(client, session.id, ("succeeded",))
        assert listed.raw["children"] == {"done": 8, "total": 8}
        # Let go: the worker is back in the pool, its session's modules forgotten.
        worker = next(w for w in client.status().workers if w.pid == session.worker_pid)
        assert worker.state == "idle" and worker.raw["session"] is None
        assert client.submit(hs.recall, "image").result() is None


def test_a_held_worker_runs_nothing_else_and_the_pool_warms_one_more(make_daemon):
    d = make_daemon(FAST)
    with d.client() as client:
        wait_for_workers(client, 1)
        with client.session() as session:
            assert session.submit(hs.pid).result() == session.worker_pid
            other = {client.submit(hs.pid).result() for _ in range(5)}
            assert session.worker_pid not in other and len(other) == 1


def test_sessions_beyond_max_extra_are_refused_with_the_reason(make_daemon):
    d = make_daemon(FAST.replace("spares = 0\n", "spares = 0\nmax_extra = 1\n"))
    with d.client() as client:
        first = client.session()
        with pytest.raises(RequestFailed, match="workers.max_extra = 1") as refused:
            client.session()
        assert refused.value.code == "no_workers"
        first.close()
        with client.session() as again:
            assert again.submit(hs.add, 1, 2).result() == 3


def test_cancel_interrupts_the_running_call_and_keeps_the_session(make_daemon, tmp_path):
    d = make_daemon(FAST)
    with d.client() as client, client.session() as session:
        session.submit(hs.remember, "model", "warm").result()
        marker = str(tmp_path / "started")
        running = session.submit(hs.started_then_sleep, marker)
        queued = session.submit(hs.add, 1, 1)
        wait_for_path(marker)
        assert queued.cancel() and queued.cancelled()
        assert running.cancel() and running.cancelled()
        with pytest.raises(warmd.JobCancelled):
            running.result()
        assert session.submit(hs.recall, "model").result() == "warm"
        assert session.submit(hs.pid).result() == session.worker_pid
        assert until_state(client, running.job_id, ("cancelled",)).group == session.id
        assert until_state(client, queued.job_id, ("cancelled",)).error == "cancelled before it started"


def test_a_storm_of_cancels_leaves_nothing_stuck(make_daemon):
    d = make_daemon(FAST)
    with d.client() as client, client.session() as session:
        for round_ in range(20):
            calls = [session.submit(hs.sleep_then, 0.002 * (i % 3), i) for i in range(10)]
            for call in calls[round_ % 3::3]:
                call.cancel()
            for i, call in enumerate(calls):
                try:
                    assert call.result(timeout=30) == i
                except warmd.JobCancelled:
                    pass
        assert session.submit(hs.add, 2, 2).result() == 4
        rows = client.jobs()
        assert not [j for j in rows if j.group == session.id and j.state in ("running", "queued")
                    and j.id not in {session.id}]


def test_a_worker_killed_mid_call_is_lost_at_once_and_ends_the_session(make_daemon, tmp_path):
    d = make_daemon(FAST)
    with d.client() as client:
        session = client.session()
        marker = str(tmp_path / "started")
        call = session.submit(hs.started_then_sleep, marker)
        pid = int(wait_for_path(marker))
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(JobLost, match="went away during it"):
            call.result(timeout=30)
        with pytest.raises(SessionClosed):
            session.submit(hs.add, 1, 1)
        session.close()
        assert until_state(client, session.id, ("lost",)).error.startswith("the session's worker died")
        assert until_state(client, call.job_id, ("lost",)).state == "lost"
        with client.session() as again:
            assert again.submit(hs.add, 1, 1).result() == 2


CLIENT = """
import sys
sys.path.insert(0, {tests!r})
import helpers_session as hs, warmd
client = warmd.Client({socket!r}, autostart=False)
session = client.session()
print(session.id, session.worker_pid, flush=True)
session.submit(hs.started_then_sleep, {marker!r}).result()
"""


def test_a_client_killed_mid_call_ends_its_call_and_frees_the_worker(make_daemon, tmp_path):
    d = make_daemon(FAST)
    marker = str(tmp_path / "started")
    code = CLIENT.format(tests=os.path.dirname(__file__), socket=str(d.socket), marker=marker)
    proc = subprocess.Popen([sys.executable, "-c", code], env=d.env, stdout=subprocess.PIPE, text=True)
    try:
        session_id, worker_pid = proc.stdout.readline().split()
        job_pid = int(wait_for_path(marker, proc))
        assert job_pid == int(worker_pid)
        proc.kill()
        proc.wait()
        with d.client() as client:
            assert until_state(client, session_id, ("cancelled",)).error == "its client went away"
            call = next(j for j in client.jobs() if j.group == session_id)
            assert until_state(client, call.id, ("cancelled",)).worker_pid == job_pid
            deadline = time.monotonic() + 30
            while next(w for w in client.status().workers if w.pid == job_pid).state != "idle":
                assert time.monotonic() < deadline
                time.sleep(0.02)
            with client.session() as session:  # the same warm worker, for someone else now
                assert session.submit(hs.pid).result() == job_pid
    finally:
        proc.kill()


def test_arrays_travel_as_memfds_both_ways(make_daemon):
    d = make_daemon(FAST)
    big = np.arange(4 << 20, dtype=np.float32)
    with d.client() as client, client.session() as session:
        out = session.submit(np.multiply, big, 2).result()
        assert out.dtype == np.float32 and np.array_equal(out, big * 2)


def test_session_release_recycle_replaces_the_worker(make_daemon):
    d = make_daemon(FAST.replace("spares = 0\n", "spares = 0\nsession_release = \"recycle\"\n"))
    with d.client() as client:
        with client.session() as session:
            held = session.submit(hs.pid).result()
        deadline = time.monotonic() + 30
        while held in {w.pid for w in client.status().workers}:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.submit(hs.pid).result() != held


def test_cancelling_the_session_ends_it_and_its_call(make_daemon, tmp_path):
    d = make_daemon(FAST)
    with d.client() as client:
        session = client.session()
        marker = str(tmp_path / "started")
        call = session.submit(hs.started_then_sleep, marker)
        wait_for_path(marker)
        assert d.warmctl("cancel", session.id).returncode == 0
        with pytest.raises(warmd.JobCancelled):
            call.result(timeout=30)
        assert until_state(client, session.id, ("cancelled",)).state == "cancelled"
        session._ended.wait(30)
        with pytest.raises(SessionClosed):
            session.submit(hs.add, 1, 1)
        session.close()


def test_a_call_past_its_timeout_is_cancelled(make_daemon):
    d = make_daemon(FAST)
    with d.client() as client, client.session() as session:
        call = session.submit_call(hs.sleep_then, (30,), timeout=0.2)
        with pytest.raises(warmd.JobTimedOut):
            call.result(timeout=30)
        assert session.submit(hs.add, 1, 2).result() == 3


def test_bad_calls_on_the_channel_get_an_answer_and_the_session_goes_on(make_daemon):
    d = make_daemon(FAST)
    with d.client() as client, client.session() as session:
        from warmd.protocol import encode
        with session._channel.send_lock:
            session._channel.sock.sendall(encode({"t": "call", "job": "../etc", "kind": "call"}))
            session._channel.sock.sendall(encode({"t": "call", "job": "abc", "kind": "call", "paths": 7}))
        assert session.submit(hs.add, 2, 3).result() == 5
        with pytest.raises(TypeError, match="session's call takes"):
            session.submit_call(hs.add, (1, 2), priority=3)
        with pytest.raises(ValueError, match="by reference"):
            session.submit(hs.add, client.submit(hs.add, 1, 1), 1)


def test_the_channel_must_be_a_socket_of_this_user():
    r, w = os.pipe()
    assert take_socket((Descriptor(r),)) is None
    os.close(w)
    a, b = socket.socketpair()
    taken = take_socket((Descriptor(a.detach()),))
    assert taken is not None
    taken.close()
    b.close()


def test_the_asyncio_client_has_the_same_session(make_daemon, tmp_path):
    import asyncio
    from warmd.aio import AsyncClient
    d = make_daemon(FAST)

    async def main():
        async with AsyncClient(str(d.socket), autostart=False) as client:
            async with await client.session(name="aio") as session:
                await (await session.submit(hs.remember, "k", 5)).result()
                assert await (await session.submit(hs.recall, "k")).result() == 5
                assert await session.map(hs.add, [1, 2], [3, 4]) == [4, 6]
                marker = str(tmp_path / "started")
                running = await session.submit(hs.started_then_sleep, marker)
                queued = await session.submit(hs.add, 1, 1)
                await asyncio.to_thread(wait_for_path, marker)
                assert await queued.cancel() and await running.cancel()
                assert (await (await session.submit_call(hs.add, (2, 2), name="four")).result()) == 4
                held = session.worker_pid
            worker = next(w for w in (await client.status()).workers if w.pid == held)
            return session.id, worker

    session_id, worker = asyncio.run(main())
    with d.client() as client:
        assert until_state(client, session_id, ("succeeded",)).name == "aio"


def test_device_places_the_session_on_that_gpu(make_daemon):
    from helpers_fakegpu import fake_gpu_daemon, wait_warm
    d = fake_gpu_daemon(make_daemon, "[workers]\nspares = 0\n", devices=2)
    with d.client() as client:
        wait_warm(client, 2)
        with client.session(device=1) as session:
            assert session.device == 1
            assert session.submit(warmd.device).result() == 1
        with client.session(device=0) as session:
            assert session.submit(warmd.device).result() == 0
        with pytest.raises(RequestFailed, match="device"):
            client.session(device=7)


def test_a_session_waits_for_a_worker_when_none_is_idle(make_daemon, tmp_path):
    d = make_daemon(FAST)
    with d.client() as client:
        wait_for_workers(client, 1)
        marker = str(tmp_path / "started")
        busy = client.submit(hs.started_then_sleep, marker, 30)
        busy_pid = int(wait_for_path(marker))
        with client.session() as session:  # the extra worker the daemon warms for it
            assert session.worker_pid != busy_pid
            assert session.submit(hs.pid).result() == session.worker_pid
        busy.cancel()


def test_32_clients_with_a_session_each_lose_nothing(make_daemon):
    import threading
    clients, calls, at_once = 32, 1000, 8
    d = make_daemon(f"[workers]\ncount = 1\nspares = 0\nmax_extra = {at_once}\n")
    results: dict[int, list] = {}
    errors: list[BaseException] = []
    slots = threading.Semaphore(at_once)  # as many sessions as the daemon allows at once

    def one(n: int) -> None:
        try:
            with d.client() as client, slots:
                with client.session(name=f"client {n}") as session:
                    futures = [session.submit(hs.add, n, i) for i in range(calls)]
                    results[n] = [f.result(timeout=300) for f in futures]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert all(results[n] == [n + i for i in range(calls)] for n in range(clients))
    with d.client() as client:
        rows = client.jobs()
        sessions = [j for j in rows if j.kind == "session"]
        assert len(sessions) == clients and all(j.state == "succeeded" for j in sessions)
        assert all(j.raw["children"]["done"] == calls for j in sessions)
        assert not [w for w in client.status().workers if w.state == "held"]


def test_a_call_cancelled_before_the_daemon_heard_of_it_is_found_running(make_daemon, tmp_path):
    d = make_daemon(FAST)
    with d.client() as client, client.session() as session:
        for i in range(5):
            marker = str(tmp_path / f"started{i}")
            call = session.submit(hs.started_then_sleep, marker)
            wait_for_path(marker)  # running; the daemon hears of it only after capture.LATER
            assert call.cancel() and call.cancelled()
            row = until_state(client, call.job_id, ("cancelled",))
            assert row.group == session.id and row.worker_pid == session.worker_pid
        assert session.submit(hs.add, 1, 1).result() == 2


def test_a_daemon_killed_mid_call_loses_the_call_and_the_client_goes_on(make_daemon, tmp_path):
    d = make_daemon(FAST)
    with d.client(reconnect=False) as client:
        session = client.session()
        marker = str(tmp_path / "started")
        call = session.submit(hs.started_then_sleep, marker)
        wait_for_path(marker)
        os.kill(d.pid, signal.SIGKILL)  # its workers follow it: the session's channel closes
        with pytest.raises(JobLost):
            call.result(timeout=30)
        with pytest.raises(SessionClosed):
            session.submit(hs.add, 1, 1)
        session.close()
