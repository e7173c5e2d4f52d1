"""Another local user must not be able to answer as a victim's warmd.

The attacks run as they would on a shared machine: as root, the test becomes
two unprivileged users with setpriv. The attacker squats on the victim's
default socket directory (/tmp/warmd-$UID, used when XDG_RUNTIME_DIR is unset),
or plants a symbolic link there, and serves a fake daemon whose "result" runs
code when unpickled. The victim's warmctl, its Python client and its daemon must
all refuse: nothing sent, nothing unpickled, nothing created in the attacker's
directory.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent / "daemon" / "warmd"
ATTACKER, VICTIM = 64101, 64102


def as_user(uid: int) -> list[str]:
    # Through env(1): setpriv execs its command with root's capabilities still in effect,
    # and env's own exec then runs the program as nothing more than the user.
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
            "/usr/bin/env"]


def _python_for_others(lib: Path) -> tuple[str | None, str]:
    """A Python that other users may run and that imports warmd's dependencies (this one, or
    Debian's where this one lives in root's home), and why not if none does."""
    why = ""
    for python in dict.fromkeys([sys.executable, "/usr/bin/python3"]):
        probe = subprocess.run([*as_user(VICTIM), f"PYTHONPATH={lib}", python, "-c",
                                "import warmd.client.sync, warmd.daemon.main, cloudpickle, psutil"],
                               capture_output=True, text=True, cwd="/")
        if probe.returncode == 0:
            return python, ""
        why = probe.stderr.strip().splitlines()[-1:] or [f"exit status {probe.returncode}"]
        why = f"{python}: {why[0]}"
    return None, why


@pytest.fixture
def users():
    if os.getuid() != 0:
        pytest.skip("needs root, to act as two other users with setpriv")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed (Debian: util-linux)")
    world = Path(tempfile.mkdtemp(prefix="wdsec-", dir="/tmp"))
    world.chmod(0o755)
    # warmd and the squatter where both users can read them, whatever the checkout's path.
    lib = world / "lib"
    shutil.copytree(PACKAGE, lib / "warmd", ignore=shutil.ignore_patterns("__pycache__", "unitfiles"))
    shutil.copy(HERE / "helpers_squatter.py", lib)
    python, why = _python_for_others(lib)
    if python is None:
        shutil.rmtree(world, ignore_errors=True)
        pytest.skip(f"no Python that other users can run imports warmd's dependencies ({why}); "
                    "on Debian: apt-get install python3-cloudpickle python3-psutil")
    home = world / "victim"
    home.mkdir(mode=0o700)
    os.chown(home, VICTIM, VICTIM)
    target = Path(f"/tmp/warmd-{VICTIM}")
    _remove(target)
    u = Users(world, home, target, python, lib)
    yield u
    u.stop_squatter()
    for uid in (ATTACKER, VICTIM):  # an autostarted daemon and its workers, whatever happened
        subprocess.run(["pkill", "-KILL", "-U", str(uid)], capture_output=True)
    _remove(target)
    shutil.rmtree(world, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


class Users:
    def __init__(self, world: Path, home: Path, target: Path, python: str, lib: Path) -> None:
        self.world = world
        self.python = python
        self.lib = lib
        self.home = home
        self.target = target            # the victim's default socket directory
        self.marker = home / "pwned"    # created if the victim unpickles the attacker's result
        self.squatter: subprocess.Popen | None = None
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("XDG_RUNTIME_DIR", "WARMD_SOCKET", "WARMD_CONFIG")}
        self.env.update(HOME=str(home), XDG_STATE_HOME=str(home / "state"),
                        XDG_CONFIG_HOME=str(home / "config"), PYTHONPATH=str(lib))

    def squat(self, socket_path: Path) -> None:
        """Start the attacker's fake daemon on ``socket_path``; returns once it listens."""
        self.squatter = subprocess.Popen(
            [*as_user(ATTACKER), self.python, str(self.lib / "helpers_squatter.py"), str(socket_path),
             str(self.marker)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=self.env, cwd="/")
        assert self.squatter.stdout.readline().strip() == "ready"

    def stop_squatter(self) -> dict | None:
        """What reached the fake daemon: connections, bytes, frame types."""
        if self.squatter is None:
            return None
        out, _ = self.squatter.communicate(input="", timeout=30)
        self.squatter = None
        return json.loads(out.strip().splitlines()[-1]) if out.strip() else None

    def victim(self, *argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user(VICTIM), *argv], capture_output=True, text=True, timeout=60,
                              env=env or self.env, cwd=self.home)

    def warmctl(self, *args: str) -> subprocess.CompletedProcess:
        return self.victim(self.python, "-m", "warmd.ctl", *args)

    def python_client(self) -> subprocess.CompletedProcess:
        code = ("import warmd\n"
                "try:\n"
                "    with warmd.Client() as c:\n"
                "        print('result', c.submit(len, [1]).result(timeout=20))\n"
                "except warmd.WarmdError as exc:\n"
                "    print('refused:', exc)\n"
                "    raise SystemExit(3)\n")
        return self.victim(self.python, "-c", code)

    def daemon(self) -> subprocess.CompletedProcess:
        return self.victim(self.python, "-m", "warmd", "--workers", "1", "--spares", "0")


