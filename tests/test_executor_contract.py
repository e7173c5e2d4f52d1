"""warmd.Client against the contract of concurrent.futures.Executor and Future: shutdown
with and without wait or cancel_futures, submit after shutdown, running(), map() letting
results go, unpicklable results, cancelled futures, timeouts, callbacks, wait and
as_completed, and a program that exits with jobs pending. What a process-based executor
cannot honour is written in docs/api.md ("The Executor contract")."""
from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import subprocess
import sys
import threading
import weakref

import pytest

import warmd
from warmd.aio import AsyncClient
from warmd.client.events import Output

DEADLINE = 60
ONE_WORKER = "[workers]\ncount = 1\nspares = 0\n"


class Box:
    """A result that can be watched (weakref) once the client has let go of it."""


def make_box(i: int) -> Box:
    box = Box()
    box.i = i
    return box


class ExitsWhenPickled:
    def __reduce__(self):
        raise SystemExit(3)


def gated(path: str, value: int = 0) -> int:
    import os
    import time
    print("started", flush=True)
    while not os.path.exists(path):
        time.sleep(0.01)
    return value


def stubborn() -> None:
    """Says when a cancel's SIGINT or SIGTERM comes, and holds on until SIGKILL."""
    import signal
    import time
    signal.signal(signal.SIGINT, lambda *_: print("interrupted", flush=True))
    signal.signal(signal.SIGTERM, lambda *_: print("interrupted", flush=True))
    print("started", flush=True)
    time.sleep(300)


def until_output(events, text: str) -> None:
    for event in events:
        if isinstance(event, Output) and text in event.text:
            return
    raise AssertionError(f"the job ended without printing {text!r}")


def until_started(future) -> None:
    for event in future.events():
        if isinstance(event, Output) and "started" in event.text:
            return
    raise AssertionError("the job ended before it started")


def test_submit_after_shutdown_is_a_runtime_error_not_a_crash(daemon):
    client = daemon.client()
    assert client.submit(sum, [1, 2]).result(DEADLINE) == 3
    client.shutdown()
    for submit in (lambda: client.submit(sum, [1]), lambda: client.map(abs, [1]),
                   lambda: client.group("late")):
        with pytest.raises(RuntimeError, match="shut down") as raised:
            submit()
        assert isinstance(raised.value, warmd.ClientClosed)

    async def late():
        async with AsyncClient(daemon.socket, autostart=False) as aclient:
            pass
        await aclient.submit(sum, [1])
    with pytest.raises(warmd.ClientClosed):
        asyncio.run(asyncio.wait_for(late(), DEADLINE))


def test_running_and_shutdown_cancel_futures_spare_the_running_job(make_daemon, tmp_path):
    daemon = make_daemon(ONE_WORKER)
    gate = tmp_path / "gate"
    client = daemon.client()
    running = client.submit(gated, str(gate), 7)
    queued = [client.submit(sum, [i]) for i in range(3)]
    until_started(running)
    assert running.running() and not any(f.running() for f in queued)
    stopper = threading.Thread(target=client.shutdown, kwargs={"cancel_futures": True})
    stopper.start()
    for future in queued:
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(DEADLINE)
        assert future.cancelled()
    gate.touch()
    stopper.join(DEADLINE)
    assert not stopper.is_alive() and running.result() == 7 and not running.cancelled()


def test_shutdown_without_wait_returns_at_once_and_the_pending_job_still_ends(make_daemon, tmp_path):
    daemon = make_daemon(ONE_WORKER)
    gate = tmp_path / "gate"
    client = daemon.client()
    future = client.submit(gated, str(gate), 5)
    until_started(future)
    client.shutdown(wait=False)
    assert not future.done()
    with pytest.raises(warmd.ClientClosed):
        client.submit(sum, [1])
    gate.touch()
    assert future.result(DEADLINE) == 5


def test_map_lets_each_result_go_once_yielded(daemon):
    with daemon.client() as client:
        results = client.map(make_box, range(3))
        first = next(results)
        watched = weakref.ref(first)
        assert first.i == 0
        del first
        gc.collect()
        assert watched() is None, gc.get_referrers(watched())
        assert [box.i for box in results] == [1, 2]


