"""An asyncio transport and server for warmd's AF_UNIX stream sockets.

asyncio's own socket transport copies whatever the socket does not take at once
into one bytearray, so a large frame is copied whole once more in the daemon; and
it has no way to pass file descriptors. This one keeps what is waiting as a queue
of the caller's own buffers (frames are never changed once written) and sends
them with one gathering ``sendmsg``; reads go through the protocol's buffer
(``asyncio.BufferedProtocol``) with ``recvmsg_into``. A frame's descriptors
(an ``FdPiece``) go with its first piece, as ``warmd.fdpass`` says; those that
arrive are handed to the protocol (``files_received``) before the bytes they came
with, or closed if it takes none.

It offers what warmd's protocols use of ``asyncio.Transport``: write, close,
abort, write_eof, flow control (pause_writing above the high-water mark,
resume_writing at a quarter of it), pause/resume_reading and get_extra_info.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import socket
from typing import Any, Callable

from . import fdpass
from .errors import ProtocolError
from .protocol import FdPiece

log = logging.getLogger("warmd")

_ACCEPTS = 64             # connections taken per wake-up of the listening socket
_DEFAULT_HIGH = 64 * 1024


class UnixTransport(asyncio.Transport):
    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 protocol: asyncio.BufferedProtocol) -> None:
        super().__init__()
        sock.setblocking(False)
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._pending: collections.deque[memoryview | FdPiece] = collections.deque()
        self._size = 0
        self._high = _DEFAULT_HIGH
        self._low = _DEFAULT_HIGH // 4
        self._paused_protocol = False
        self._reading = False
        self._closing = False
        self._eof = False
        self._lost = False
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(self._start_reading)

    # ---------------------------------------------------------------- asyncio.Transport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self._sock
        if name == "peername":
            try:
                return self._sock.getpeername()
            except OSError:
                return default
        return default

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return self._reading

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._reading and not self._closing and not self._lost:
            self._start_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = _DEFAULT_HIGH if high is None else high
        self._low = self._high // 4 if low is None else low

    def get_write_buffer_size(self) -> int:
        return self._size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def can_write_eof(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview | FdPiece) -> None:
        """Queue ``data`` (not copied: it must not change afterwards) and send what the
        socket takes now. An ``FdPiece`` keeps its descriptors open until they are sent."""
        if self._eof:
            raise RuntimeError("cannot write() after write_eof()")
        if self._lost or not len(data):
            return  # after a close that had nothing left to send, or a lost connection
        was_empty = not self._pending
        piece: memoryview | FdPiece
        if isinstance(data, FdPiece):
            piece = FdPiece(memoryview(data.data).cast("B"), data.files)
            self._pending.append(piece)
            if was_empty:
                self._send()
        else:
            piece = memoryview(data).cast("B")
            if was_empty:  # the common case: a frame the socket takes whole at once
                try:
                    sent = self._sock.send(piece)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError as exc:
                    self._fatal(exc)
                    return
                if sent == len(piece):
                    return
                piece = piece[sent:]
            self._pending.append(piece)
        self._size += len(piece)
        if was_empty and self._pending:
            self._loop.add_writer(self._fd, self._write_ready)
        if not self._paused_protocol and self._size > self._high:
            self._paused_protocol = True
            self._protocol.pause_writing()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def write_eof(self) -> None:
        if self._eof or self._lost:
            return
        self._eof = True
        if not self._pending:
            self._shutdown_write()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.pause_reading()
        if not self._pending:
            self._lost = True
            self._loop.call_soon(self._connection_lost, None)

    def abort(self) -> None:
        self._pending.clear()
        self._size = 0
        self._fatal(None)

    # ---------------------------------------------------------------- inside

    def _start_reading(self) -> None:
        if self._closing or self._lost or self._reading:
            return
        self._reading = True
        self._loop.add_reader(self._fd, self._read_ready)

    def _read_ready(self) -> None:
        try:
            buffer = self._protocol.get_buffer(-1)
            nbytes, files = fdpass.recv_into(self._sock, buffer)
        except (BlockingIOError, InterruptedError):
            return
        except ProtocolError as exc:  # a frame's descriptors did not all arrive
            failed = getattr(self._protocol, "receive_failed", None)
            if failed is None:
                self._fatal(exc)
            else:
                failed(exc)  # it says why to its peer before it hangs up
            return
        except OSError as exc:
            self._fatal(exc)
            return
        if files:
            taker = getattr(self._protocol, "files_received", None)
            if taker is not None:
                taker(files)
            del files  # not taken: closed here
        if not nbytes:
            self.pause_reading()
            if not self._protocol.eof_received():
                self.close()
            return
        self._protocol.buffer_updated(nbytes)

    def _send(self) -> None:
        """One gathering sendmsg from the front of the queue, as much as the socket takes."""
        pending = self._pending
        views, fds = fdpass.gather(pending)
        try:
            sent = self._sock.sendmsg(views, fdpass.rights(fds)) if fds else self._sock.sendmsg(views)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal(exc)
            return
        if fds:
            pending[0] = pending[0].data  # its descriptors are the peer's now: ours close
        self._size -= sent
        while pending and sent >= len(pending[0]):
            sent -= len(pending.popleft())
        if sent:
            pending[0] = pending[0][sent:]

    def _write_ready(self) -> None:
        pending = self._pending
        self._send()
        if self._lost:
            return
        if self._paused_protocol and self._size <= self._low:
            self._paused_protocol = False
            self._protocol.resume_writing()
        if pending:
            return
        self._loop.remove_writer(self._fd)
        if self._closing:
            self._lost = True
            self._connection_lost(None)
        elif self._eof:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _fatal(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self.pause_reading()
        self._loop.remove_writer(self._fd)
        self._pending.clear()
        self._size = 0
        self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: BaseException | None) -> None:
        self._loop.remove_writer(self._fd)
        protocol, self._protocol = self._protocol, None  # no cycle keeps its buffers alive
        try:
            protocol.connection_lost(exc)
        finally:
            self._sock.close()


class UnixServer:
    """Accepts connections on a listening socket, each with a ``UnixTransport``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 protocol_factory: Callable[[], asyncio.BufferedProtocol]) -> None:
        sock.setblocking(False)
        self._loop = loop
        self._sock = sock
        self._factory = protocol_factory
        self._serving = True
        self._retry: asyncio.TimerHandle | None = None
        loop.add_reader(sock.fileno(), self._accept_ready)

    def _accept_ready(self) -> None:
        for _ in range(_ACCEPTS):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, say: wait a moment, keep serving
                log.warning("cannot accept a connection: %s; retrying in 1 s", exc)
                self._loop.remove_reader(self._sock.fileno())
                self._retry = self._loop.call_later(1.0, self._resume)
                return
            UnixTransport(self._loop, conn, self._factory())

    def _resume(self) -> None:
        self._retry = None
        if self._serving:
            self._loop.add_reader(self._sock.fileno(), self._accept_ready)

    def close(self) -> None:
        """Stop accepting; connections already made go on."""
        if not self._serving:
            return
        self._serving = False
        if self._retry is not None:
            self._retry.cancel()
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
