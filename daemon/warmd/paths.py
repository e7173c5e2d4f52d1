"""Where warmd keeps its socket, its config and its logs (XDG rules), and how it opens them safely.

A connection to the socket runs code as the user, so a socket that another local
user controls is a way into the account. Every path warmd puts its socket, lock
or log in is checked without following links, on the open descriptor (no window
between the check and the use): a real directory owned by the user that nobody
else can write to, and inside it entries the user owns. The fallback directory
``/tmp/warmd-$UID`` (no ``XDG_RUNTIME_DIR``) lives where anyone can create names,
so it must be mode 0700 exactly.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import UnsafePath

SOCKET_NAME = "warmd.sock"
SOCKET_HELP = ("default: $WARMD_SOCKET, else $XDG_RUNTIME_DIR/warmd.sock, "
               "else /tmp/warmd-$UID/warmd.sock")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def runtime_dir() -> Path:
    """$XDG_RUNTIME_DIR, else a private /tmp/warmd-$UID."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg)
    return fallback_runtime_dir()


def fallback_runtime_dir() -> Path:
    return Path(f"/tmp/warmd-{os.getuid()}")


def default_socket() -> Path:
    env = os.environ.get("WARMD_SOCKET")
    if env:
        return Path(env)
    return runtime_dir() / SOCKET_NAME


def _advice(path: Path) -> str:
    if path == fallback_runtime_dir():
        return (f"remove {path} (ask its owner or an administrator if it is not yours), or set "
                "XDG_RUNTIME_DIR or WARMD_SOCKET to a directory of your own")
    return "choose a socket in a directory of your own (--socket, WARMD_SOCKET or XDG_RUNTIME_DIR)"


def open_private_dir(path: Path, *, create: bool = False) -> int | None:
    """An O_DIRECTORY descriptor for ``path``, checked on that descriptor.

    Refuses (UnsafePath) a symbolic link, a non-directory, a directory another
    user owns or can write to, and for ``/tmp/warmd-$UID`` any group or other
    permission. With ``create``, a missing directory is made 0700 first;
    without, a missing one gives None.
    """
    path = Path(os.path.abspath(path))
    if create:
        try:
            os.makedirs(path, mode=0o700)
        except FileExistsError:
            pass
    try:
        fd = os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        if create:
            raise UnsafePath(f"{path} vanished while warmd created it; try again") from None
        return None
    except OSError as exc:
        # O_NOFOLLOW with O_DIRECTORY fails a symbolic link with ENOTDIR (or ELOOP).
        if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and path.is_symlink()):
            raise UnsafePath(f"refusing {path}: it is a symbolic link, which another user may have "
                             f"planted; {_advice(path)}") from None
        if exc.errno == errno.ENOTDIR:
            raise UnsafePath(f"refusing {path}: it is not a directory; {_advice(path)}") from None
        raise UnsafePath(f"cannot open {path}: {exc.strerror}") from None
    try:
        _check_dir(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_dir(path: Path, st: os.stat_result) -> None:
    uid = os.getuid()
    if st.st_uid != uid:
        raise UnsafePath(f"refusing {path}: it belongs to uid {st.st_uid}, not to you (uid {uid}), "
                         f"so another user could answer as warmd there; {_advice(path)}")
    mode = stat.S_IMODE(st.st_mode)
    if path == fallback_runtime_dir() and mode & 0o077:
        raise UnsafePath(f"refusing {path}: it is open to other users (mode {mode:o}); "
                         f"run 'chmod 700 {path}'")
    if mode & 0o022:
        raise UnsafePath(f"refusing {path}: other users can write to it (mode {mode:o}), so they "
                         f"could replace what warmd keeps there; run 'chmod go-w {path}' or "
                         f"{_advice(path)}")


def entry(dir_fd: int, name: str) -> os.stat_result | None:
    """What ``name`` in the directory is, without following a link (None if missing)."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def check_socket_entry(path: Path, st: os.stat_result) -> None:
    """``path`` (as ``entry`` saw it) must be a socket of this user's."""
    if not stat.S_ISSOCK(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a socket"
        raise UnsafePath(f"refusing {path}: it is {kind}; remove it, or {_advice(path.parent)}")
    if st.st_uid != os.getuid():
        raise UnsafePath(f"refusing {path}: the socket belongs to uid {st.st_uid}, not to you "
                         f"(uid {os.getuid()}); {_advice(path.parent)}")


def through(dir_fd: int, name: str) -> str:
    """A name for ``name`` inside the open directory: binding or connecting through it uses
    the directory that was checked, whatever happens to the path meanwhile."""
    return f"/proc/self/fd/{dir_fd}/{name}"


def open_private_file(dir_fd: int, name: str, flags: int, where: Path) -> int:
    """Open (creating 0600) a regular file of this user's inside a checked directory."""
    try:
        fd = os.open(name, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"refusing {where}: it is a symbolic link; remove it") from None
        raise UnsafePath(f"cannot open {where}: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
        os.close(fd)
        raise UnsafePath(f"refusing {where}: it is not a regular file of yours (uid {st.st_uid}); "
                         "remove it")
    return fd


def config_file() -> Path:
    env = os.environ.get("WARMD_CONFIG")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "warmd" / "warmd.toml"


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "warmd"
