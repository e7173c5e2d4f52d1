"""A blocking, thread-safe frame channel over a connected socket.

Used by a worker (to the daemon) and by the synchronous client; the asyncio
sides feed the same FrameReader from their transports.
"""
from __future__ import annotations

import socket
import threading
from typing import Any

from .errors import ProtocolError
from .protocol import DEFAULT_MAX_PAYLOAD, RECV_SIZE, Frame, FrameReader, encode


class Channel:
    def __init__(self, sock: socket.socket, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.sock = sock
        self.reader = FrameReader(max_payload)
        self.send_lock = threading.Lock()

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        data = encode(header, payload)
        with self.send_lock:
            self.sock.sendall(data)

    def send_locked(self, header: dict[str, Any], payload: bytes = b"") -> None:
        """Send while the caller already holds ``send_lock`` (to keep a run of frames in order)."""
        self.sock.sendall(encode(header, payload))

    def recv(self) -> Frame | None:
        """The next frame, or None at a clean end of stream."""
        while True:
            frame = self.reader.next_frame()
            if frame is not None:
                return frame
            data = self.sock.recv(RECV_SIZE)
            if not data:
                if self.reader.pending:
                    raise ProtocolError("connection closed in the middle of a frame")
                return None
            self.reader.receive_data(data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
