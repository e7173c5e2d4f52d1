"""warmd-openhcs against OpenHCS's own client, unmodified, as OpenHCS's GUI drives it:
compile, then run with the compile's artifact, progress on its stream, Stop by execution.

One warmd daemon (two workers warmed by warmd.openhcs.warmup) and one endpoint serve the
module; each test makes its own plates. They need OpenHCS (make test runs them in
bench/openhcs/.venv); elsewhere they skip, saying so.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

# A cold start (OpenHCS's function catalog built without its disk cache) takes minutes.
pytestmark = [pytest.mark.openhcs, pytest.mark.slow, pytest.mark.timeout(900)]
pytest.importorskip("openhcs", reason="needs OpenHCS: 'make test' runs these in bench/openhcs/.venv")

import helpers_openhcs as oh  # noqa: E402
from warmd.client.info import family  # noqa: E402
from warmd.testing import LocalDaemon  # noqa: E402

sys.path.insert(0, str(oh.EXAMPLE))
import pipeline  # noqa: E402

WORKERS = 2
HANG = 300


@pytest.fixture(scope="module")
def user_dir():
    """Where the tests write step modules of their own: user code, on the endpoint's path."""
    path = Path(tempfile.mkdtemp(prefix="ohu-", dir="/tmp"))
    sys.path.insert(0, str(path))
    yield path
    sys.path.remove(str(path))
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon():
    root = Path(tempfile.mkdtemp(prefix="ohd-", dir="/tmp"))
    d = LocalDaemon(root, oh.WARM_CONFIG.format(count=WORKERS), remove_root=True).start()
    d.wait_idle(WORKERS)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def endpoint(daemon, user_dir):
    server = oh.endpoint(oh.free_port(), daemon.socket, user_dir / "endpoint.log",
                         pythonpath=(user_dir, oh.EXAMPLE))
    server.notify.wait_for("STATUS=warm", server.alive, timeout=HANG)
    events: list[dict] = []
    server.progress = events
    server.attach(progress=events.append)
    yield server
    assert server.stop() == 0, server.log_text()[-3000:]


def write_module(directory: Path, name: str, source: str) -> None:
    """A step module of the user's, written (or edited) now and read afresh by this process."""
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    stamp = time.time() + len(list(directory.glob(f"{name}.*")))  # a new mtime for each edit
    os.utime(path, (stamp, stamp))
    sys.modules.pop(name, None)


def lanes(daemon: LocalDaemon) -> list:
    """The lane jobs of every run so far, newest run last."""
    with daemon.client() as client:
        jobs = client.jobs()
    groups = [j for j in jobs if j.kind == "group" and j.name.startswith("openhcs ")]
    return [[j for j in family(jobs, g.id) if j.kind == "call"] for g in groups]


def worker_children(daemon: LocalDaemon, workers: set[int]) -> list[psutil.Process]:
    return [p for p in daemon.descendants() if p.pid not in workers]


# ---------------------------------------------------------------- output and warmth

def test_a_plate_matches_the_stock_servers_output_byte_for_byte(endpoint, daemon, tmp_path):
    """The same plate and pipeline through OpenHCS's own server (num_workers=2, its pool) and
    through the endpoint (two lanes on warm workers) write the same files, byte for byte (the
    metadata's list of images in the order its wells finished aside, see output_files).
    While the stock server holds its endpoint, warmd-openhcs refuses to start there."""
    plate = tmp_path / "plate"
    stock = oh.stock_server(oh.free_port(), tmp_path / "stock.log")
    try:
        stock.attach()
        oh.fresh_plate(plate, wells=4, grid=(2, 2), tile=128)
        done, _ = oh.run_plate(stock.client, plate, pipeline.make_pipeline, num_workers=2)
        assert done["status"] == "complete", done
        expected = oh.output_files(plate)

        taken = subprocess.run([sys.executable, "-m", "warmd.openhcs", "--port", str(stock.port),
                                "--socket", str(daemon.socket), "--no-autostart"],
                               capture_output=True, text=True, timeout=120)
        assert taken.returncode == 75, taken.stderr
        assert "OpenHCS's own ZMQExecutionServer" in taken.stderr and "already serves" in taken.stderr
    finally:
        stock.stop()
    oh.fresh_plate(plate, wells=4, grid=(2, 2), tile=128)
    done, _ = oh.run_plate(endpoint.client, plate, pipeline.make_pipeline, num_workers=2)
    assert done["status"] == "complete", done
    assert len(expected) >= 17 and oh.output_files(plate) == expected
    runs = lanes(daemon)
    assert len(runs[-1]) == 2 and {j.state for j in runs[-1]} == {"succeeded"}


