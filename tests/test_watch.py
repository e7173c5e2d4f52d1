"""The watch stream, against a real daemon: events in the order things happen, a snapshot
that agrees with jobs() and status(), group roll-ups, rows dropped with their jobs, both
clients, and a watcher that stops reading: it gets a fresh snapshot (resync) once it reads
again, while what the daemon queued for it stayed bounded."""
from __future__ import annotations

import asyncio
import os
import queue
import socket
import threading

import psutil

import warmd
from warmd.aio import AsyncClient
from warmd.client.watch import (JobChanged, JobProgress, Snapshot, StatusChanged,
                                WorkerChanged)
from warmd.daemon.connections import HIGH_WATER
from warmd.protocol import FrameReader, encode, hello

DEADLINE = 60
ONE_WORKER = "[workers]\ncount = 1\nspares = 0\n"


class Watching:
    """A client's watch() iterated on a thread, its events in a queue the test reads."""

    def __init__(self, client: warmd.Client) -> None:
        self.events: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, args=(client,), daemon=True)
        self.thread.start()
        self.snapshot = self.next()
        assert isinstance(self.snapshot, Snapshot) and not self.snapshot.resync

    def _run(self, client: warmd.Client) -> None:
        for event in client.watch():
            self.events.put(event)

    def next(self):
        return self.events.get(timeout=DEADLINE)

    def until(self, done) -> list:
        """Events up to and including the first for which ``done(event)`` holds."""
        seen = []
        while True:
            event = self.next()
            seen.append(event)
            if done(event):
                return seen


def ended(job_id):
    return lambda e: isinstance(e, JobChanged) and e.job.id == job_id and e.change == "ended"


def reporting(n):
    import time
    import warmd
    for i in range(1, n + 1):
        warmd.progress(i, n, f"step {i}")
        time.sleep(0.03)
    return n


def test_events_come_in_the_order_things_happen(make_daemon):
    daemon = make_daemon(ONE_WORKER)
    with daemon.client() as client:
        client.submit(sum, [1]).result(timeout=DEADLINE)  # the worker is warm
        watching = Watching(client)
        job = client.submit(reporting, 10)
        assert job.result(timeout=DEADLINE) == 10
        seen = watching.until(ended(job.job_id))
    mine = [e for e in seen if isinstance(e, (JobChanged, JobProgress)) and e.job.id == job.job_id]
    changes = [c for e in mine for c in (e.changes if isinstance(e, JobChanged) else ["progress"])]
    assert changes[:2] == ["submitted", "started"] and changes[-1] == "ended", changes
    assert set(changes[2:-1]) <= {"progress"} and "progress" in changes, changes
    started, end = mine[0].job, mine[-1].job  # submitted and started in one interval: one row
    assert started.state == "running" and started.worker_pid
    assert (end.state, end.exit_status, end.finished is not None) == ("succeeded", 0, True)
    assert end.seconds >= 0.3 and end.peak_rss > 0  # ten reports 30 ms apart
    fractions = [e.job.fraction for e in mine if isinstance(e, JobProgress)]
    assert fractions == sorted(fractions) and 0 < fractions[-1] <= 1
    # The worker went busy with this job after it was submitted and before it ended.
    busy = next(i for i, e in enumerate(seen) if isinstance(e, WorkerChanged) and e.worker.job == job.job_id)
    assert seen[busy].worker.state == "busy" and seen[busy].worker.pid == started.worker_pid
    assert seen.index(mine[0]) < busy < seen.index(mine[-1])
    assert any(isinstance(e, StatusChanged) for e in seen)


def hold(mib):
    block = bytearray(mib << 20)
    block[::4096] = b"x" * len(block[::4096])  # touched: resident
    return len(block)


def test_an_ended_job_says_its_own_peak_memory(make_daemon):
    daemon = make_daemon(ONE_WORKER)  # both jobs on one worker: the second must not inherit
    with daemon.client() as client:
        big, small = client.submit(hold, 200), None
        big.result(timeout=DEADLINE)
        small = client.submit(hold, 1)
        small.result(timeout=DEADLINE)
        rows = {j.id: j for j in client.jobs()}
    assert rows[big.job_id].peak_rss >= 200 << 20
    assert rows[small.job_id].peak_rss < 150 << 20, rows[small.job_id].peak_rss


def test_the_snapshot_agrees_with_jobs_and_status(make_daemon, tmp_path):
    daemon = make_daemon(ONE_WORKER)  # so that nothing changes between the snapshot and the lists
    gate = tmp_path / "gate"
    with daemon.client() as client:
        for i in range(3):
            client.submit(sum, [i]).result(timeout=DEADLINE)
        held = client.run_code(f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.01)")
        watching = Watching(client)
        snapshot = watching.snapshot
        listed = {j.id: j.state for j in client.jobs()}
        status = client.status()
        gate.touch()
        held.result(timeout=DEADLINE)
    assert {i: j.state for i, j in snapshot.jobs.items()} == listed
    assert listed[held.job_id] == "running"
    assert snapshot.status.summary == status.summary
    assert set(snapshot.workers) == {w.pid for w in status.workers if w.live}