def test_an_unpicklable_result_raises_its_own_error_and_the_worker_lives(make_daemon):
    daemon = make_daemon(ONE_WORKER)
    with daemon.client() as client:
        with pytest.raises(TypeError, match="pickle") as raised:
            client.submit(threading.Lock).result(DEADLINE)
        assert any("pickling the job's result" in note for note in raised.value.__notes__)
        worker = client.submit(lambda: __import__("os").getpid()).result(DEADLINE)
        with pytest.raises(Exception, match="raised SystemExit") as raised:
            client.submit(ExitsWhenPickled).result(DEADLINE)
        assert not isinstance(raised.value, warmd.RemoteError)
        assert client.submit(lambda: __import__("os").getpid()).result(DEADLINE) == worker


def test_a_cancelled_job_says_so_alike_in_both_clients(make_daemon, tmp_path):
    daemon = make_daemon(ONE_WORKER)
    gate = tmp_path / "gate"
    with daemon.client() as client:
        running = client.submit(gated, str(gate))
        queued = client.submit(sum, [1])
        until_started(running)
        assert queued.cancel() and running.cancel()
        for future in (queued, running):
            assert future.cancelled() and future.done()
            with pytest.raises(warmd.JobCancelled, match="cancel") as raised:
                future.result()
            assert isinstance(raised.value, concurrent.futures.CancelledError)
            with pytest.raises(warmd.JobCancelled):
                future.exception()

    async def cancel_async():
        async with AsyncClient(daemon.socket, autostart=False) as aclient:
            job = await aclient.submit(gated, str(gate) + ".never")
            await job.cancel()
            await job.result()
    with pytest.raises(warmd.JobCancelled, match="cancel"):
        asyncio.run(asyncio.wait_for(cancel_async(), DEADLINE))


def test_timeouts_callbacks_wait_and_as_completed(make_daemon, tmp_path):
    daemon = make_daemon("[workers]\ncount = 2\nspares = 0\n")
    gate = tmp_path / "gate"
    with daemon.client() as client:
        slow = client.submit(gated, str(gate), 1)
        fast = client.submit(sum, [2, 3])
        seen: list = []
        fast.add_done_callback(seen.append)
        done, pending = concurrent.futures.wait([slow, fast], DEADLINE,
                                                return_when=concurrent.futures.FIRST_COMPLETED)
        assert done == {fast} and pending == {slow} and seen == [fast]
        with pytest.raises(TimeoutError):
            slow.result(timeout=0.05)
        with pytest.raises(TimeoutError):
            slow.exception(timeout=0.05)
        gate.touch()
        assert [f.result() for f in concurrent.futures.as_completed([slow, fast], DEADLINE)] \
            in ([5, 1], [1, 5])
        late: list = []
        slow.add_done_callback(late.append)  # on a done future: called at once
        assert late == [slow] and slow.exception() is None


def test_a_program_that_exits_with_jobs_pending_leaves_them_to_the_daemon(daemon, tmp_path):
    """The interpreter exits without waiting (the reader thread is a daemon thread); the
    job is the daemon's and runs on, as ``warmctl jobs`` shows."""
    gate = tmp_path / "gate"
    script = tmp_path / "leave.py"
    job = f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.01)\n"
    script.write_text(
        "import warmd\n"
        f"client = warmd.Client({str(daemon.socket)!r}, autostart=False)\n"
        f"future = client.run_code({job!r}, name='left behind')\n"
        "print(future.job_id, flush=True)\n")
    left = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=DEADLINE)
    assert left.returncode == 0, left.stderr
    job_id = left.stdout.strip()
    with daemon.client() as client:
        assert {j.id: j.state for j in client.jobs()}[job_id] in ("queued", "running")
        gate.touch()
        assert client.wait(job_id).state == "succeeded"


def test_closing_a_client_while_another_thread_waits_in_a_cancel_says_so(make_daemon):
    daemon = make_daemon(ONE_WORKER)
    client = daemon.client()
    group = client.group("held")
    job = group.submit(stubborn)
    with daemon.client() as watcher:
        events = watcher.attach(job.job_id).events()
        until_output(events, "started")
        caught: list[BaseException] = []

        def cancel() -> None:
            try:
                group.cancel()
            except BaseException as exc:
                caught.append(exc)
        canceller = threading.Thread(target=cancel)
        canceller.start()
        until_output(events, "interrupted")  # the daemon is cancelling: its answer is to come
        client.close()
        canceller.join(DEADLINE)
    assert len(caught) == 1 and isinstance(caught[0], warmd.ClientClosed), caught
    assert "closed" in str(caught[0]) and "went away" not in str(caught[0])