def test_a_second_run_is_warm_on_the_same_workers(endpoint, daemon, tmp_path):
    """Two Runs: every lane runs on a worker that was warm before the first, the workers are
    the same processes after, each warmed up once (its registry built then, not in a run),
    and the endpoint itself never started a worker process."""
    before = daemon.wait_idle(WORKERS)
    plate = oh.fresh_plate(tmp_path / "plate", wells=2, grid=(1, 1), tile=64)
    seconds = []
    for _ in range(2):
        done, took = oh.run_plate(endpoint.client, plate, pipeline.make_pipeline, num_workers=2)
        assert done["status"] == "complete", done
        seconds.append(took)
    after = daemon.wait_idle(WORKERS)
    assert set(after) == set(before)
    for run in lanes(daemon)[-2:]:
        assert {j.worker_pid for j in run} <= set(before) and len(run) == 2
    hook = "hook warmd.openhcs.warmup:warm"
    assert all([s["step"] for s in w.warmup_steps].count(hook) == 1 for w in after.values())
    warmup = min(w.warmup_seconds for w in after.values())
    assert seconds[1] < warmup, (seconds, warmup)
    # The one child is multiprocessing's resource tracker, there since OpenHCS's server made
    # its first progress queue: no lane ever ran in a process of the endpoint's.
    children = psutil.Process(endpoint.proc.pid).children(recursive=True)
    assert all("resource_tracker" in " ".join(p.cmdline()) for p in children), children


def test_the_endpoint_rehearses_a_run_before_it_says_it_is_warm(endpoint, daemon):
    """Before STATUS=warm the endpoint ran a two-well plate through itself, with OpenHCS's
    own client: a group of two lanes that succeeded on the warm workers, and its temporary
    plate is gone."""
    with daemon.client() as client:
        jobs = client.jobs()
    rehearsals = [j for j in jobs if j.kind == "group" and j.name.startswith("openhcs rehearsal ")]
    assert len(rehearsals) == 1, [j.name for j in jobs if j.kind == "group"]
    ran = [j for j in family(jobs, rehearsals[0].id) if j.kind == "call"]
    assert len(ran) == 2 and {j.state for j in ran} == {"succeeded"}
    assert "rehearsal run (a two-well synthetic plate) done" in endpoint.log_text()
    assert not list(Path(tempfile.gettempdir()).glob("warmd-openhcs-rehearsal-*"))


def test_openhcs_gui_offscreen_presses_run_on_the_endpoint(endpoint, daemon, tmp_path):
    """OpenHCS's PyQt6 GUI, unmodified and offscreen (tests/openhcs_gui_run.py), set to the
    endpoint's port: it attaches without starting a server, and its Add, Init, Compile and
    Run buttons run the plate on warmd's warm workers."""
    pytest.importorskip("PyQt6.QtWidgets", reason="OpenHCS's GUI needs PyQt6 and Qt's libraries")
    workers = set(daemon.wait_idle(WORKERS))
    plate = oh.fresh_plate(tmp_path / "plate", wells=2, grid=(1, 1), tile=64)
    seen = tmp_path / "gui.json"
    gui = subprocess.run([sys.executable, str(Path(__file__).with_name("openhcs_gui_run.py")),
                          "--port", str(endpoint.port), "--plate", str(plate),
                          "--expect-pid", str(endpoint.proc.pid), "--json", str(seen)],
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
                         capture_output=True, text=True, timeout=HANG)
    assert gui.returncode == 0, gui.stdout[-5000:] + gui.stderr[-3000:]
    run = json.loads(seen.read_text())
    assert run["server_pid"] == endpoint.proc.pid and run["client_owns_server"] is None
    assert run["execution_status"] == "complete"
    with daemon.client() as client:
        jobs = client.jobs()
    group = [j for j in jobs if j.kind == "group" and j.name.endswith(run["execution_id"][:8])]
    assert len(group) == 1 and group[0].name.startswith("openhcs plate ")
    ran = [j for j in family(jobs, group[0].id) if j.kind == "call"]
    assert len(ran) == 2 and {j.state for j in ran} == {"succeeded"}
    assert {j.worker_pid for j in ran} <= workers
    assert len(oh.output_files(plate)) >= 3


