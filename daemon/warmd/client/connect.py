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

from ..credentials import peer_credentials
from ..errors import ConfigError, DaemonUnavailable, UnsafePath
from ..paths import (check_socket_entry, default_socket, entry, open_private_dir, open_private_file,
                     state_dir, through)

_GONE = (errno.ENOENT, errno.ECONNREFUSED)


def socket_path(path: str | os.PathLike | None) -> Path:
    return Path(path) if path else default_socket()


def connect(path: Path, autostart: bool, daemon_args: list[str] | None = None) -> socket.socket:
    """A connected socket to the daemon at ``path``, starting one if allowed and needed.

    Before anything is sent, the socket's directory and the socket itself must be
    the user's alone, and the process listening must run as the user (UnsafePath).
    """
    try:
        return _connect(path)
    except OSError as exc:
        if exc.errno not in _GONE:
            raise _unavailable(path, exc) from None
        if not autostart:
            raise DaemonUnavailable(f"no warmd daemon answers on {path}: start one with "
                                    "'systemctl --user start warmd.socket' or 'warmd', "
                                    "or drop --no-autostart") from None
    dir_fd = open_private_dir(path.parent, create=True)
    try:
        with _lock(dir_fd, path.with_name(path.name + ".lock")):
            try:
                return _connect(path)  # someone else started it while we waited for the lock
            except OSError as exc:
                if exc.errno not in _GONE:
                    raise _unavailable(path, exc) from None
            try:
                start_daemon(path, daemon_args or [])
            except DaemonUnavailable as failed:
                try:
                    return _connect(path)  # a daemon started by hand won the race: use it
                except OSError:
                    raise failed from None  # why ours did not start, not that nobody answers
            try:
                return _connect(path)
            except OSError as exc:
                raise _unavailable(path, exc) from None
    finally:
        os.close(dir_fd)


def _connect(path: Path) -> socket.socket:
    """Connect through the checked directory; OSError ENOENT or ECONNREFUSED when nobody is there."""
    dir_fd = open_private_dir(path.parent)
    if dir_fd is None:
        raise FileNotFoundError(errno.ENOENT, "no such directory", str(path.parent))
    try:
        st = entry(dir_fd, path.name)
        if st is None:
            raise FileNotFoundError(errno.ENOENT, "no such socket", str(path))
        check_socket_entry(path, st)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(through(dir_fd, path.name))
            check_peer(sock, path)
        except BaseException:
            sock.close()
            raise
        return sock
    finally:
        os.close(dir_fd)


def check_peer(sock: socket.socket, path: Path) -> None:
    """The process behind the socket must be the user's own: nothing goes to anyone else."""
    pid, uid, _ = peer_credentials(sock)
    if uid != os.getuid():
        raise UnsafePath(f"refusing the daemon at {path}: it runs as uid {uid} (pid {pid}), not as "
                         f"you (uid {os.getuid()}), so nothing was sent to it; stop it or choose "
                         "another socket (--socket, WARMD_SOCKET or XDG_RUNTIME_DIR)")


def _unavailable(path: Path, exc: OSError) -> DaemonUnavailable:
    hint = ""
    if exc.errno in (errno.EACCES, errno.EPERM):
        hint = " (the socket belongs to another user: each user runs their own warmd)"
    return DaemonUnavailable(f"cannot connect to warmd at {path}: {exc.strerror}{hint}")


class _lock:
    """flock on the autostart lock file, opened inside the checked socket directory."""

    def __init__(self, dir_fd: int, path: Path) -> None:
        self.dir_fd = dir_fd
        self.path = path

    def __enter__(self) -> None:
        self.fd = open_private_file(self.dir_fd, self.path.name, os.O_RDWR, self.path)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def log_file() -> Path:
    return state_dir() / "warmd.log"


def start_daemon(path: Path, daemon_args: list[str]) -> None:
    """Start a detached daemon on ``path`` and return once it serves the socket."""
    log_path = log_file()
    log_dir = open_private_dir(log_path.parent, create=True)
    try:
        log_fd = open_private_file(log_dir, log_path.name, os.O_WRONLY | os.O_APPEND, log_path)
    finally:
        os.close(log_dir)
    read_end, write_end = os.pipe()
    try:
        with os.fdopen(log_fd, "ab") as log, open(os.devnull, "rb") as devnull:
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
    if answer.startswith("config-error: "):
        raise ConfigError(f"could not start warmd on {path}: its configuration is invalid:\n"
                          f"{answer.removeprefix('config-error: ')}")
    if answer != "ok":
        reason = answer.removeprefix("error: ") if answer else "it exited before serving the socket"
        raise DaemonUnavailable(f"could not start warmd on {path}: {reason} (log: {log_path})")
