"""The daemon's listening socket: from systemd, or bound here without stealing."""
from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import AlreadyRunning, ConfigError
from ..paths import ensure_private_dir

_UCRED = struct.Struct("3i")


@dataclass
class Listener:
    sock: socket.socket
    path: Path | None
    activated: bool  # True when systemd owns the socket (never unlink it then)
    # (device, inode) of the file bind() made: a socket fd's own fstat names the socket,
    # not that file, so this is how remove() tells ours from a successor's.
    bound: tuple[int, int] | None = None

    def remove(self) -> None:
        """Unlink the socket file if it is still the one this daemon bound."""
        if self.activated or self.path is None or self.bound is None:
            return
        try:
            st = self.path.stat()
            if (st.st_dev, st.st_ino) == self.bound:
                self.path.unlink()
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
    """Bind ``path`` 0600 in a private directory; refuse if a live daemon answers there."""
    ensure_private_dir(path.parent)
    if path.exists() or path.is_symlink():
        if _answers(path):
            raise AlreadyRunning(f"a warmd daemon already answers on {path}; stop it first "
                                 "('warmctl shutdown') or choose another --socket")
        path.unlink()  # stale: nobody listens behind it
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is born 0600: no window where others may connect
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise AlreadyRunning(f"{path} was taken by another daemon starting at the same time") from None
        raise ConfigError(f"cannot bind {path}: {exc.strerror}") from None
    finally:
        os.umask(old)
    sock.listen(backlog)
    st = path.stat()
    return Listener(sock, path, activated=False, bound=(st.st_dev, st.st_ino))


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOTSOCK, errno.ECONNREFUSED):
            return False
        raise
    finally:
        probe.close()


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket (SO_PEERCRED)."""
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
