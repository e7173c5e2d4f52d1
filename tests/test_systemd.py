"""warmd as a systemd user service: units, socket activation, notify, journal, stop, crash, idle.

The tests marked ``systemd`` run a private ``systemd --user`` and journald
(tests/systemd_env.py) with the units that ``warmctl install-units --enable``
writes, and skip, saying why, where that cannot run. The others check the
unit files, install-units and the notify/journal/ledger pieces without systemd.
"""
from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
from importlib import resources
from pathlib import Path

import psutil
import pytest

import warmd
from warmd.client.events import Output
from warmd.ctl import units
from warmd.proctree import alive
from warmd.daemon.jobs import LOST, Job
from warmd.daemon.ledger import Ledger
from warmd.daemon.logs import StructuredJournalHandler
from warmd.daemon.notify import Notifier
from warmd.protocol import FrameReader, encode, hello

import helpers_jobs
from systemd_env import PrivateSystemd, Unavailable, check_available, wait_until, warmctl

REPO = Path(__file__).resolve().parent.parent
UNIT_SOURCE = REPO / "systemd"

# A warm-up hook that makes every worker linger 1 s on its way out, so the
# window between "the daemon stopped accepting" and "it exited" is wide
# enough for a test client to connect inside it.
LINGER_MODULE = """\
import atexit
import time


def linger():
    atexit.register(time.sleep, 1.0)
"""


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def private_systemd():
    try:
        check_available()
    except Unavailable as exc:
        pytest.skip(f"no private systemd --user: {exc}")
    root = Path(tempfile.mkdtemp(prefix="wsd-", dir="/tmp"))  # short: AF_UNIX paths are limited
    pylib = root / "pylib"
    pylib.mkdir()
    (pylib / "wdlinger.py").write_text(LINGER_MODULE)
    sd = PrivateSystemd(root, python_path=[pylib])
    try:
        sd.start()
        done = warmctl(sd.env, "install-units", "--user-dir", str(sd.unit_dir), "--enable")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "$ systemctl --user enable --now warmd.socket" in done.stdout
        yield sd
    finally:
        sd.stop()
        shutil.rmtree(root, ignore_errors=True)


class Service:
    """The installed warmd units on the private manager, as one test uses them."""

    def __init__(self, sd: PrivateSystemd) -> None:
        self.sd = sd
        self.env = sd.env
        self.socket = sd.runtime / "warmd.sock"
        self.config = sd.config / "warmd" / "warmd.toml"

    def configure(self, text: str) -> None:
        """The config the next daemon start reads ($XDG_CONFIG_HOME/warmd/warmd.toml)."""
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(textwrap.dedent(text))

    def state(self) -> str:
        return self.sd.show("warmd.service", "ActiveState")

    def main_pid(self) -> int:
        return int(self.sd.show("warmd.service", "MainPID"))

    def restarts(self) -> int:
        return int(self.sd.show("warmd.service", "NRestarts"))

    def warmctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return warmctl(self.env, *args, timeout=timeout)

    def ping(self) -> dict:
        done = self.warmctl("ping", "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def status(self) -> dict:
        done = self.warmctl("status", "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def client(self, **kwargs) -> warmd.Client:
        return warmd.Client(self.socket, autostart=False, **kwargs)


@pytest.fixture
def service(private_systemd):
    """The units with the service stopped, so the test's first connection starts it."""
    sd = private_systemd
    svc = Service(sd)
    svc.configure("")
    sd.systemctl("stop", "warmd.service")
    sd.systemctl("reset-failed", "warmd.service", "warmd.socket", check=False)  # and start limits
    assert sd.show("warmd.socket", "ActiveState") == "active"
    yield svc
    sd.systemctl("stop", "warmd.service")


def _wait_for_output(future, text: str) -> None:
    """Follow a job's events until it prints ``text`` (the job's own signal that it got there)."""
    for event in future.events():
        if isinstance(event, Output) and text in event.text:
            return
    raise AssertionError(f"the job ended without printing {text!r}")


def _processes(pids: set[int]) -> list[psutil.Process]:
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))  # remembers the start time: a reused pid is not "alive"
        except psutil.NoSuchProcess:
            pass
    return procs