def _assert_refused(run: subprocess.CompletedProcess, *words: str) -> None:
    text = run.stdout + run.stderr
    assert run.returncode not in (0, None), text
    for word in words:
        assert word in text, text


def test_a_squatted_socket_directory_is_refused(users):
    sock = users.target / "warmd.sock"
    users.squat(sock)  # the attacker's own directory, open to all, at the victim's path
    _assert_refused(users.warmctl("exec", "-c", "print('hi')"), "refusing", f"uid {ATTACKER}")
    _assert_refused(users.python_client(), "refused:", "refusing", f"uid {ATTACKER}")
    run = users.daemon()
    _assert_refused(run, "refusing", f"uid {ATTACKER}")
    assert run.returncode == 78  # EX_CONFIG: systemd does not restart it in a loop
    seen = users.stop_squatter()
    assert seen == {"connections": 0, "bytes": 0, "frames": []}  # nothing was sent
    assert not users.marker.exists()  # nothing was unpickled
    assert sorted(os.listdir(users.target)) == ["warmd.sock"]  # the daemon made nothing there


def test_a_symlinked_socket_directory_is_refused(users):
    planted = users.world / "attacker"
    planted.mkdir()
    os.chown(planted, ATTACKER, ATTACKER)
    sock = planted / "warmd.sock"
    users.squat(sock)
    users.target.symlink_to(planted)  # /tmp/warmd-$UID -> the attacker's directory
    os.lchown(users.target, ATTACKER, ATTACKER)
    _assert_refused(users.warmctl("exec", "-c", "print('hi')"), "symbolic link")
    _assert_refused(users.python_client(), "refused:", "symbolic link")
    _assert_refused(users.daemon(), "symbolic link")
    assert users.stop_squatter() == {"connections": 0, "bytes": 0, "frames": []}
    assert not users.marker.exists()
    assert sorted(os.listdir(planted)) == ["warmd.sock"]


def test_a_daemon_of_another_user_is_refused_after_connecting(users):
    # The directory and the socket file are the victim's, yet the process listening is the
    # attacker's (as if a socket had been handed over): only SO_PEERCRED can tell.
    run_dir = users.world / "victim-run"
    run_dir.mkdir(mode=0o777)
    run_dir.chmod(0o777)
    sock = run_dir / "warmd.sock"
    users.squat(sock)
    os.chown(sock, VICTIM, VICTIM)
    os.chown(run_dir, VICTIM, VICTIM)
    run_dir.chmod(0o700)
    env = dict(users.env, WARMD_SOCKET=str(sock))
    for argv in ([users.python, "-m", "warmd.ctl", "exec", "-c", "print('hi')"],
                 [users.python, "-m", "warmd.ctl", "ping"]):
        _assert_refused(users.victim(*argv, env=env), f"runs as uid {ATTACKER}", "nothing was sent")
    seen = users.stop_squatter()
    assert seen["connections"] == 2 and seen["bytes"] == 0 and seen["frames"] == []
    assert not users.marker.exists()


def test_the_victims_own_daemon_still_serves(users):
    # The checks refuse other users, not the user: with the squatter gone, a fresh
    # /tmp/warmd-$UID is made 0700 and an autostarted daemon serves the victim.
    run = users.warmctl("exec", "-c", "print('hello from my own daemon')")
    try:
        assert run.returncode == 0, run.stderr
        assert "hello from my own daemon" in run.stdout
        st = users.target.stat()
        assert st.st_uid == VICTIM and (st.st_mode & 0o777) == 0o700
    finally:
        users.warmctl("shutdown")


def test_a_directory_others_can_write_to_is_refused_by_client_and_daemon(make_daemon):
    # No second user needed: a socket directory writable by others is refused as such.
    d = make_daemon(start=False)
    run_dir = d.socket.parent
    run_dir.mkdir(mode=0o700, exist_ok=True)
    run_dir.chmod(0o777)
    started = subprocess.run([sys.executable, "-m", "warmd", "--socket", str(d.socket)], env=d.env,
                             capture_output=True, text=True, timeout=60)
    assert started.returncode == 78 and "other users can write to it" in started.stderr
    assert os.listdir(run_dir) == []
    # A socket planted there by hand (this test plays the other user) is not connected to.
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(d.socket))
    listener.listen()
    listener.setblocking(False)
    with listener:
        run = d.warmctl("ping")
        assert run.returncode == 69 and "other users can write to it" in run.stderr
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected


def test_a_symlink_in_place_of_the_socket_is_refused(make_daemon, tmp_path):
    d = make_daemon(start=False)
    d.socket.parent.mkdir(mode=0o700, exist_ok=True)
    elsewhere = tmp_path / "elsewhere.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(elsewhere))
    listener.listen()
    d.socket.symlink_to(elsewhere)
    with listener:
        run = d.warmctl("ping")
        assert run.returncode == 69 and "symbolic link" in run.stderr
        started = subprocess.run([sys.executable, "-m", "warmd", "--socket", str(d.socket)],
                                 env=d.env, capture_output=True, text=True, timeout=60)
        assert started.returncode == 78 and "symbolic link" in started.stderr
        assert d.socket.is_symlink()  # left as it was: the user decides what to remove
