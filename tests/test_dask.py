"""warmd.dask on a real LocalCluster (processes): a warmd daemon beside each Dask worker."""
from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed", reason="warmd.dask needs distributed: pip install 'warmd[dask]'")

import dask  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

import warmd  # noqa: E402
import warmd.dask  # noqa: E402

import helpers_dask  # noqa: E402
from warmd.client.events import Rerun  # noqa: E402

TESTS = Path(__file__).resolve().parent
CONFIG = '[warmup]\nhooks = ["helpers_dask_warm:warm"]\n'

pytestmark = pytest.mark.slow


def start_cluster(workers: int = 1, threads: int = 1) -> distributed.LocalCluster:
    return distributed.LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                                    dashboard_address=":0", silence_logs=logging.ERROR)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dask") / "warmd.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def client(config):
    with start_cluster() as cluster, warmd.dask.Client(cluster, config=config, pythonpath=[TESTS]) as c:
        yield c


def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "release"
    os.mkfifo(path)
    return path


def release(path: Path) -> None:
    with open(path, "w"):
        pass


def first_line(job, prefix: str) -> str:
    """The first stdout line of ``job`` that starts with ``prefix``, as soon as it comes."""
    for event in job.events():
        if isinstance(event, warmd.Output) and event.text.startswith(prefix):
            return event.text
    raise AssertionError(f"{job.key} ended without printing {prefix!r}: {job.output()!r}")


def warm_workers(client) -> list[dict]:
    return [w for d in client.daemons().values() for w in d["workers"]]


def test_warm_state_persists_across_jobs_on_a_worker(client):
    first = client.submit(helpers_dask.touch).result()
    second = client.submit(helpers_dask.touch).result()
    assert second["pid"] == first["pid"] == first["warmed_in"]
    assert second["warmups"] == 1                     # warm-up ran once, before the first job
    assert second["calls"] == first["calls"] + 1      # and the module's state stayed


def test_events_stream_in_order_and_the_result_comes_back(client):
    job = client.submit_call(helpers_dask.steps, (5,), name="five steps", log_level="warning")
    events = list(job.events())
    assert job.result() == 5
    assert job.output() == "".join(f"line {i}\n" for i in range(5))
    assert job.output("stderr") == "to stderr\n"
    progress = [e for e in events if isinstance(e, warmd.Progress)]
    assert [(p.done, p.total, p.fields["step"]) for p in progress] == [(i + 1, 5, i) for i in range(5)]
    logs = [e.message for e in events if isinstance(e, warmd.Log)]
    assert logs == [f"record {i}" for i in range(5)]
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # Each line comes before the progress report the job made after printing it.
    kinds = [type(e).__name__ for e in events if isinstance(e, (warmd.Output, warmd.Progress))]
    assert kinds[:4] == ["Output", "Progress", "Output", "Progress"]
    assert all(e.job == job.job_id for e in events)
    assert job.finished.info["dask_worker"].startswith("tcp://")


def test_megabytes_of_output_arrive_whole_and_in_order(client):
    job = client.submit(helpers_dask.print_lines, 3000, 1024)   # 3 MiB, in many messages
    assert job.result() == 3000
    assert job.output() == "".join(f"{i:08d}" + "x" * 1015 + "\n" for i in range(3000))
    assert not [e for e in job.events() if isinstance(e, warmd.Gap)]


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise LookupError(key)


def test_a_dask_worker_holds_only_the_output_it_has_not_sent(config):
    # Dask itself keeps a worker's last batches of messages (the low-level log, 1000 by
    # default, each up to 1 MB): kept short here, what is left is what warmd.dask holds.
    with dask.config.set({"distributed.admin.low-level-log-length": 10}):
        with start_cluster() as cluster, warmd.dask.Client(cluster, config=config, pythonpath=[TESTS]) as c:
            (pid,) = c.dask.run(os.getpid).values()
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")   # the peak starts from here
            except OSError:
                pytest.skip("this kernel does not let the peak resident set be reset")
            before = _status_kib(pid, "VmRSS")
            job = c.submit(helpers_dask.write_bytes, 128 << 20, 48 << 20)  # about what Dask carries
            received = missed = 0
            for event in job.events():
                if isinstance(event, warmd.Output):
                    received += len(event.data)
                elif isinstance(event, warmd.Gap):  # what it read more slowly than the job wrote
                    missed += event.missed_bytes
            assert job.result() == received + missed == 128 << 20
            grew = (_status_kib(pid, "VmHWM") - before) << 10
            assert grew < 48 << 20, f"the Dask worker's peak grew by {grew >> 20} MiB for 128 MiB of output"


def test_errors_arrive_as_their_own_type(client):
    job = client.submit(helpers_dask.fail, "bad well")
    with pytest.raises(ValueError, match="bad well") as raised:
        job.result()
    assert "helpers_dask.py" in str(raised.value.__cause__)  # the worker's traceback