# ---------------------------------------------------------------- under systemd

@pytest.mark.systemd
def test_first_connection_starts_the_service_with_a_live_status(service):
    sd = service.sd
    assert service.state() == "inactive"
    assert stat.S_IMODE(os.stat(service.socket).st_mode) == 0o600

    pong = service.ping()  # --no-autostart: only systemd can have started it
    assert pong["started_by"] == "systemd"
    assert service.state() == "active"
    main_pid = service.main_pid()
    status = service.status()
    assert status["daemon"]["pid"] == main_pid == pong["pid"]
    assert status["daemon"]["started_by"] == "systemd"
    assert str(service.socket) == status["daemon"]["socket"]

    done = service.warmctl("exec", "-c", "print('hello')")
    assert done.returncode == 0 and done.stdout == "hello\n", done.stderr

    def agreed():
        summary = service.status()["summary"]
        return summary if sd.show("warmd.service", "StatusText") == summary else None
    # STATUS= is sent when workers or jobs change; the spare may still be warming at first.
    line = wait_until(lambda: (s := agreed()) and "1 done" in s and "warming" not in s and s,
                      15, "STATUS= to match 'warmctl status' once the spare is warm")
    assert re.fullmatch(r"1 worker warm \(.+\), 1 spare, 0 running, 0 queued, 1 done", line), line
    shown = sd.systemctl("status", "--full", "warmd.service").stdout
    assert f'Status: "{line}"' in shown
    assert f"Main PID: {main_pid}" in shown


@pytest.mark.systemd
def test_journal_finds_a_jobs_lines_by_job_id(service):
    code = ("import logging, sys\n"
            "print('first out line', flush=True)\n"
            "print('an err line', file=sys.stderr, flush=True)\n"
            "print('second out line', flush=True)\n"
            "logging.getLogger('pipeline').error('a logging record')\n"
            "import warmd\n"
            "warmd.progress(1, 2, 'half', well='B03', step=1)\n"
            "warmd.progress(2, 2, 'all', well='B04', step=2)\n")
    done = service.warmctl("submit", "-c", code)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert service.warmctl("wait", job_id).returncode == 0

    service.sd.sync_journal()
    # The documented one-liner: journalctl --user-unit warmd.service JOB_ID=ID
    found = service.sd.journalctl("--user-unit", "warmd.service", f"JOB_ID={job_id}", "-o", "json")
    assert found.returncode == 0, found.stderr
    entries = [json.loads(line) for line in found.stdout.splitlines()]
    by_message = {e["MESSAGE"]: e for e in entries}
    assert all(e["JOB_ID"] == job_id and e["_SYSTEMD_USER_UNIT"] == "warmd.service" for e in entries)

    for text in ("first out line", "second out line"):
        assert by_message[text]["PRIORITY"] == "6" and by_message[text]["JOB_STREAM"] == "stdout"
    assert by_message["an err line"]["PRIORITY"] == "4"
    assert by_message["an err line"]["JOB_STREAM"] == "stderr"
    record = by_message["pipeline: a logging record"]
    assert record["PRIORITY"] == "3" and record["JOB_STREAM"] == "logging"
    stdout_order = [e["MESSAGE"] for e in entries if e.get("JOB_STREAM") == "stdout"]
    assert stdout_order == ["first out line", "second out line"]
    # Progress, with its fields: the first report, then (within a second) the one reaching
    # its total.
    progress = [e for e in entries if e.get("JOB_STREAM") == "progress"]
    assert [(e["PROGRESS_DONE"], e["PROGRESS_TOTAL"], e["PROGRESS_WELL"], e["PROGRESS_STEP"])
            for e in progress] == [("1", "2", "B03", "1"), ("2", "2", "B04", "2")]
    assert progress[0]["MESSAGE"] == "progress 1/2 half"

    # The daemon's own record of the job carries its structured fields.
    [end] = [e for e in entries if e.get("JOB_STATE")]
    assert end["JOB_STATE"] == "succeeded" and end["SYSLOG_IDENTIFIER"] == "warmd"
    assert int(end["WORKER_PID"]) > 0 and int(end["CLIENT_PID"]) > 0
    stderr_only = service.sd.journalctl("--user-unit", "warmd.service", f"JOB_ID={job_id}", "-p", "4",
                                        "-o", "cat")
    assert stderr_only.stdout.split("\n").count("an err line") == 1
    assert "first out line" not in stderr_only.stdout


