"""A blocking, thread-safe frame channel over a connected socket.

Used by a worker (to the daemon) and by the synchronous client; the asyncio
sides feed the same FrameReader from their transports.
"""
from __future__ import annotations

import os
import socket
import threading
from typing import Any

from . import fdpass
from .credentials import peer_credentials
from .errors import ProtocolError
from .protocol import DEFAULT_MAX_PAYLOAD, RECV_SIZE, Frame, FrameReader, Wire, encode_parts


def send_wire(sock: socket.socket, data: bytes | Wire) -> None:
    """Send a frame's bytes, or its pieces with one gathering write each time round (a large
    payload goes from its own buffer, never joined to its header first); descriptors go
    with their frame's first piece (see ``warmd.fdpass``)."""
    if not isinstance(data, list):
        sock.sendall(data)
        return
    pieces = [p for p in data if len(p)]
    while pieces:
        views, fds = fdpass.gather(pieces)
        sent = sock.sendmsg(views, fdpass.rights(fds)) if fds else sock.sendmsg(views)
        if fds:
            pieces[0] = pieces[0].data  # its descriptors went with its first bytes
        while pieces and sent >= len(pieces[0]):
            sent -= len(pieces[0])
            pieces.pop(0)
        if sent:
            pieces[0] = memoryview(pieces[0]).cast("B")[sent:]


class Channel:
    def __init__(self, sock: socket.socket, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.sock = sock
        self.reader = FrameReader(max_payload)
        self.send_lock = threading.Lock()
        self._recv_buffer = bytearray(RECV_SIZE)

    def send(self, header: dict[str, Any], payload: bytes = b"", files: Any = ()) -> None:
        data = encode_parts(header, payload, files)
        with self.send_lock:
            send_wire(self.sock, data)

    def send_locked(self, header: dict[str, Any], payload: bytes = b"", files: Any = ()) -> None:
        """Send while the caller already holds ``send_lock`` (to keep a run of frames in order)."""
        send_wire(self.sock, encode_parts(header, payload, files))

    def recv(self) -> Frame | None:
        """The next frame, or None at a clean end of stream."""
        while True:
            frame = self.reader.next_frame()
            if frame is not None:
                return frame
            n, files = fdpass.recv_into(self.sock, self._recv_buffer)
            if n:
                with memoryview(self._recv_buffer) as view:
                    self.reader.receive_data(view[:n], files)
                continue
            if self.reader.pending:
                raise ProtocolError("connection closed in the middle of a frame")
            return None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def take_socket(files: tuple) -> socket.socket | None:
    """The one descriptor a session's "hold" or reply frame carries, as a socket of this
    process's own; None when it is not a stream socket made by a process of this user."""
    if len(files) != 1:
        return None
    descriptor = files[0]
    fd, descriptor.fd = descriptor.fd, -1  # owned by the socket from here on
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        os.close(fd)
        return None
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or peer_credentials(sock)[1] != os.getuid():
        sock.close()
        return None
    return sock