# ---------------------------------------------------------------- Stop

HOLD = """
    import os, subprocess, sys, time
    from openhcs.core.memory import numpy as numpy_func

    FIFO = {fifo!r}

    @numpy_func
    def hold(image):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open(FIFO, "w") as f:  # until the test reads it
            f.write(f"{{os.getpid()}} {{child.pid}}\\n")
        time.sleep(600)
        return image
"""


def held(fifo: Path, lanes: int) -> list[tuple[int, int]]:
    """The (worker, child) pids that ``lanes`` lanes of the hold step wrote, once all have."""
    lines: list[str] = []
    while len(lines) < lanes:
        with open(fifo) as f:  # each writer closes it: open again for the next
            lines += f.read().splitlines()
    return [tuple(map(int, line.split())) for line in lines]

GATE = """
    import os
    from openhcs.core.memory import numpy as numpy_func

    FIFO = {fifo!r}
    opened = []

    @numpy_func
    def gate(image):
        if not opened:
            with open(FIFO) as f:  # until the test writes to it
                opened.append(f.read())
        return image
"""


def step(module: str, function: str, name: str):
    def make() -> list:
        from openhcs.core.steps.function_step import FunctionStep
        mod = __import__(module)
        return [FunctionStep(func=getattr(mod, function), name=name)]
    return make


def started(events: list[dict], execution_id: str, step_name: str, count: int) -> threading.Event:
    """Set once ``count`` lanes of the run reported ``step_name`` started on the GUI's stream."""
    ready = threading.Event()

    def check() -> None:
        while not ready.is_set():
            seen = {e.get("axis_id") for e in list(events) if e.get("execution_id") == execution_id
                    and e.get("step_name") == step_name and e.get("phase") == "step_started"}
            if len(seen) >= count:
                ready.set()
                return
            time.sleep(0.02)
    threading.Thread(target=check, daemon=True).start()
    return ready


def test_stop_ends_that_run_and_leaves_the_workers_warm(endpoint, daemon, user_dir, tmp_path):
    fifo = tmp_path / "hold.fifo"
    os.mkfifo(fifo)
    write_module(user_dir, "hold_steps", HOLD.format(fifo=str(fifo)))
    workers = set(daemon.wait_idle(WORKERS))
    plate = oh.fresh_plate(tmp_path / "plate", wells=2, grid=(1, 1), tile=64)
    run = oh.submit(endpoint.client, plate, step("hold_steps", "hold", "hold"), num_workers=2)
    pids = held(fifo, 2)
    assert {worker for worker, _ in pids} == workers  # a lane on each warm worker
    assert {p.pid for p in worker_children(daemon, workers)} == {child for _, child in pids}
    assert started(endpoint.progress, run, "hold", 2).wait(HANG)  # as the GUI saw it

    start = time.perf_counter()
    reply = endpoint.client.cancel_execution(run)
    stopped_in = time.perf_counter() - start
    assert reply.get("status") == "ok", reply
    assert worker_children(daemon, workers) == [], "a process of the stopped run outlived Stop"
    assert oh.wait(endpoint.client, run)["status"] == "cancelled"
    assert {j.state for j in lanes(daemon)[-1]} == {"cancelled"}
    assert set(daemon.wait_idle(WORKERS)) == workers, "Stop cost a worker"
    assert stopped_in < 10, stopped_in

    plate = oh.fresh_plate(tmp_path / "plate", wells=2, grid=(1, 1), tile=64)
    done, _ = oh.run_plate(endpoint.client, plate, pipeline.make_pipeline, num_workers=2)
    assert done["status"] == "complete" and len(oh.output_files(plate)) >= 3