def slow_abs(x):
    import time
    time.sleep(0.25)
    return abs(x)


def test_a_group_rolls_up_and_forgotten_jobs_are_dropped(daemon):
    with daemon.client() as client:
        client.submit(sum, [1]).result(timeout=DEADLINE)
        watching = Watching(client)
        with client.group("plate") as group:
            results = group.map(slow_abs, [-1, -2, -3])  # slow enough for roll-ups between ends
        assert list(results) == [1, 2, 3]
        seen = watching.until(ended(group.job_id))
        rollups = [e.job.children for e in seen if isinstance(e, JobProgress) and e.job.id == group.job_id]
        assert rollups and rollups[-1]["total"] == 3, rollups
        end = seen[-1].job
        assert end.kind == "group" and end.children == {"done": 3, "total": 3}
        plain = client.submit(abs, -4)
        assert plain.result(timeout=DEADLINE) == 4
        assert client.forget([plain.job_id])["jobs"] == [plain.job_id]
        dropped = watching.until(lambda e: isinstance(e, JobChanged) and e.change == "dropped")
        assert dropped[-1].job.id == plain.job_id


def test_the_async_client_watches_the_same_way(daemon):
    async def main():
        async with AsyncClient(daemon.socket, autostart=False) as client:
            events = client.watch()
            first = await anext(events)
            job = await client.submit(sum, [1, 2])
            seen = []
            async for event in events:
                seen.append(event)
                if ended(job.job_id)(event):
                    break
            await events.aclose()
            return first, job, seen, await client.wait(job.job_id), await client.logs(job.job_id)
    first, job, seen, end, logs = asyncio.run(asyncio.wait_for(main(), DEADLINE))
    assert isinstance(first, Snapshot)
    assert [c for e in seen if isinstance(e, JobChanged) and e.job.id == job.job_id
            for c in e.changes] == ["submitted", "started", "ended"]
    assert end.state == "succeeded" and isinstance(logs, list)


def test_a_watcher_that_stops_reading_gets_a_resync_and_costs_the_daemon_a_bounded_buffer(daemon):
    """A raw watcher with a small receive buffer reads nothing while jobs with 4 KB names
    make about 10 MB of events; then it reads everything."""
    stalled = socket.socket(socket.AF_UNIX)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(str(daemon.socket))
    stalled.sendall(encode(hello("test", os.getpid())) + encode({"t": "watch", "req": 1}))
    rss = psutil.Process(daemon.pid).memory_info().rss
    jobs = 800
    with daemon.client() as client:
        futures = [client.run_code("pass", name=f"{i:04d}" + "x" * 4000) for i in range(jobs)]
        for future in futures:
            future.result(timeout=DEADLINE)
        grown = psutil.Process(daemon.pid).memory_info().rss - rss
        listed = {j.id: j.state for j in client.jobs()}
        status = client.status()
        # Read all that was queued for the stalled watcher, up to its resync snapshot.
        stalled.settimeout(DEADLINE)
        reader, before, resync = FrameReader(), 0, None
        while resync is None:
            data = stalled.recv(1 << 20)
            assert data, "the daemon closed the stalled watcher's connection"
            reader.receive_data(data)
            for frame in reader.frames():
                if frame.type == "watch" and frame.get("resync"):
                    resync = frame
                    break
                before += len(encode(frame.header, frame.payload))
    stalled.close()
    # What the daemon held for it: its write buffer, the kernel's socket buffers and a frame,
    # not the ~10 MB of events the jobs made.
    assert before < HIGH_WATER + (2 << 20), before
    assert grown < 64 << 20, f"the daemon grew by {grown} bytes"
    from warmd.protocol import load_json
    rows = {row["id"]: row["state"] for row in load_json(resync.payload)}
    assert rows == listed and resync.get("status")["summary"] == status.summary


def test_a_thousand_jobs_are_listed_in_one_reply(make_daemon):
    daemon = make_daemon("[daemon]\nresult_max_jobs = 2000\n")
    with daemon.client() as client:
        futures = [client.submit(abs, -i) for i in range(1500)]
        for future in futures:
            future.result(timeout=DEADLINE)
        listed = client.jobs()
    assert len(listed) == 1500 and {j.id for j in listed} == {f.job_id for f in futures}


def test_unwatch_stops_the_stream(daemon):
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(daemon.socket))
    sock.settimeout(DEADLINE)
    sock.sendall(encode(hello("test", os.getpid())) + encode({"t": "watch", "req": 1}) +
                 encode({"t": "unwatch", "req": 2}))
    reader, replies = FrameReader(), {}
    while 2 not in replies:
        reader.receive_data(sock.recv(65536))
        replies.update({f.get("req"): f for f in reader.frames() if f.get("req")})
    assert replies[1].get("event") == "snapshot" and replies[2].get("watching") is True
    with daemon.client() as client:
        client.submit(sum, [1]).result(timeout=DEADLINE)
    sock.sendall(encode({"t": "ping", "req": 3}))
    frames = []
    while not any(f.type == "pong" for f in frames):
        reader.receive_data(sock.recv(65536))
        frames += list(reader.frames())
    assert not [f for f in frames if f.type == "watch"], frames
    sock.close()

