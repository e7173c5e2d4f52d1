"""Who is at the other end of a Unix socket: the kernel's word (SO_PEERCRED), not the peer's."""
from __future__ import annotations

import socket
import struct

_UCRED = struct.Struct("3i")


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket, as of its connect()
    or listen()."""
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
