"""Shared fixtures: a real daemon per test, on a private socket, torn down completely."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent


def short_tmpdir(prefix: str) -> Path:
    # AF_UNIX paths are limited to 108 bytes: keep socket directories short.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


class Daemon:
    """A warmd daemon started by hand (not detached) for one test."""

    def __init__(self, root: Path, config: str = "", args: tuple[str, ...] = ()) -> None:
        self.root = root
        self.socket = root / "run" / "warmd.sock"
        self.config = root / "warmd.toml"
        self.config.write_text(config)
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.env = dict(os.environ, XDG_RUNTIME_DIR=str(root / "run"),
                        XDG_STATE_HOME=str(root / "state"), XDG_CONFIG_HOME=str(root / "config"),
                        WARMD_SOCKET=str(self.socket), PYTHONUNBUFFERED="1",
                        # workers import test helpers (warm-up hooks) from tests/
                        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "tests"),
                                                                 os.environ.get("PYTHONPATH")])))
        for key in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID", "WARMD_CONFIG"):
            self.env.pop(key, None)

    def start(self) -> "Daemon":
        (self.root / "run").mkdir(mode=0o700, exist_ok=True)
        read_end, write_end = os.pipe()
        self.log = open(self.root / "daemon.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "warmd", "--socket", str(self.socket), "--config", str(self.config),
             "--ready-fd", str(write_end), *self.args],
            env=self.env, pass_fds=(write_end,), stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as ready:
            answer = ready.read().decode().strip()  # the daemon writes once it serves the socket
        if answer != "ok":
            self.proc.wait(timeout=30)
            raise RuntimeError(f"daemon did not start: {answer!r}\n{self.log_text()}")
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        path = self.root / "daemon.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def client(self, **kwargs):
        import warmd
        kwargs.setdefault("autostart", False)
        return warmd.Client(self.socket, **kwargs)

    def warmctl(self, *args: str, timeout: float = 60, input: str | None = None,
                **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "warmd.ctl", "--socket", str(self.socket),
                               "--no-autostart", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, input=input, **kwargs)

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        if self.proc is None:
            return
        leftovers = self.descendants()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for p in leftovers:  # never leave a test's processes behind, whatever happened
            try:
                p.kill()
            except psutil.Error:
                pass
        self.log.close()


@pytest.fixture
def make_daemon():
    started: list[Daemon] = []
    roots: list[Path] = []

    def make(config: str = "", *args: str, start: bool = True) -> Daemon:
        root = short_tmpdir("wd-")
        roots.append(root)
        d = Daemon(root, config, args)
        started.append(d)
        return d.start() if start else d

    yield make
    for d in started:
        d.stop()
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def daemon(make_daemon) -> Daemon:
    return make_daemon()