@pytest.mark.systemd
def test_a_failed_jobs_end_is_an_error_in_the_journal_with_its_traceback(service):
    code = "def step():\n    raise ValueError('bad well B03')\nstep()\n"
    done = service.warmctl("submit", "-c", code)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert service.warmctl("wait", job_id).returncode == 1

    service.sd.sync_journal()
    found = service.sd.journalctl("--user-unit", "warmd.service", "-p", "err", f"JOB_ID={job_id}",
                                  "-o", "json")
    assert found.returncode == 0, found.stderr
    [end] = [e for e in map(json.loads, found.stdout.splitlines()) if e.get("JOB_STATE")]
    assert end["JOB_STATE"] == "failed" and end["PRIORITY"] == "3" and end["JOB_ERROR"] == "ValueError"
    assert "ValueError: bad well B03" in end["MESSAGE"] and "in step" in end["MESSAGE"]


@pytest.mark.systemd
def test_output_beyond_the_replay_is_in_the_journal_and_late_readers_are_told(service):
    # 8,000 numbered lines of 700 bytes (5.6 MB): more than the 4 MiB the daemon keeps, and
    # fewer lines than journald's rate limit lets through at the least (the unit disables it
    # where the manager can tell journald; this test's private manager cannot).
    code = "for i in range(8000):\n    print(f'line {i:06d} ' + 'x' * 688)\n"
    done = service.warmctl("submit", "-c", code)
    job_id = done.stdout.strip()
    assert service.warmctl("wait", job_id).returncode == 0
    late = service.warmctl("logs", job_id)
    assert late.returncode == 0
    assert "missed here" in late.stderr and f"journalctl --user-unit warmd.service JOB_ID={job_id}" in late.stderr
    assert late.stdout.endswith("line 007999 " + "x" * 688 + "\n")
    assert not late.stdout.startswith("line 000000")
    service.sd.sync_journal()
    found = service.sd.journalctl("--user-unit", "warmd.service", f"JOB_ID={job_id}", "JOB_STREAM=stdout",
                                  "-o", "cat")
    lines = found.stdout.splitlines()
    assert len(lines) == 8000 and lines[0].startswith("line 000000") and lines[-1].startswith("line 007999")


@pytest.mark.systemd
def test_stop_leaves_no_process_of_the_service_alive(service):
    sd = service.sd
    code = textwrap.dedent("""\
        import os, subprocess, sys, time
        stubborn = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                    "signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(300)")
        subprocess.Popen([sys.executable, "-c", stubborn])
        subprocess.Popen(["setsid", "sleep", "300"])   # its own session and process group
        if os.fork() == 0:                              # a grandchild that leaves its parent
            os.setsid()
            if os.fork() == 0:
                time.sleep(300)
            os._exit(0)
        print("children started", flush=True)
        time.sleep(300)
        """)
    # Not reconnecting: a client that did would start the service again through its socket.
    with service.client(reconnect=False) as client:
        future = client.run_code(code)
        _wait_for_output(future, "children started")
        main_pid = service.main_pid()
        procs = _processes(sd.cgroup_pids("warmd.service"))
        assert main_pid in {p.pid for p in procs}
        # daemon, two workers, the job's stubborn child, the setsid sleep, the escaped grandchild
        assert len(procs) >= 6, [p.cmdline() for p in procs]

        sd.systemctl("stop", "warmd.service")  # returns once systemd has stopped it

    assert alive(procs) == []
    assert service.state() == "inactive"
    assert sd.show("warmd.service", "Result") == "success"  # the daemon stopped cleanly, status 0

    assert service.ping()["pid"] not in {p.pid for p in procs}  # the next connection starts it
    assert service.state() == "active"
    sd.systemctl("stop", "warmd.service")
    sd.systemctl("start", "warmd.service")
    assert service.ping()["pid"] == service.main_pid()


