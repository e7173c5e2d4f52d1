"""Owning OpenHCS's execution endpoint before any client can look at it.

OpenHCS's clients "attach or start": under a startup lock (a file beside the IPC
sockets, zmqruntime's ``endpoint_startup_lock``) they attach to whatever answers
on the endpoint, and start a stock server when nothing does. The endpoint takes
that same lock before it looks, and keeps it until its sockets are bound, so a
client either finds the endpoint or waits for it; it never finds the address
empty while the endpoint is starting.

zmqruntime unpickles what answers a ping, so whoever can answer on the endpoint
can run code in the GUI (and here). The endpoint therefore only binds where no
one else can: IPC sockets in a directory of the user's that only the user may
enter (0700: made so if it is the user's own and looser), never through a link,
and TCP on a loopback address only, never pinging a port another user listens on.
Anything else already there is refused with what it is and what to do.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import AlreadyRunning, UnsafePath, WarmdError
from ..paths import open_private_dir

log = logging.getLogger("warmd.openhcs")


class EndpointTaken(AlreadyRunning):
    """Another server answers on the endpoint (a stock OpenHCS server, or another endpoint)."""


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def private_socket_dir(path: Path) -> None:
    """``path`` (the IPC sockets' directory) exists, is the user's own and only theirs: created
    0700, tightened to 0700 when it is the user's with looser modes (OpenHCS creates it with
    the umask's), refused when it is a link or another user's."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(f"refusing {path}: it is a symbolic link, which another user may have "
                         f"planted; remove it (OpenHCS makes it again)")
    if st.st_uid != os.getuid():
        raise UnsafePath(f"refusing {path}: it belongs to uid {st.st_uid}, not to you (uid "
                         f"{os.getuid()}), so another user could answer OpenHCS's GUI there; "
                         f"remove it, or ask its owner or an administrator to")
    if stat.S_IMODE(st.st_mode) & 0o077:
        log.info("%s was mode %o: made 0700, so that only you can reach the endpoint's sockets",
                 path, stat.S_IMODE(st.st_mode))
        os.chmod(path, 0o700)
    os.close(open_private_dir(path))  # the checks warmd makes of its own socket directory


def check_socket_file(path: Path) -> bool:
    """True when an IPC socket file of the user's is at ``path``; False when nothing is;
    UnsafePath for anything else (a link, a file that is no socket, another user's)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a socket"
        raise UnsafePath(f"refusing {path}: it is {kind}, where OpenHCS's endpoint socket belongs; "
                         f"remove it")
    if st.st_uid != os.getuid():
        raise UnsafePath(f"refusing {path}: the socket belongs to uid {st.st_uid}, not to you; "
                         f"another user may be squatting the endpoint. Remove it, or ask an "
                         f"administrator to")
    return True


def tcp_listener_uids(port: int) -> set[int]:
    """The uids of the processes listening on TCP ``port`` (from /proc/net/tcp and tcp6)."""
    uids = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 7 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                uids.add(int(fields[7]))
    return uids


class Endpoint:
    """The data and control addresses of one OpenHCS endpoint (its ``OpenHCSZMQConfig``)."""

    def __init__(self, config: Any) -> None:
        from zmqruntime.config import TransportMode
        from zmqruntime.transport import TransportEndpoint
        self.config = config
        self.ipc = config.transport_mode is TransportMode.IPC
        self.target = TransportEndpoint(host=config.server_host, port=config.default_port,
                                        transport_mode=config.transport_mode)
        self.ports = (config.default_port, self.target.control_port(config))
        if not self.ipc and not loopback(config.server_host):
            raise UnsafePath(f"refusing to listen on {config.server_host}: the endpoint runs the "
                             "code it is sent, so it listens on a loopback address only "
                             "(--host 127.0.0.1)")

    def describe(self) -> str:
        return self.target.control_url(self.config)

    def socket_paths(self) -> list[Path]:
        if not self.ipc:
            return []
        return [self.config.transport_mode.declaration.socket_path(port, self.config)
                for port in self.ports]

    @contextmanager
    def claimed(self) -> Iterator[None]:
        """Hold the clients' startup lock while the endpoint checks the address, clears
        what a dead server left there, and (in the block) binds it."""
        from zmqruntime.transport import endpoint_startup_lock
        if self.ipc:
            private_socket_dir(self.socket_paths()[0].parent)
        with endpoint_startup_lock(self.config.default_port, self.config.transport_mode,
                                   self.config) as acquired:
            if not acquired:
                raise WarmdError(f"could not take the startup lock of {self.describe()}")
            self._clear()
            old = os.umask(0o077)
            try:
                yield
            finally:
                os.umask(old)

    def _clear(self) -> None:
        present = [path for path in self.socket_paths() if check_socket_file(path)]
        if not self.ipc:
            others = tcp_listener_uids(self.ports[0]) | tcp_listener_uids(self.ports[1])
            if others - {os.getuid()}:
                raise UnsafePath(f"refusing {self.describe()}: another user (uid "
                                 f"{sorted(others - {os.getuid()})}) listens on its ports; "
                                 "choose another port (--port)")
            present = [port for port in self.ports if others]
        if not present:
            return
        pong = self.target.ping(self.config, timeout_ms=1000)
        if pong is not None:
            who = pong.process_identity.pid if pong.process_identity else "?"
            what = (f"another warmd-openhcs (pid {who})" if pong.server == "WarmdExecutionServer"
                    else f"OpenHCS's own {pong.server} (pid {who})")
            raise EndpointTaken(
                f"{what} already serves {self.describe()}: stop it first (OpenHCS's GUI can "
                f"quit its server; or 'warmd-openhcs --replace' stops it for you), or give this "
                f"endpoint another port (--port)")
        if self.ipc:
            declaration = self.config.transport_mode.declaration
            if not all(declaration.endpoint_is_stale(port, self.config) for port in self.ports):
                raise EndpointTaken(f"a process holds {self.describe()} but does not answer: "
                                    "stop it, or give this endpoint another port (--port)")
            for path in present:
                log.info("removing %s, left by a server that is gone", path)
                path.unlink(missing_ok=True)

    def replace(self, timeout: float = 10.0) -> None:
        """Stop whatever OpenHCS server answers on the endpoint (its own force-shutdown,
        then its pid), for ``--replace``."""
        from zmqruntime.client import EndpointShutdownMode, ZMQClient
        if not any(check_socket_file(path) for path in self.socket_paths()) and self.ipc:
            return
        result = ZMQClient.shutdown_endpoint_on_port(
            self.config.default_port, EndpointShutdownMode.FORCE, timeout=timeout,
            transport_mode=self.config.transport_mode, host=self.config.client_host,
            config=self.config)
        if not result.endpoint_terminated and self.target.ping(self.config, timeout_ms=500):
            raise EndpointTaken(f"the server on {self.describe()} did not stop when asked")

    def tighten(self) -> None:
        """After binding: the sockets are the user's alone."""
        for path in self.socket_paths():
            if check_socket_file(path):
                os.chmod(path, 0o600)
