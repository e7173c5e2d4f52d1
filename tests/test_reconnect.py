"""Clients that outlive their daemon: across a crash and a restart on the same socket,
across a dropped connection to a daemon that lives on (the job's stream resumes from the
last event seen, nothing twice, nothing missing), under systemd socket activation, from
both clients; and with reconnect off, or when no daemon comes back in time, a clear end."""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path
import signal
import socket
import time

import psutil
import pytest

import warmd
from warmd.aio import AsyncClient
from warmd.client import reconnect
from warmd.client.events import Output
from warmd.client.watch import Disconnected, Reconnected, Snapshot

from helpers_reconnect import HangUp, Watching, wait_for_output

DEADLINE = 60
ONE_WORKER = "[workers]\ncount = 1\nspares = 0\n"
SLEEPER = "import time\nprint('running', flush=True)\ntime.sleep(300)"


def test_a_client_carries_on_across_a_daemon_crash_and_restart(make_daemon):
    daemon = make_daemon(ONE_WORKER)
    with daemon.client() as client:
        watching = Watching(client)
        future = client.run_code(SLEEPER)
        wait_for_output(future, "running")
        crashed = daemon.pid
        os.kill(crashed, signal.SIGKILL)
        daemon.proc.wait(DEADLINE)
        gone = watching.until(Disconnected)[-1]
        assert gone.reconnecting and isinstance(gone.error, warmd.errors.DaemonUnavailable)
        daemon.start()  # a new daemon on the same socket, as systemd or autostart would
        back = watching.until(Snapshot)
        assert isinstance(back[-2], Reconnected) and back[-2].pid == daemon.pid != crashed
        assert back[-1].resync and back[-1].status.daemon["pid"] == daemon.pid
        # The followed job ended lost, as the new daemon's ledger says; the client goes on.
        with pytest.raises(warmd.JobLost, match="restarted"):
            future.result(timeout=DEADLINE)
        assert back[-1].jobs[future.job_id].state == "lost"
        assert client.submit(sum, [1, 2]).result(timeout=DEADLINE) == 3
        assert client.daemon_info["pid"] == daemon.pid


def test_a_dropped_connection_resumes_the_stream_from_the_last_event_seen(make_daemon, tmp_path):
    daemon = make_daemon(ONE_WORKER)
    gate = tmp_path / "gate"
    code = (f"import os, time\nfor i in range(20):\n    print(i, flush=True)\n"
            f"while not os.path.exists({str(gate)!r}): time.sleep(0.01)\n"
            f"for i in range(20, 40):\n    print(i, flush=True)\n")
    with daemon.client() as client:
        future = client.run_code(code)
        wait_for_output(future, "19")
        before = daemon.pid
        client._channel.sock.shutdown(socket.SHUT_RDWR)  # the connection drops; the daemon lives
        gate.touch()
        assert future.result(timeout=DEADLINE) is None
        lines = future.output().split()
        assert daemon.pid == before
    assert lines == [str(i) for i in range(40)]  # every line once, in order


async def until(events, kind) -> list:
    """The watch events up to and including the first ``kind``."""
    seen = []
    async for event in events:
        seen.append(event)
        if isinstance(event, kind):
            return seen
    raise AssertionError(f"the watch ended before a {kind.__name__}: {seen}")


def test_the_async_client_reconnects_the_same_way(make_daemon):
    daemon = make_daemon(ONE_WORKER)

    async def main():
        async with AsyncClient(daemon.socket, autostart=False) as client:
            events = client.watch()
            assert isinstance(await anext(events), Snapshot)
            job = await client.run_code(SLEEPER)
            async for event in job.events():
                if isinstance(event, Output) and "running" in event.text:
                    break
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.proc.wait(DEADLINE)
            seen = await until(events, Disconnected)
            daemon.start()
            seen += await until(events, Snapshot)
            with pytest.raises(warmd.JobLost):
                await job.result()
            return seen, await (await client.submit(sum, [2, 3])).result()
    seen, five = asyncio.run(asyncio.wait_for(main(), DEADLINE))
    assert seen[-3].reconnecting and isinstance(seen[-2], Reconnected) and seen[-1].resync
    assert five == 5


def test_a_connection_lost_before_the_welcome_does_not_end_the_reconnect(make_daemon):
    daemon = make_daemon(ONE_WORKER)

    async def main():
        async with AsyncClient(daemon.socket, autostart=False) as client:
            events = client.watch()
            assert isinstance(await anext(events), Snapshot)
            daemon.stop()
            assert (await until(events, Disconnected))[-1].reconnecting
            hangup = HangUp(daemon.socket, times=3)
            assert await asyncio.to_thread(hangup.done.wait, DEADLINE)
            hangup.close()
            daemon.start()
            back = await until(events, Snapshot)
            assert not any(isinstance(e, Disconnected) for e in back), back  # the reconnect went on
            return await (await client.submit(sum, [2, 3])).result()
    assert asyncio.run(asyncio.wait_for(main(), DEADLINE)) == 5


def test_without_reconnect_or_a_daemon_coming_back_the_end_is_clear(make_daemon):
    daemon = make_daemon(ONE_WORKER)
    client = daemon.client(reconnect=False)
    watching = Watching(client)
    future = client.run_code(SLEEPER)
    wait_for_output(future, "running")
    daemon.stop()
    end = watching.until(Disconnected)[-1]
    assert not end.reconnecting and watching.next() is None  # the iterator ended
    client.close()

    daemon.start()
    client = daemon.client(reconnect=0.5)
    watching = Watching(client)
    future = client.run_code(SLEEPER)
    wait_for_output(future, "running")
    os.kill(daemon.pid, signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(warmd.JobLost):
        future.result(timeout=DEADLINE)  # nobody restarted it within the half second
    seen = watching.until(Disconnected)
    final = watching.until(Disconnected)[-1] if seen[-1].reconnecting else seen[-1]
    assert not final.reconnecting and time.monotonic() - started < 30
    with pytest.raises(warmd.errors.DaemonUnavailable):
        client.submit(sum, [1])
    client.close()


def test_with_autostart_a_client_learns_at_once_that_its_job_is_lost():
    """Reconnect and autostart on (the defaults): when the daemon is killed under a job, the
    client starts a daemon at once, whose ledger says the job is lost; it does not wait out
    the reconnect window as a client without autostart must (the test above)."""
    root = Path(tempfile.mkdtemp(prefix="wa-", dir="/tmp"))
    config = root / "warmd.toml"
    config.write_text(ONE_WORKER)
    sock = root / "run" / "warmd.sock"
    client = warmd.Client(sock, autostart=True, daemon_args=["--config", str(config)])
    try:
        future = client.run_code(SLEEPER)
        wait_for_output(future, "running")
        first = client.daemon_info["pid"]
        os.kill(first, signal.SIGKILL)
        with pytest.raises(warmd.JobLost, match="restarted"):
            future.result(timeout=reconnect.RECONNECT_FOR / 2)  # well inside the window
        assert client.daemon_info["pid"] != first
        assert client.daemon_info["started_by"] == "autostart"
    finally:
        client.close()  # first: a client that may autostart would start another daemon
        pid = client.daemon_info["pid"]
        with warmd.Client(sock, autostart=False, reconnect=False) as stopper:
            stopper.shutdown_daemon()
        try:
            psutil.Process(pid).wait(DEADLINE)
        except psutil.NoSuchProcess:
            pass
        shutil.rmtree(root, ignore_errors=True)
