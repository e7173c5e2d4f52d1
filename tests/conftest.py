"""Shared fixtures: a real daemon per test, on a private socket, torn down completely."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from warmd.testing import LocalDaemon

REPO = Path(__file__).resolve().parent.parent


def short_tmpdir(prefix: str) -> Path:
    # AF_UNIX paths are limited to 108 bytes: keep socket directories short.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


class Daemon(LocalDaemon):
    """A daemon for one test, with the test helpers importable by its workers."""

    def __init__(self, root: Path, config: str = "", args: tuple[str, ...] = ()) -> None:
        super().__init__(root, config, args, pythonpath=(REPO / "tests",))

    def warmctl(self, *args: str, timeout: float = 60, input: str | None = None,
                **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "warmd.ctl", "--socket", str(self.socket),
                               "--no-autostart", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, input=input, **kwargs)


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