def _ping_on(sock: socket.socket) -> dict:
    """Greet the daemon and ping it over an already connected socket."""
    sock.sendall(encode(hello("test", os.getpid())) + encode({"t": "ping", "req": 1}))
    reader = FrameReader()
    sock.settimeout(60)
    while True:
        data = sock.recv(65536)
        assert data, "the daemon hung up"
        reader.receive_data(data)
        while (frame := reader.next_frame()) is not None:
            if frame.type == "pong":
                return frame.header


@pytest.mark.systemd
def test_crash_keeps_the_socket_and_the_running_job_is_reported_lost(service):
    sd = service.sd
    with service.client() as client:
        future = client.run_code("import time\nprint('running', flush=True)\ntime.sleep(300)")
        job_id = future.job_id
        _wait_for_output(future, "running")
        crashed = service.main_pid()
        procs = _processes(sd.cgroup_pids("warmd.service"))
        restarts = service.restarts()
        inode = os.stat(service.socket).st_ino

        daemon = psutil.Process(crashed)
        os.kill(crashed, signal.SIGKILL)
        daemon.wait(30)  # systemd reaps it
        # systemd waits RestartSec=1s before it starts the daemon again; meanwhile the
        # socket stays and a client's connection waits in its backlog.
        waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        waiting.connect(str(service.socket))
        assert sd.show("warmd.service", "SubState") != "running"
        with waiting:
            pong = _ping_on(waiting)
    assert pong["pid"] != crashed and pong["pid"] == service.main_pid()
    assert service.restarts() == restarts + 1  # Restart=on-failure, not a new activation
    assert os.stat(service.socket).st_ino == inode
    assert sd.show("warmd.socket", "ActiveState") == "active"
    assert alive(procs) == []  # the crashed daemon's workers went with it

    attach = service.warmctl("attach", job_id)
    assert attach.returncode == 125, attach.stderr  # warmctl's status for a lost job
    assert "restarted" in attach.stderr
    waited = service.warmctl("wait", "--json", job_id)
    end = json.loads(waited.stdout)
    assert waited.returncode == 125 and end["state"] == "lost"
    assert end["error"]["type"] == "DaemonRestarted"


@pytest.mark.systemd
def test_restart_serves_clients_that_connect_while_it_restarts(service):
    sd = service.sd
    first = service.ping()["pid"]
    inode = os.stat(service.socket).st_ino
    with service.client() as client:
        # A job that ignores SIGINT and SIGTERM keeps the old daemon stopping for
        # cancel.terminate_grace (1 s): the window in which the client below connects.
        future = client.run_code("import signal, time\n"
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                 "print('running', flush=True)\ntime.sleep(300)")
        _wait_for_output(future, "running")
        sd.systemctl("restart", "--no-block", "warmd.service")
        wait_until(lambda: service.state() == "deactivating", 10, "the old daemon to be stopping")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as waiting:
            waiting.connect(str(service.socket))
            assert service.state() == "deactivating"  # connected while the old daemon stops
            pong = _ping_on(waiting)  # answered from the backlog by the new daemon
    assert pong["pid"] != first and pong["pid"] == service.main_pid()
    assert os.stat(service.socket).st_ino == inode
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE


@pytest.mark.systemd
def test_idle_exit_then_the_next_connection_starts_it_again(service):
    sd = service.sd
    service.configure("""\
        [daemon]
        idle_exit = 2
        [warmup]
        hooks = ["wdlinger:linger"]
        """)
    restarts = service.restarts()
    first = service.ping()["pid"]
    # Idle for 2 s: it stops accepting and sends STOPPING=1; its workers take 1 s to exit.
    wait_until(lambda: service.state() == "deactivating", 15, "the idle daemon to stop")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as racer:
        racer.connect(str(service.socket))
        assert service.state() == "deactivating"  # connected while the idle daemon exits
        pong = _ping_on(racer)  # the next activation answers it
    assert pong["pid"] != first and pong["pid"] == service.main_pid()
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE

    wait_until(lambda: service.state() == "inactive", 15, "the second daemon's idle exit")
    assert sd.show("warmd.service", "Result") == "success"
    assert sd.show("warmd.service", "ExecMainStatus") == "0"
    assert service.restarts() == restarts  # exit 0: a stop, not a failure to restart from
    assert service.ping()["started_by"] == "systemd"


