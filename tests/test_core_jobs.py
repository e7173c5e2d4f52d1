"""Submitting calls, scripts and code; results, errors, output, progress; warm state."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

import warmd
from warmd.client.events import Log, Output, Progress, StateChange

import helpers_jobs


def test_call_returns_result(daemon):
    with daemon.client() as client:
        assert client.submit(helpers_jobs.add, 2, 3).result(timeout=30) == 5
        assert list(client.map(helpers_jobs.add, [1, 2], [10, 20])) == [11, 22]


def test_events_arrive_in_order_with_child_output(daemon):
    with daemon.client() as client:
        future = client.submit(helpers_jobs.chatty, 3)
        assert future.result(timeout=30) == 3
        events = [e for e in future.events() if not isinstance(e, StateChange)]
    stdout = [e.text for e in events if isinstance(e, Output) and e.stream == "stdout"]
    joined = "".join(stdout)
    assert "out 0\nout 1\nout 2\n" in joined
    assert "from a child process\n" in joined and "raw fd write\n" in joined
    assert any(isinstance(e, Output) and e.stream == "stderr" and "to stderr" in e.text for e in events)
    # progress(i) comes after "out i" and before "out i+1": one ordered stream
    kinds = [(type(e).__name__, e.text if isinstance(e, Output) else getattr(e, "done", None))
             for e in events if isinstance(e, (Output, Progress)) and getattr(e, "stream", "stdout") == "stdout"]
    order = [k for k in kinds if k[0] == "Progress" or k[1].startswith("out")]
    flat = []
    for name, val in order:
        flat.extend([("Output", line) for line in val.splitlines()] if name == "Output" else [(name, val)])
    assert flat[:6] == [("Output", "out 0"), ("Progress", 1), ("Output", "out 1"), ("Progress", 2),
                        ("Output", "out 2"), ("Progress", 3)]
    logs = [e for e in events if isinstance(e, Log)]
    assert logs and logs[0].name == "pipeline" and logs[0].message == "a log record"


def test_exception_is_reraised_with_remote_traceback(daemon):
    with daemon.client() as client:
        future = client.submit(helpers_jobs.fail, "bad well")
        with pytest.raises(helpers_jobs.PipelineError, match="bad well") as info:
            future.result(timeout=30)
    assert "raise PipelineError(message)" in str(info.value.__cause__)


def test_unpicklable_exception_becomes_remote_error(daemon):
    code = "class Local(Exception):\n    def __reduce__(self): raise TypeError('no')\nraise Local('odd')"
    with daemon.client() as client:
        future = client.run_code(code)
        with pytest.raises(warmd.RemoteError) as info:
            future.result(timeout=30)
    assert info.value.type_name == "Local" and info.value.message == "odd"
    assert "raise Local('odd')" in info.value.traceback


def test_sys_exit_status(daemon):
    with daemon.client() as client:
        with pytest.raises(warmd.JobExit) as info:
            client.submit(helpers_jobs.exit_with, 7).result(timeout=30)
        assert info.value.exit_status == 7
        assert client.submit(helpers_jobs.exit_with, 0).result(timeout=30) is None


def test_script_and_code_through_warmctl(daemon, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        import sys, subprocess, warmd
        print("args", sys.argv[1:])
        warmd.progress(1, 2)
        subprocess.run([sys.executable, "-c", "import sys; print('child err', file=sys.stderr)"])
        sys.exit(int(sys.argv[1]))
    """))
    r = daemon.warmctl("run", str(script), "4", "x")
    assert r.returncode == 4, r.stderr
    assert "args ['4', 'x']" in r.stdout
    assert "child err" in r.stderr
    r = daemon.warmctl("exec", "-c", "print('hi'); raise KeyError('k')")
    assert r.returncode == 1
    assert r.stdout == "hi\n"
    assert "KeyError: 'k'" in r.stderr and "Traceback" in r.stderr