def test_arrays_travel_out_of_band_both_ways(client):
    image = np.arange(4 << 20, dtype=np.uint16).reshape(2048, -1)
    doubled = client.submit(helpers_dask.double, image).result()
    assert np.array_equal(doubled, image * 2)
    doubled[0, 0] = 7  # the result is an ordinary, writable array


def test_code_and_scripts_run_as_python_runs_them(client, tmp_path):
    job = client.run_code("import sys; print(sys.argv[1:])", ["a", "b"])
    job.result()
    assert job.output() == "['a', 'b']\n"
    script = tmp_path / "script.py"
    script.write_text("import sys\nprint('script', sys.argv[1])\nraise SystemExit(3)\n")
    ran = client.run_script(str(script), ["x"])
    with pytest.raises(warmd.JobExit) as exited:
        ran.result()
    assert exited.value.exit_status == 3 and ran.output() == "script x\n"


def test_edited_user_code_runs_fresh(client, tmp_path, monkeypatch):
    module = tmp_path / "dask_edited_step.py"
    module.write_text("def value():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import dask_edited_step
    assert client.submit(dask_edited_step.value).result() == 1
    module.write_text("def value():\n    return 2  # edited\n")
    import importlib
    importlib.reload(dask_edited_step)
    assert client.submit(dask_edited_step.value).result() == 2


def test_cancel_a_queued_job(client, tmp_path):
    gate, marker = fifo(tmp_path), tmp_path / "ran"
    blocker = client.submit(helpers_dask.wait_for, str(gate))
    first_line(blocker, "waiting")                            # the only thread is busy
    queued = client.submit(helpers_dask.wait_for, str(gate), str(marker))
    assert queued.cancel() is True
    assert queued.cancelled()
    with pytest.raises(Exception):
        queued.result()
    release(gate)
    assert blocker.result() == "released"
    assert not marker.exists()                                 # the cancelled job never ran


def test_cancel_a_running_job_kills_its_processes_and_keeps_the_worker_warm(client):
    before = client.submit(helpers_dask.touch).result()
    job = client.submit(helpers_dask.sleeper_child)
    line = first_line(job, "child")
    child, worker = int(line.split()[1]), int(line.split()[3])
    assert psutil.pid_exists(child)
    assert job.cancel() is True
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    after = client.submit(helpers_dask.touch).result()
    assert after["pid"] == worker == before["pid"]           # the same warm process
    assert after["warmups"] == 1 and after["calls"] == before["calls"] + 1


def test_a_job_dask_itself_cancels_while_it_runs_loses_its_processes_too(client):
    job = client.submit(helpers_dask.sleeper_child)
    child = psutil.Process(int(first_line(job, "child").split()[1]))
    client.dask.cancel(job.dask_future)          # Dask's own cancel only forgets the task
    gone, alive = psutil.wait_procs([child], timeout=30)
    assert gone and not alive
    with pytest.raises(concurrent.futures.CancelledError):
        job.result()
    assert client.submit(helpers_dask.touch).result()["warmups"] == 1


def test_the_client_cancels_by_key_with_a_mode(client):
    job = client.submit(helpers_dask.sleeper_child)
    worker = int(first_line(job, "child").split()[3])
    assert client.cancel(job.job_id, mode="kill") == "cancelled"   # the process group, at once
    assert client.cancel(job) == "cancelled"                        # it stays so
    assert client.submit(helpers_dask.touch).result()["pid"] != worker   # replaced, warm again
    with pytest.raises(warmd.UnknownJob):
        client.cancel("warmd-no-such-job")


def test_a_group_cancels_as_one_and_rolls_up_progress(client, tmp_path):
    gate = fifo(tmp_path)
    with pytest.raises(RuntimeError, match="stop here"):
        with client.group(name="plate") as run:
            jobs = [run.submit(helpers_dask.wait_for, str(gate)) for _ in range(3)]
            first_line(jobs[0], "waiting")
            raise RuntimeError("stop here")                    # leaving the block cancels them all
    assert all(job.cancelled() for job in jobs)
    assert run.progress.total == 3 and run.progress.done == 3
    assert client.submit(helpers_dask.touch).result()["warmups"] == 1


def test_map_returns_in_order(client):
    assert list(client.map(helpers_dask.double, range(6))) == [0, 2, 4, 6, 8, 10]


def test_what_cannot_leave_the_machine_is_refused_with_the_reason(client, tmp_path):
    with pytest.raises(TypeError, match="stdin"):
        client.submit_call(helpers_dask.touch, stdin=0)
    with pytest.raises(TypeError, match="pass the value"):
        client.submit(helpers_dask.double, warmd.ref("j1"))
    earlier = client.submit(helpers_dask.double, 1)
    with pytest.raises(TypeError, match="pass its value"):
        client.submit(helpers_dask.double, earlier)
    assert earlier.result() == 2


def test_a_killed_warm_worker_gives_job_lost_and_a_fresh_worker(client):
    job = client.submit(helpers_dask.sleeper_child)
    worker = int(first_line(job, "child").split()[3])
    os.kill(worker, signal.SIGKILL)
    with pytest.raises(warmd.JobLost):
        job.result()
    after = client.submit(helpers_dask.touch).result()
    assert after["pid"] != worker and after["warmups"] == 1   # a new worker, warmed again


def test_a_killed_dask_worker_gives_job_lost_and_leaves_nothing(config):
    # Dask would run the task again elsewhere; with no failures allowed it gives up at once.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with start_cluster() as cluster, warmd.dask.Client(cluster, config=config, pythonpath=[TESTS]) as c:
            job = c.submit(helpers_dask.sleeper_child)
            line = first_line(job, "child")
            child, worker = int(line.split()[1]), int(line.split()[3])
            (daemon,) = c.daemons().values()
            (dask_pid,) = c.dask.run(os.getpid).values()
            os.kill(dask_pid, signal.SIGKILL)
            with pytest.raises(warmd.JobLost, match="died"):
                job.result()
            # The daemon saw its Dask worker go (the lifeline) and took its workers with it.
            procs = [psutil.Process(p) for p in (daemon["pid"], worker, child) if psutil.pid_exists(p)]
            gone, alive = psutil.wait_procs(procs, timeout=30)
            assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def kill_the_dask_worker_running(client, line: str) -> None:
    """SIGKILL the Dask worker whose daemon's warm worker printed ``line`` ("started PID")."""
    warm_pid = int(line.split()[1])
    [address] = [a for a, d in client.daemons().items() if any(w["pid"] == warm_pid for w in d["workers"])]
    os.kill(client.dask.run(os.getpid)[address], signal.SIGKILL)


@pytest.mark.parametrize("reruns", [False, True])
def test_a_job_whose_dask_worker_died_runs_again_only_when_asked(config, tmp_path, reruns):
    """Dask starts the task again on another worker; by default the job ends JobLost
    there without running (it started once), with reruns=True it runs again and says so."""
    starts, gate = tmp_path / "starts", tmp_path / "gate"
    with start_cluster(workers=2) as cluster, \
            warmd.dask.Client(cluster, config=config, pythonpath=[TESTS], reruns=reruns) as c:
        job = c.submit(helpers_dask.start_then_wait, str(starts), str(gate))
        kill_the_dask_worker_running(c, first_line(job, "started"))
        gate.touch()
        if reruns:
            assert job.result() == "done"
            [rerun] = [e for e in job.events() if isinstance(e, Rerun)]
            assert rerun.attempt == 2 and rerun.worker in c.daemons()
            assert len(starts.read_text().split()) == 2
        else:
            with pytest.raises(warmd.JobLost, match="does not run a job twice"):
                job.result()
            assert len(starts.read_text().split()) == 1


def test_closing_the_cluster_stops_the_daemons(config):
    with start_cluster(workers=2) as cluster:
        with warmd.dask.Client(cluster, config=config, pythonpath=[TESTS]) as c:
            assert len({c.submit(helpers_dask.touch).result()["pid"] for _ in range(2)}) >= 1
            daemons = [psutil.Process(d["pid"]) for d in c.daemons().values()]
            workers = [psutil.Process(w["pid"]) for w in warm_workers(c)]
            assert len(daemons) == 2
    gone, alive = psutil.wait_procs(daemons + workers, timeout=30)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def test_each_dask_thread_gets_a_warm_worker_and_a_given_client_stays_open(config, tmp_path):
    gate = fifo(tmp_path)
    with start_cluster(workers=1, threads=2) as cluster, distributed.Client(cluster) as dask_client:
        with warmd.dask.Client(dask_client, config=config, pythonpath=[TESTS]) as c:
            (daemon,) = c.daemons().values()
            assert len(daemon["workers"]) == 2              # workers.count = the thread count
            jobs = [c.submit(helpers_dask.wait_for, str(gate)) for _ in range(2)]
            pids = {int(first_line(job, "waiting").split()[1]) for job in jobs}
            assert len(pids) == 2                            # both running at once
            release(gate)
            assert [job.result() for job in jobs] == ["released", "released"]
            process = psutil.Process(daemon["pid"])
            c.stop_daemons()                                 # returns once they have stopped
            gone, alive = psutil.wait_procs([process], timeout=30)
            assert gone and not alive
        assert dask_client.submit(sum, [1, 2]).result() == 3   # not closed by warmd.dask


def test_a_jobs_own_jobs_run_on_its_dask_workers_daemon(config):
    # Its own cluster: the waiting parent makes the daemon start an extra worker.
    with start_cluster() as cluster, warmd.dask.Client(cluster, config=config, pythonpath=[TESTS]) as c:
        values, daemon_pid = c.submit(helpers_dask.nested, 3).result()
        assert values == [3, 2, 1]
        assert daemon_pid in {d["pid"] for d in c.daemons().values()}