@pytest.mark.systemd
def test_a_client_and_its_watch_carry_on_across_a_service_restart(service):
    """Socket activation keeps the socket: the client reconnects to the new daemon, its
    followed job ends as the restart ended it, its watch resyncs, and it submits again."""
    from warmd.client.watch import Disconnected, Reconnected, Snapshot
    with service.client() as client:
        events = client.watch()
        assert isinstance(next(events), Snapshot)
        future = client.run_code("import time\nprint('running', flush=True)\ntime.sleep(300)")
        _wait_for_output(future, "running")
        first = service.main_pid()
        service.sd.systemctl("restart", "warmd.service")
        seen = []
        for event in events:
            seen.append(event)
            if isinstance(event, Snapshot) and event.resync:
                break
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(timeout=60)  # a stopping daemon cancels what runs
        assert client.submit(sum, [4, 5]).result(timeout=60) == 9
        assert client.daemon_info["pid"] == service.main_pid() != first
    gone = next(e for e in seen if isinstance(e, Disconnected))
    back = next(e for e in seen if isinstance(e, Reconnected))
    assert gone.reconnecting and back.pid == service.main_pid()
    assert seen[-1].status.daemon["started_by"] == "systemd"


@pytest.fixture
def short_watchdog(service):
    """WatchdogSec=1 for this test (a drop-in), so the pings can be watched."""
    dropin = service.sd.unit_dir / "warmd.service.d" / "watchdog.conf"
    dropin.parent.mkdir(exist_ok=True)
    dropin.write_text("[Service]\nWatchdogSec=1\n")
    service.sd.systemctl("daemon-reload")
    yield service
    service.sd.systemctl("stop", "warmd.service")
    dropin.unlink()
    service.sd.systemctl("daemon-reload")


@pytest.mark.systemd
def test_watchdog_pings_while_serving_and_not_while_stopping(short_watchdog):
    service, sd = short_watchdog, short_watchdog.sd
    # A stop that takes longer than WatchdogSec: the job ignores SIGTERM for terminate_grace.
    service.configure("[cancel]\nterminate_grace = 2.0\n")
    pid = service.ping()["pid"]
    first = sd.show("warmd.service", "WatchdogTimestampMonotonic")
    wait_until(lambda: sd.show("warmd.service", "WatchdogTimestampMonotonic") != first, 5,
               "a WATCHDOG=1 from the daemon's loop")
    with service.client() as client:
        future = client.run_code("import signal, time\n"
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                 "print('running', flush=True)\ntime.sleep(300)")
        _wait_for_output(future, "running")
        assert service.main_pid() == pid  # pinged in time all along: never aborted
        sd.systemctl("stop", "warmd.service")
    # STOPPING=1 ended the pings; systemd did not count the 2 s drain as a hang.
    assert sd.show("warmd.service", "Result") == "success"