def test_async_client(daemon):
    import asyncio
    from warmd.aio import AsyncClient

    async def go():
        async with AsyncClient(daemon.socket, autostart=False) as client:
            job = await client.submit(helpers_jobs.chatty, 2)
            events = [e async for e in job.events()]
            value = await job.result()
            bad = await client.submit(helpers_jobs.fail, "async")
            with pytest.raises(helpers_jobs.PipelineError):
                await bad.result()
            code = await client.run_code("print('from code')")
            await code.result()
            return value, events, code
    value, events, code = asyncio.run(go())
    assert value == 2
    assert [e.done for e in events if isinstance(e, Progress)] == [1, 2]
    assert "from code" in "".join(e.text for e in code._events if isinstance(e, Output))


def test_warm_state_persists_in_worker(make_daemon):
    d = make_daemon('[warmup]\nhooks = ["helpers_jobs:warm_hook"]\n[workers]\nspares = 0\n')
    # the hook module must be importable by the worker: it is in tests/, on PYTHONPATH
    with d.client() as client:
        futures = [client.submit(helpers_jobs.read_warm) for _ in range(3)]
        results = [f.result(timeout=30) for f in futures]
    pids = {r[1] for r in results}
    assert len(pids) == 1
    assert {r[0] for r in results} == {f"warmed-in-{pids.pop()}"}
    assert len({f.finished.token for f in futures}) == 1


def test_warm_ups_take_turns_within_warmup_concurrency(make_daemon):
    """Three workers, one warm-up at a time: each worker starts once the one before it is
    warm (its process starts at least that warm-up's half second after the last)."""
    import psutil
    d = make_daemon('[warmup]\nhooks = ["helpers_jobs:slow_warm_hook"]\n'
                    '[workers]\ncount = 3\nspares = 0\nwarmup_concurrency = 1\n')
    with d.client() as client:
        list(client.map(helpers_jobs.add, range(6), range(6)))  # runs once a worker is warm
        for _ in client.watch():
            workers = [w for w in client.status().workers if w.live]
            if len(workers) == 3 and all(w.state == "idle" for w in workers):
                break
    starts = sorted(psutil.Process(w.pid).create_time() for w in workers)
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:])]
    assert all(gap >= 0.45 for gap in gaps), gaps


def test_editing_a_user_module_changes_the_next_result(daemon, tmp_path):
    mod = tmp_path / "userstep.py"
    runner = tmp_path / "runner.py"
    runner.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import warmd, userstep
        with warmd.Client({str(daemon.socket)!r}, autostart=False) as c:
            print(c.submit(userstep.value).result(timeout=30))
    """))
    outputs = []
    for version in (1, 2):
        mod.write_text(f"def value():\n    return {version}\n")
        r = subprocess.run([sys.executable, str(runner)], capture_output=True, text=True,
                           env=daemon.env, timeout=60)
        assert r.returncode == 0, r.stderr
        outputs.append(r.stdout.strip())
    assert outputs == ["1", "2"]


def test_two_clients_with_different_versions_of_one_module_share_a_worker(make_daemon, tmp_path):
    # Each connection sends a module's source once; the one worker must still run each
    # client's own version, so the daemon sends it again whenever the worker holds the other.
    d = make_daemon("[workers]\ncount = 1\nspares = 0\n")
    runner = tmp_path / "runner.py"
    runner.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, sys.argv[1])
        import warmd, userstep
        with warmd.Client({str(d.socket)!r}, autostart=False) as c:
            for line in sys.stdin:
                print(c.submit(userstep.which).result(timeout=30), flush=True)
    """))
    clients = {}
    for version in ("a", "b"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "userstep.py").write_text(f"def which():\n    return {version!r}\n")
        clients[version] = subprocess.Popen([sys.executable, str(runner), str(tmp_path / version)],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                            env=d.env)
    try:
        answers = []
        for version in ("a", "b", "a", "b", "b", "a"):
            clients[version].stdin.write("\n")
            clients[version].stdin.flush()
            answers.append(clients[version].stdout.readline().strip())
        assert answers == ["a", "b", "a", "b", "b", "a"]
    finally:
        for proc in clients.values():
            proc.stdin.close()
            proc.wait(timeout=30)
    with d.client() as client:
        assert len(client.status().workers) == 1