def test_two_runs_at_once_and_stop_of_one_leaves_the_other(endpoint, daemon, user_dir, tmp_path):
    fifo, holding = tmp_path / "gate.fifo", tmp_path / "hold.fifo"
    os.mkfifo(fifo)
    os.mkfifo(holding)
    write_module(user_dir, "hold_steps", HOLD.format(fifo=str(holding)))
    write_module(user_dir, "gate_steps", GATE.format(fifo=str(fifo)))
    stopped = oh.fresh_plate(tmp_path / "stopped", wells=1, grid=(1, 1), tile=64)
    gated = oh.fresh_plate(tmp_path / "gated", wells=1, grid=(1, 1), tile=64)
    first = oh.submit(endpoint.client, stopped, step("hold_steps", "hold", "hold"), num_workers=1)
    second = oh.submit(endpoint.client, gated, step("gate_steps", "gate", "gate"), num_workers=1)
    held(holding, 1)
    assert started(endpoint.progress, first, "hold", 1).wait(HANG)
    assert started(endpoint.progress, second, "gate", 1).wait(HANG)

    assert endpoint.client.cancel_execution(first).get("status") == "ok"
    assert oh.wait(endpoint.client, first)["status"] == "cancelled"
    status = endpoint.client.get_status(second)
    assert status["execution"]["status"] == "running", status
    assert {j.state for j in lanes(daemon)[-1]} == {"running"}

    with open(fifo, "w") as f:
        f.write("go")
    assert oh.wait(endpoint.client, second)["status"] == "complete"


# ---------------------------------------------------------------- code edits

SCALE = """
    from openhcs.core.memory import numpy as numpy_func

    @numpy_func
    def scale(image):
        return image * {factor}
"""


def test_an_edited_step_function_runs_its_new_code_on_every_worker(endpoint, daemon, user_dir,
                                                                    tmp_path):
    import numpy as np
    import tifffile

    def run(factor: int) -> dict[str, float]:
        write_module(user_dir, "scale_steps", SCALE.format(factor=factor))
        plate = oh.fresh_plate(tmp_path / "plate", wells=2, grid=(1, 1), tile=64)
        done, _ = oh.run_plate(endpoint.client, plate, step("scale_steps", "scale", "scale"),
                               num_workers=2)
        assert done["status"] == "complete", done
        images = sorted((oh.output_dir(plate) / "images").glob("*.tif"))
        return {p.name: float(np.mean(tifffile.imread(p))) for p in images}

    once, twice = run(1), run(2)
    assert once.keys() == twice.keys() and len(once) >= 2
    assert all(twice[name] == pytest.approx(2 * once[name], rel=1e-3) for name in once)
    assert len({j.worker_pid for j in lanes(daemon)[-1]}) == 2, "the edited run used one worker"


# ---------------------------------------------------------------- refusals

def test_another_openhcs_release_is_refused(daemon):
    code = ("import openhcs; openhcs.__version__ = '0.9.0'\n"
            "from warmd.openhcs.main import entry\n"
            f"entry(['--port', '{oh.free_port()}', '--socket', '{daemon.socket}', '--no-autostart'])")
    refused = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 78, refused.stderr
    assert "OpenHCS 0.9.0 is installed, but this warmd-openhcs was written for OpenHCS 0.8.6" \
        in refused.stderr


def test_a_squatted_endpoint_directory_or_socket_is_refused(daemon, tmp_path):
    """An IPC directory or socket of another user's, or a link, is never used: the endpoint
    says whose it is and what to do, and exits 78 (the unit does not restart it)."""
    home = tmp_path / "home"
    ipc = home / ".openhcs" / "ipc"
    ipc.mkdir(parents=True)
    port = oh.free_port()

    def start() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "warmd.openhcs", "--port", str(port),
                               "--socket", str(daemon.socket), "--no-autostart"],
                              env={**os.environ, "HOME": str(home)}, capture_output=True,
                              text=True, timeout=120)

    os.chown(ipc, 65534, 65534)
    refused = start()
    assert refused.returncode == 78 and "belongs to uid 65534, not to you" in refused.stderr

    os.chown(ipc, os.getuid(), os.getgid())
    os.chmod(ipc, 0o777)
    squatter = ipc / f"openhcs-zmq-{port + 1000}.sock"
    import socket
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(squatter))
    os.chown(squatter, 65534, 65534)
    refused = start()
    assert refused.returncode == 78 and "the socket belongs to uid 65534" in refused.stderr
    assert (ipc.stat().st_mode & 0o777) == 0o700, "the directory was left open to others"

    squatter.unlink()
    shutil.rmtree(ipc)
    ipc.symlink_to(tmp_path)
    refused = start()
    assert refused.returncode == 78 and "symbolic link" in refused.stderr


# ---------------------------------------------------------------- starting and stopping