@pytest.mark.systemd
def test_units_pass_systemd_analyze_verify(private_systemd, tmp_path):
    sd = private_systemd
    args = ["systemd-analyze", "--user", "verify"]
    env = dict(sd.env)
    if shutil.which("man"):
        # Documentation=man:... must name real pages: offer ours as an installed man tree.
        for page in (REPO / "man").glob("*.[1-8]"):
            section = tmp_path / f"man{page.suffix[1:]}"
            section.mkdir(exist_ok=True)
            (section / page.name).symlink_to(page)
        env["MANPATH"] = str(tmp_path)
    else:
        args.append("--man=no")
    done = subprocess.run([*args, str(sd.unit_dir / "warmd.socket"), str(sd.unit_dir / "warmd.service")],
                          env=env, capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert [line for line in output.splitlines() if "warmd" in line] == []


def test_the_service_is_hardened_as_far_as_a_gpu_unit_allows(private_systemd):
    sd = private_systemd
    done = subprocess.run(["systemd-analyze", "security", "--user", "--offline=yes", "--no-pager",
                           str(sd.unit_dir / "warmd.service")], env=sd.env, capture_output=True,
                          text=True, timeout=60)
    output = done.stdout + done.stderr
    score = re.search(r"Overall exposure level for warmd.service: (\d+\.\d)", output)
    assert score, output[-3000:]
    assert float(score.group(1)) <= 6.5, output[-3000:]
    unit = (sd.unit_dir / "warmd.service").read_text()
    # What a GPU job needs stays open: its devices, run-time compiled code, the user's files.
    for kept_out in ("PrivateDevices", "DevicePolicy", "MemoryDenyWriteExecute", "ProtectHome",
                     "ProtectSystem", "ProtectClock"):
        assert f"\n{kept_out}=" not in unit, kept_out


def tcp_echo(data: bytes) -> bytes:
    """A job that talks TCP over loopback (an AF_INET socket) and back."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname()) as out:
            conn, _ = server.accept()
            with conn:
                out.sendall(data)
                return conn.recv(len(data))


def test_a_job_under_the_hardened_service_uses_processes_shared_memory_and_sockets(service):
    with service.client() as client:
        total, leftover, tracker = client.submit(helpers_jobs.shared_memory_and_pool, 20).result(timeout=60)
        assert total == sum(abs(i) for i in range(-20, 20))
        assert client.submit(tcp_echo, b"ping").result(timeout=60) == b"ping"
        import numpy as np
        sent = np.arange(1 << 20, dtype=np.float32)  # 4 MiB: in a sealed memfd, both ways
        assert np.array_equal(client.submit(np.negative, sent).result(timeout=60), -sent)


# ---------------------------------------------------------------- without systemd

def _run_warmctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "warmd.ctl", *args], env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def offline_env(tmp_path):
    """An environment with no user manager to reach (an empty runtime directory)."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    env.update(XDG_RUNTIME_DIR=str(run), XDG_CONFIG_HOME=str(tmp_path / "config"))
    return env


def test_packaged_units_are_the_ones_in_the_source_tree():
    for name in units.ALL_UNITS:
        packaged = (resources.files("warmd") / "unitfiles" / name).read_text()
        assert packaged == (UNIT_SOURCE / name).read_text()


def test_unit_files_say_what_the_service_needs():
    socket_unit = (UNIT_SOURCE / "warmd.socket").read_text().splitlines()
    service_unit = (UNIT_SOURCE / "warmd.service").read_text().splitlines()
    assert "ListenStream=%t/warmd.sock" in socket_unit and "SocketMode=0600" in socket_unit
    for setting in ("Type=notify", "Restart=on-failure", "KillMode=mixed"):
        assert setting in service_unit
    assert any(line.startswith("WatchdogSec=") for line in service_unit)


def test_install_units_writes_both_units_for_this_environment(tmp_path, offline_env):
    target = tmp_path / "units"
    done = _run_warmctl(offline_env, "install-units", "--user-dir", str(target))
    assert done.returncode == 0, done.stderr
    warmd_script = Path(os.path.abspath(sys.executable)).parent / "warmd"  # a venv's, not resolved
    assert warmd_script.exists()
    service = (target / "warmd.service").read_text()
    assert f"ExecStart={warmd_script}\n" in service
    for name in units.UNIT_NAMES:
        text = (target / name).read_text()
        assert text.startswith(units.MARKER)
        # Apart from the header and ExecStart=, the text is the shipped unit, unchanged.
        body = [line for line in text.splitlines()[2:] if not line.startswith("ExecStart=")]
        source = [line for line in (UNIT_SOURCE / name).read_text().splitlines()
                  if not line.startswith("ExecStart=")]
        assert body == source
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o644
    lines = done.stdout.splitlines()
    assert lines[:2] == [f"wrote {target / 'warmd.socket'}",
                         f"wrote {target / 'warmd.service'} (ExecStart={warmd_script})"]
    assert lines[-3:] == ["  systemctl --user daemon-reload",
                          "  systemctl --user enable --now warmd.socket",
                          "  systemctl --user status warmd.socket"]


def test_install_units_for_openhcs_refuses_where_openhcs_is_missing(tmp_path, offline_env):
    """--openhcs writes nothing, and says why, in an environment without OpenHCS (the
    OpenHCS environment's case is in test_openhcs_endpoint)."""
    try:
        import openhcs  # noqa: F401
        pytest.skip("OpenHCS is importable here")
    except ImportError:
        pass
    target = tmp_path / "units"
    done = _run_warmctl(offline_env, "install-units", "--openhcs", "--user-dir", str(target))
    assert done.returncode == 70 and "OpenHCS is not importable here" in done.stderr
    assert not target.exists() or not list(target.iterdir())


def test_install_units_defaults_to_the_xdg_user_unit_directory(tmp_path, offline_env):
    done = _run_warmctl(offline_env, "install-units")
    assert done.returncode == 0, done.stderr
    default = tmp_path / "config" / "systemd" / "user"
    assert (default / "warmd.socket").exists() and (default / "warmd.service").exists()
    assert "note:" not in done.stdout  # the directory systemd reads: nothing to point out


def test_uninstall_units_removes_the_units_and_their_enable_links(tmp_path, offline_env):
    target = tmp_path / "units"
    assert _run_warmctl(offline_env, "install-units", "--user-dir", str(target)).returncode == 0
    (target / "sockets.target.wants").mkdir()
    (target / "sockets.target.wants" / "warmd.socket").symlink_to(target / "warmd.socket")
    (target / "other.service").write_text("[Service]\nExecStart=/bin/true\n")

    done = _run_warmctl(offline_env, "uninstall-units", "--user-dir", str(target))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in target.rglob("*")) == ["other.service", "sockets.target.wants"]
    assert "nothing was stopped" in done.stdout
    again = _run_warmctl(offline_env, "uninstall-units", "--user-dir", str(target))
    assert again.returncode == 0 and "no warmd units" in again.stdout