def test_script_imports_fresh_sibling_module(daemon, tmp_path):
    (tmp_path / "main.py").write_text("import helper\nprint(helper.VALUE)\n")
    for version in ("a", "b"):
        (tmp_path / "helper.py").write_text(f"VALUE = {version!r}\n")
        r = daemon.warmctl("run", str(tmp_path / "main.py"))
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == version


def test_sixteen_clients_at_once(daemon):
    def one(i):
        with daemon.client() as client:
            return client.submit(helpers_jobs.add, i, 1000).result(timeout=60)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))
    assert results == [i + 1000 for i in range(16)]


def test_sixteen_processes_at_once(daemon):
    procs = [subprocess.Popen([sys.executable, "-m", "warmd.ctl", "--socket", str(daemon.socket),
                               "--no-autostart", "exec", "-c", f"print({i} * 3)"],
                              env=daemon.env, stdout=subprocess.PIPE, text=True) for i in range(16)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert outs == [str(i * 3) for i in range(16)]
    assert all(p.returncode == 0 for p in procs)


def test_a_job_cannot_spoil_the_worker_for_the_next(make_daemon):
    d = make_daemon("[cancel]\ninterrupt_grace = 5\n", "--spares", "0")
    spoil = ("import os, signal, sys, io\n"
             "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
             "os.environ['SPOILED'] = '1'\n"
             "sys.stdout = io.StringIO()\n"
             "os.close(1)\n")
    with d.client() as client:
        client.run_code(spoil).result(timeout=30)
        after = client.run_code("import os, time\nprint('env', os.environ.get('SPOILED'))\n"
                                "print('ready', flush=True)\ntime.sleep(60)")
        text = ""
        for event in after.events():
            text += getattr(event, "text", "")
            if "ready\n" in text:
                break
        assert "env None" in text          # environment restored, fd 1 and sys.stdout work again
        assert after.cancel() is True      # SIGINT interrupts again: the handler was restored
        assert after.finished.worker_pid == client.status().workers[0].pid  # stayed warm


def test_a_warm_up_that_hangs_fails_loudly(make_daemon):
    d = make_daemon('[workers]\ncount = 1\nspares = 0\nwarmup_timeout = 2\n'
                    '[warmup]\nhooks = ["helpers_jobs:hang"]\n')
    with d.client() as client:
        future = client.submit(helpers_jobs.add, 1, 2)  # waits for the one worker to warm up
        with pytest.raises(warmd.RemoteError) as failed:
            future.result(timeout=60)
        events = list(future.events())
        status = client.status()
    # The waiting client heard which step the warm-up was on, then why it failed.
    waits = [e for e in events if isinstance(e, warmd.Warming)]
    assert waits and waits[-1].step == "hook helpers_jobs:hang"
    assert future.finished.error["type"] == "WarmupError"
    assert "did not finish within 2 s" in str(failed.value) + future.finished.error["message"]
    assert "workers.warmup_timeout" in future.finished.error["message"]
    # The daemon backs off instead of starting worker after worker, and says why.
    assert "did not finish within 2 s (at hook helpers_jobs:hang)" in status.warmup_error
    assert status.warmup_retry_in is not None
    assert "retrying in 1 s" in d.log_text()
    run = d.warmctl("exec", "-c", "print('never')")
    # Refused while the daemon backs off (70), or failed by the next worker's timeout (1).
    assert run.returncode in (1, 70) and "warmup_timeout" in run.stderr, run.stderr
