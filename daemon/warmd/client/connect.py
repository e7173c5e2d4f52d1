"""Reaching the daemon: connect, or start one (the embedded default) and connect.

Autostart takes a lock beside the socket so that clients starting at the same
time make one daemon; the new daemon tells its starter through a pipe when the
socket is served, so nobody polls.
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import subprocess
import sys
from pathlib import Path

from ..errors import DaemonUnavailable
from ..paths import default_socket, ensure_private_dir, state_dir

_GONE = (errno.ENOENT, errno.ECONNREFUSED)


def socket_path(path: str | os.PathLike | None) -> Path:
    return Path(path) if path else default_socket()


def connect(path: Path, autostart: bool, daemon_args: list[str] | None = None) -> socket.socket:
    """A connected socket to the daemon at ``path``, starting one if allowed and needed."""
    try:
        return _connect(path)
    except OSError as exc:
        if exc.errno not in _GONE:
            raise _unavailable(path, exc) from None
        if not autostart:
            raise DaemonUnavailable(f"no warmd daemon answers on {path}: start one with "
                                    "'systemctl --user start warmd.socket' or 'warmd', "
                                    "or drop --no-autostart") from None
    ensure_private_dir(path.parent)
    with _lock(path.with_name(path.name + ".lock")):
        try:
            return _connect(path)  # someone else started it while we waited for the lock
        except OSError as exc:
            if exc.errno not in _GONE:
                raise _unavailable(path, exc) from None
        try:
            start_daemon(path, daemon_args or [])
        except DaemonUnavailable:
            try:
                return _connect(path)  # a daemon started by hand won the race: use it
            except OSError:
                raise
        try:
            return _connect(path)
        except OSError as exc:
            raise _unavailable(path, exc) from None


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except BaseException:
        sock.close()
        raise
    return sock


def _unavailable(path: Path, exc: OSError) -> DaemonUnavailable:
    hint = ""
    if exc.errno in (errno.EACCES, errno.EPERM):
        hint = " (the socket belongs to another user: each user runs their own warmd)"
    return DaemonUnavailable(f"cannot connect to warmd at {path}: {exc.strerror}{hint}")


class _lock:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def log_file() -> Path:
    return state_dir() / "warmd.log"


def start_daemon(path: Path, daemon_args: list[str]) -> None:
    """Start a detached daemon on ``path`` and return once it serves the socket."""
    log_path = log_file()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    try:
        with open(log_path, "ab") as log, open(os.devnull, "rb") as devnull:
            starter = subprocess.Popen(
                [sys.executable, "-m", "warmd", "--socket", str(path), "--detach",
                 "--ready-fd", str(write_end), *daemon_args],
                stdin=devnull, stdout=log, stderr=log, pass_fds=(write_end,), close_fds=True)
        os.close(write_end)
        write_end = -1
        starter.wait()  # the starter forks the daemon off and exits at once
        with os.fdopen(read_end, "rb") as ready:
            read_end = -1
            answer = ready.read().decode(errors="replace").strip()
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
    if answer != "ok":
        reason = answer.removeprefix("error: ") if answer else "it exited before serving the socket"
        raise DaemonUnavailable(f"could not start warmd on {path}: {reason} (log: {log_path})")
