"""Every client recovers in every one of 30 daemon restarts: killed (SIGKILL) or
stopped cleanly (SIGTERM, with jobs submitted while it stops), the new daemon coming
after a random delay of 0 to 5 s (seeded), sometimes after something on the socket
hung up on the clients' greetings (a welcome in flight when the daemon went).

Followed each cycle: a ``warmd.Client`` and its watch stream, a ``warmd.aio.AsyncClient``
and its watch stream (on an event loop thread), and ``warmctl logs -f`` of a running
job. How soon a client learns a job is lost, in each mode: tests/test_reconnect.py."""
from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

import warmd
from warmd.aio import AsyncClient
from warmd.client.events import Output
from warmd.client.watch import Disconnected, Reconnected, Snapshot

from helpers_reconnect import DEADLINE, Events, HangUp, Watching

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CYCLES = 30
CONFIG = "[workers]\ncount = 1\nspares = 0\n[cancel]\ninterrupt_grace = 1\nterminate_grace = 1\n"
# A clean stop ends it with SIGTERM, then SIGKILL after the terminate grace: it says so
# and holds on meanwhile, while the daemon is stopping, and the test submits then.
STUBBORN = ("import signal, time\n"
            "def hold(*_):\n    print('interrupted', flush=True)\n"
            "signal.signal(signal.SIGTERM, hold)\nsignal.signal(signal.SIGINT, hold)\n"
            "print('running', flush=True)\ntime.sleep(300)\n")


class AsyncSide(Events):
    """An AsyncClient and its watch stream on an event loop of their own thread."""

    def __init__(self, socket: str) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.client = asyncio.run_coroutine_threadsafe(self._open(socket), self.loop).result(DEADLINE)
        assert isinstance(self.next(), Snapshot)

    async def _open(self, socket: str) -> AsyncClient:
        client = await AsyncClient(socket, autostart=False).connect()
        self.loop.create_task(self._watch(client))
        return client

    async def _watch(self, client: AsyncClient) -> None:
        async for event in client.watch():
            self.events.put(event)
        self.events.put(None)

    def submit(self, fn, *args):
        """A concurrent future for ``fn(*args)``'s result through the AsyncClient."""
        async def go():
            return await (await self.client.submit(fn, *args)).result()
        return asyncio.run_coroutine_threadsafe(go(), self.loop)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.client.close(), self.loop).result(DEADLINE)
        self.loop.call_soon_threadsafe(self.loop.stop)


def lines_until(events, text: str) -> None:
    for event in events:
        if isinstance(event, Output) and text in event.text:
            return
    raise AssertionError(f"the job ended without printing {text!r}")


def follow_logs(daemon, job_id: str) -> subprocess.Popen:
    """``warmctl logs -f`` of the job, once it has printed the job's first line."""
    proc = subprocess.Popen([sys.executable, "-m", "warmd.ctl", "--socket", str(daemon.socket),
                             "--no-autostart", "logs", "-f", job_id], env=daemon.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "running" in proc.stdout.readline()
    return proc


def test_every_client_recovers_in_every_one_of_30_restarts(make_daemon):
    daemon = make_daemon(CONFIG)
    rng = random.Random(20261207)  # a failing cycle replays
    sync = daemon.client()
    watching = Watching(sync)
    aside = AsyncSide(str(daemon.socket))
    try:
        for cycle in range(CYCLES):
            how = ("kill", "stop", "hang up")[cycle % 3]
            job = sync.run_code(STUBBORN, name=f"cycle {cycle}")
            events = job.events()
            lines_until(events, "running")
            logs = follow_logs(daemon, job.job_id)
            late = []
            if how == "stop":
                daemon.proc.send_signal(signal.SIGTERM)
                lines_until(events, "interrupted")  # the daemon is stopping now
                late = [(sync.submit(sum, [cycle, 1]), cycle + 1),
                        (aside.submit(sum, [cycle, 2]), cycle + 2)]
                daemon.proc.wait(DEADLINE)
            else:
                os.kill(daemon.pid, signal.SIGKILL)
                daemon.proc.wait(DEADLINE)
            daemon.stop()
            for side in (watching, aside):
                assert side.until(Disconnected)[-1].reconnecting, (cycle, how)
            if how == "hang up":
                daemon.socket.unlink()  # the killed daemon's
                hangup = HangUp(str(daemon.socket), times=2)
                assert hangup.done.wait(DEADLINE), "no client tried to connect"
                hangup.close()
            time.sleep(rng.uniform(0, 5))  # the scenario: the new daemon comes this much later
            daemon.start()
            for side in (watching, aside):
                back = side.until(Snapshot)
                assert isinstance(back[-2], Reconnected) and back[-2].pid == daemon.pid, (cycle, back)
                assert not any(isinstance(e, Disconnected) for e in back), (cycle, how, back)
            with pytest.raises((warmd.JobLost, warmd.JobCancelled)):
                job.result(DEADLINE)
            # logs -f ends with the job: 0 when it ended (cancelled by the stop), 125 when lost.
            code, said = logs.wait(DEADLINE), logs.stderr.read()
            assert (code, "cancelled" if how == "stop" else "lost") in (
                (0, "cancelled"), (125, "lost")) and ("cancelled" in said or "lost" in said), \
                (cycle, how, code, said)
            for future, value in late:  # refused by the stopping daemon, run by the next
                assert future.result(DEADLINE) == value, (cycle, how)
            assert sync.submit(sum, [cycle, 3]).result(DEADLINE) == cycle + 3
            assert aside.submit(sum, [cycle, 4]).result(DEADLINE) == cycle + 4
    finally:
        aside.close()
        sync.close()