def test_units_not_written_by_install_units_are_left_alone(tmp_path, offline_env):
    target = tmp_path / "units"
    target.mkdir()
    mine = "[Service]\nExecStart=/opt/warmd/bin/warmd --workers 4\n"
    (target / "warmd.service").write_text(mine)
    for verb in ("install-units", "uninstall-units"):
        done = _run_warmctl(offline_env, verb, "--user-dir", str(target))
        assert done.returncode == 70 and "not written by warmctl install-units" in done.stderr
    assert (target / "warmd.service").read_text() == mine
    assert not (target / "warmd.socket").exists()


def test_exec_start_without_a_console_script_runs_python_m_warmd(tmp_path):
    python = tmp_path / "env with space" / "bin" / "python"
    assert units.warmd_command(str(python)) == [str(python), "-m", "warmd"]
    line = units.exec_line([str(python), "-m", "warmd"])
    assert line == f'"{python}" -m warmd'
    assert units.exec_line(["/opt/100%/$HOME/warmd"]) == '"/opt/100%%/$$HOME/warmd"'


def test_notifier_sends_each_message_only_where_it_means_something():
    sent: list[str] = []
    n = Notifier({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}, sent.append)
    assert n.watchdog_interval == 15.0
    n.extend_timeout(90)                     # starting: extends TimeoutStartSec
    n.watchdog()                             # not serving yet: no ping
    n.ready("0 workers warm (CPU), 0 spares, 2 warming, 0 running, 0 queued, 0 done")
    n.extend_timeout(90)                     # serving: would stretch RuntimeMaxSec, so not sent
    n.watchdog()
    n.status("1 worker warm (CPU), 1 spare, 0 running, 0 queued, 0 done")
    n.status("1 worker warm (CPU), 1 spare, 0 running, 0 queued, 0 done")  # unchanged: not resent
    n.stopping("stopping (SIGTERM)", 17)
    n.watchdog()                             # stopping: no more pings
    assert [m.split("\n")[0] for m in sent] == [
        "EXTEND_TIMEOUT_USEC=90000000", "READY=1", "WATCHDOG=1",
        "STATUS=1 worker warm (CPU), 1 spare, 0 running, 0 queued, 0 done", "STOPPING=1"]
    assert sent[-1] == "STOPPING=1\nSTATUS=stopping (SIGTERM)\nEXTEND_TIMEOUT_USEC=17000000"
    quiet: list[str] = []
    off = Notifier({}, quiet.append)
    off.ready("x")
    assert quiet == [] and off.watchdog_interval is None