def test_a_client_that_looks_while_the_endpoint_starts_attaches_to_it(daemon, tmp_path):
    """The endpoint holds OpenHCS's startup lock from before it binds: a GUI connecting
    (attach or start) meanwhile waits, then attaches to the endpoint, never starting a stock
    server. The endpoint's force-shutdown request then ends it: it stops answering at once,
    and exits once OpenHCS's catalog preparation has stopped."""
    import fcntl

    from openhcs.runtime.zmq_execution_client import ZMQExecutionClient
    from zmqruntime.client import EndpointShutdownMode, ZMQClient
    from zmqruntime.transport_modes import IpcTransportDeclaration
    from openhcs.runtime.zmq_config import OPENHCS_ZMQ_CONFIG

    port = oh.free_port()
    lock = IpcTransportDeclaration.startup_lock_path(port, OPENHCS_ZMQ_CONFIG)
    lock.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OPENHCS_CPU_ONLY": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "warmd.openhcs", "--port", str(port), "--socket",
                             str(daemon.socket), "--no-autostart"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with open(lock, "a+b") as f:  # until the endpoint holds the lock
            deadline = time.monotonic() + 60
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    break
                fcntl.flock(f, fcntl.LOCK_UN)
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.01)
        client = ZMQExecutionClient(port=port, persistent=True)
        assert client.connect(timeout=120)
        assert client.connected_endpoint.server == "WarmdExecutionServer"
        assert client.owned_server_process_is_alive() is None  # attached, not started
        client.disconnect()

        result = ZMQClient.shutdown_endpoint_on_port(port, EndpointShutdownMode.FORCE, timeout=5,
                                                     config=OPENHCS_ZMQ_CONFIG)
        assert result.endpoint_terminated  # it stopped answering within the client's 5 s
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(daemon.wait_idle(WORKERS)) == WORKERS  # warmd's workers stay


def test_install_units_writes_the_endpoint_unit_for_this_environment(tmp_path):
    target = tmp_path / "units"
    done = subprocess.run([sys.executable, "-m", "warmd.ctl", "install-units", "--openhcs",
                           "--user-dir", str(target)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    script = Path(os.path.abspath(sys.executable)).parent / "warmd-openhcs"
    service = (target / "warmd-openhcs.service").read_text()
    assert f"ExecStart={script} --no-autostart\n" in service
    assert sorted(p.name for p in target.iterdir()) == ["warmd-openhcs.service", "warmd.service",
                                                         "warmd.socket"]
    assert "systemctl --user enable --now warmd-openhcs.service" in done.stdout


def test_a_run_after_warmd_was_killed_and_came_back_goes_to_the_new_daemon(tmp_path):
    """kill -9 of the daemon between two Runs (its workers with it): the endpoint stays up,
    and its next Run goes to the daemon that serves the socket now."""
    import signal
    root = Path(tempfile.mkdtemp(prefix="ohr-", dir="/tmp"))
    config = oh.WARM_CONFIG.format(count=1)
    first = LocalDaemon(root, config).start()
    server = oh.endpoint(oh.free_port(), first.socket, tmp_path / "endpoint.log")
    second = None
    try:
        server.notify.wait_for("STATUS=warm", server.alive, timeout=HANG)
        server.attach()
        plate = oh.fresh_plate(tmp_path / "plate", wells=1, grid=(1, 1), tile=64)
        assert oh.run_plate(server.client, plate, pipeline.make_pipeline, num_workers=1)[0]["status"] \
            == "complete"
        doomed = [first.pid, *(p.pid for p in first.descendants())]
        for pid in doomed:
            os.kill(pid, signal.SIGKILL)
        first.proc.wait()
        second = LocalDaemon(root, config).start()  # the same socket
        second.wait_idle(1)
        plate = oh.fresh_plate(tmp_path / "plate", wells=1, grid=(1, 1), tile=64)
        done, _ = oh.run_plate(server.client, plate, pipeline.make_pipeline, num_workers=1)
        assert done["status"] == "complete", (done, server.log_text()[-3000:])
        with second.client() as client:
            assert [j.name for j in client.jobs() if j.kind == "group"][-1].startswith("openhcs plate")
    finally:
        server.stop()
        first.stop()
        if second is not None:
            second.stop()
        shutil.rmtree(root, ignore_errors=True)
