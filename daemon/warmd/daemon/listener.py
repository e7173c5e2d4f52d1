"""The daemon's listening socket: from systemd, or bound here without stealing."""
from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from ..errors import AlreadyRunning, ConfigError, UnsafePath
from ..paths import check_socket_entry, entry, open_private_dir, through


@dataclass
class Listener:
    sock: socket.socket
    path: Path | None
    activated: bool  # True when systemd owns the socket (never unlink it then)
    # (device, inode) of the file bind() made: a socket fd's own fstat names the socket,
    # not that file, so this is how remove() tells ours from a successor's.
    bound: tuple[int, int] | None = None
    dir_fd: int | None = None  # the checked directory the socket was bound in

    def reachable(self) -> bool:
        """Whether a new client can still find this socket: its path still names the file
        bind() made (systemd's socket is systemd's to keep)."""
        if self.activated or self.path is None or self.bound is None:
            return True
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.bound

    def remove(self) -> None:
        """Unlink the socket file if it is still the one this daemon bound."""
        if self.activated or self.path is None or self.bound is None or self.dir_fd is None:
            return
        try:
            st = entry(self.dir_fd, self.path.name)
            if st is not None and (st.st_dev, st.st_ino) == self.bound:
                os.unlink(self.path.name, dir_fd=self.dir_fd)
        except OSError:
            pass


def from_systemd() -> Listener | None:
    """The first socket passed by systemd (LISTEN_FDS), or None when not socket-activated."""
    if not os.environ.get("LISTEN_FDS"):
        return None
    from systemd import daemon  # systemd-python
    fds = daemon.listen_fds(unset_environment=True)
    if not fds:
        return None
    sock = socket.socket(fileno=fds[0])
    for extra in fds[1:]:
        os.close(extra)
    try:
        name = sock.getsockname()
    except OSError:
        name = None
    path = Path(name) if isinstance(name, str) and name else None
    return Listener(sock, path, activated=True)


def bind(path: Path, backlog: int = 128) -> Listener:
    """Bind ``path`` 0600 in a directory checked to be this user's alone (created 0700),
    through that directory's descriptor; refuse if a live daemon answers there."""
    path = Path(os.path.abspath(path))
    dir_fd = open_private_dir(path.parent, create=True)
    try:
        st = entry(dir_fd, path.name)
        if st is not None:
            check_socket_entry(path, st)
            if _answers(through(dir_fd, path.name)):
                raise AlreadyRunning(f"a warmd daemon already answers on {path}; stop it first "
                                     "('warmctl shutdown') or choose another --socket")
            os.unlink(path.name, dir_fd=dir_fd)  # stale: nobody listens behind it
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            sock.bind(through(dir_fd, path.name))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise AlreadyRunning(f"{path} was taken by another daemon starting at the same "
                                     "time") from None
            raise ConfigError(f"cannot bind {path}: {exc.strerror}") from None
        finally:
            os.umask(old)
        sock.listen(backlog)
        st = entry(dir_fd, path.name)
        if st is None:
            sock.close()
            raise UnsafePath(f"{path} vanished right after warmd bound it")
    except BaseException:
        os.close(dir_fd)
        raise
    return Listener(sock, path, activated=False, bound=(st.st_dev, st.st_ino), dir_fd=dir_fd)


def _answers(name: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.connect(name)
        return True
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOTSOCK, errno.ECONNREFUSED):
            return False
        raise
    finally:
        probe.close()