def test_journal_handler_sends_the_structured_fields():
    sent: list[tuple[str, dict]] = []
    handler = StructuredJournalHandler(lambda message, **fields: sent.append((message, fields)), "warmd")
    log = logging.Logger("warmd-test")
    log.addHandler(handler)
    log.info("job %s %s", "ab12", "succeeded",
             extra={"JOB_ID": "ab12", "JOB_STATE": "succeeded", "WORKER_PID": 42, "CLIENT_PID": None,
                    "DEVICE": 0})
    log.warning("plain")
    (message, fields), (_, plain) = sent
    assert message == "job ab12 succeeded"
    assert fields["JOB_ID"] == "ab12" and fields["JOB_STATE"] == "succeeded"
    assert fields["WORKER_PID"] == "42" and "CLIENT_PID" not in fields  # None is not sent
    assert fields["DEVICE"] == "0"  # any field given with extra= goes along
    assert fields["PRIORITY"] == "6" and fields["SYSLOG_IDENTIFIER"] == "warmd"
    assert all(name.isupper() for name in fields)  # journald drops any other field name
    assert plain["PRIORITY"] == "4" and "JOB_ID" not in plain


def test_ledger_reports_a_dead_daemons_running_jobs_as_lost(tmp_path):
    sock = tmp_path / "warmd.sock"
    job = Job("ab12cd34", "code", "-c sleep", {}, b"", 4321, None)
    job.state, job.started, job.worker_pid = "running", 1.0, 999
    done = Job("ff", "code", "x", {}, b"", None, None)
    done.state, done.started, done.worker_pid = "running", 1.5, 997
    dead = Ledger(sock.with_name("warmd.sock.jobs"), {"pid": 2 ** 22 + 1, "created": 0.0})  # gone
    waiting = Job("cc", "code", "y", {}, b"", None, None)
    dead.queued(job)
    dead.started(job)
    dead.queued(waiting)
    dead.started(done)
    dead.finished(done)
    with open(dead.path, "ab") as f:
        f.write(b'{"start": {"id": "cut')  # a line the crash cut short
    living = Ledger.beside(sock)
    other = Job("ee", "code", "x", {}, b"", None, None)
    other.state, other.started, other.worker_pid = "running", 2.0, 998
    living.started(other)
    assert dead.path.exists() and living.path.exists()

    lost, queued = sorted(Ledger(sock.with_name("warmd.sock.jobs"), {"pid": 1, "created": 0.0})
                          .recover(125), key=lambda j: j.id != "ab12cd34")
    assert lost.id == "ab12cd34" and lost.state == LOST and lost.worker_pid == 999
    assert queued.id == "cc" and "was queued" in queued.done_header["error"]["message"]
    assert lost.done_header["exit_status"] == 125
    assert "restarted" in lost.done_header["error"]["message"]
    assert not dead.path.exists()  # taken once
    assert Ledger(sock.with_name("warmd.sock.jobs"), {"pid": 1, "created": 0.0}).recover(125) == []
    living.finished(other)
    living.close()
    assert not living.path.exists()  # a clean exit leaves no file


def test_ledger_lines_held_for_a_batch_are_written_once_and_compaction_drops_ended_ones(tmp_path):
    sock = tmp_path / "warmd.sock"
    ledger = Ledger(sock.with_name("warmd.sock.jobs"), {"pid": 2 ** 22 + 1, "created": 0.0})
    first, second = (Job(i, "code", "x", {}, b"", None, None) for i in ("aa", "bb"))
    ledger.hold()
    ledger.queued(first)
    ledger.queued(second)
    assert ledger.news and not ledger.path.exists()  # held: nothing written yet
    ledger.flush()
    assert not ledger.news and len(ledger.path.read_bytes().splitlines()) == 3  # owner + 2
    ledger.hold()
    ledger.started(first)
    assert not ledger.news  # a start after the queue line names no new job
    ledger.flush()
    # compaction empties the file once nothing is open, held lines of ended jobs included
    ledger._lines = 10**6
    ledger.hold()
    ledger.finished(first)
    ledger.finished(second)
    ledger.flush()
    lines = ledger.path.read_bytes().splitlines()
    assert len(lines) == 1 and b'"owner"' in lines[0]
    assert Ledger(sock.with_name("warmd.sock.jobs"), {"pid": 1, "created": 0.0}).recover(125) == []
