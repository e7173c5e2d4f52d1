"""Descriptors in and out of AF_UNIX stream sockets (SCM_RIGHTS), for both I/O styles.

``sendmsg`` attaches descriptors to the bytes it sends first, and a receiving
``recvmsg`` that meets them stops after them; so a frame's descriptors go in a
sendmsg of that frame's first piece alone (``gather``), and the reader can tell
which frame they belong to (see ``warmd.protocol.FrameReader``).
"""
from __future__ import annotations

import array
import socket
from typing import Any, Iterable

from .errors import ProtocolError
from .memfd import MAX_FDS, Descriptor, make_room, owned
from .protocol import FdPiece

ANCILLARY = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
MAX_IOV = 512  # pieces per sendmsg, well under the kernel's IOV_MAX of 1024


def rights(fds: list[int]) -> list[tuple[int, int, bytes]]:
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]


def gather(pieces: Iterable[Any]) -> tuple[list[memoryview], list[int]]:
    """What one sendmsg sends from the front of ``pieces``: a piece with descriptors alone
    (with them), else the pieces up to the next that has descriptors."""
    out: list[memoryview] = []
    for piece in pieces:
        if isinstance(piece, FdPiece):
            if out:
                break
            return [memoryview(piece.data).cast("B")], piece.fds()
        out.append(memoryview(piece).cast("B"))
        if len(out) == MAX_IOV:
            break
    return out, []


def received(ancdata: list, flags: int) -> list[Descriptor]:
    """The descriptors a recvmsg took in, each owned (closed when dropped); ProtocolError
    if some did not fit, after closing those that did."""
    files: list[Descriptor] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
            files.extend(owned(fds))
    if flags & socket.MSG_CTRUNC:
        del files[:]
        raise ProtocolError(f"more than {MAX_FDS} descriptors came with one frame, or this "
                            "process is out of descriptors (RLIMIT_NOFILE)")
    if files:
        make_room(max(f.fd for f in files))
    return files


def recv_into(sock: socket.socket, buffer: Any) -> tuple[int, list[Descriptor]]:
    nbytes, ancdata, flags, _ = sock.recvmsg_into([buffer], ANCILLARY)
    if not ancdata and not flags & socket.MSG_CTRUNC:
        return nbytes, []
    return nbytes, received(ancdata, flags)
