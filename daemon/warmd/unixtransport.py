"""An asyncio transport and server for warmd's AF_UNIX stream sockets.

asyncio's own socket transport copies whatever the socket does not take at once
into one bytearray, so a large frame is copied whole once more in the daemon; and
it has no way to pass file descriptors. This one keeps what is waiting as a queue
of the caller's own buffers (frames are never changed once written) and sends
them with one gathering ``sendmsg``; reads go through the protocol's buffer
(``asyncio.BufferedProtocol``) with ``recvmsg_into``. Descriptors that arrive
are closed: nothing in warmd sends any yet.

It offers what warmd's protocols use of ``asyncio.Transport``: write, close,
abort, write_eof, flow control (pause_writing above the high-water mark,
resume_writing at a quarter of it), pause/resume_reading and get_extra_info.
"""
from __future__ import annotations

import array
import asyncio
import collections
import logging
import os
import socket
from typing import Any, Callable

log = logging.getLogger("warmd")

_MAX_IOV = 512            # buffers per sendmsg, under the kernel's IOV_MAX
_ANCILLARY = socket.CMSG_SPACE(64 * array.array("i").itemsize)
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
        self._pending: collections.deque[memoryview] = collections.deque()
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

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` (not copied: it must not change afterwards) and send what the
        socket takes now."""
        if self._eof:
            raise RuntimeError("cannot write() after write_eof()")
        if self._lost or not len(data):
            return  # after a close that had nothing left to send, or a lost connection
        view = memoryview(data).cast("B")
        if not self._pending:
            try:
                sent = self._sock.send(view)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._fatal(exc)
                return
            if sent == len(view):
                return
            view = view[sent:]
            self._loop.add_writer(self._fd, self._write_ready)
        self._pending.append(view)
        self._size += len(view)
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
            nbytes, ancdata, flags, _ = self._sock.recvmsg_into([buffer], _ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal(exc)
            return
        _close_descriptors(ancdata)
        if not nbytes:
            self.pause_reading()
            if not self._protocol.eof_received():
                self.close()
            return
        self._protocol.buffer_updated(nbytes)

    def _write_ready(self) -> None:
        pending = self._pending
        try:
            sent = self._sock.sendmsg(list(_first(pending, _MAX_IOV)))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal(exc)
            return
        self._size -= sent
        while pending and sent >= len(pending[0]):
            sent -= len(pending.popleft())
        if sent:
            pending[0] = pending[0][sent:]
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


def _first(pending: collections.deque, n: int):
    for i, view in enumerate(pending):
        if i == n:
            return
        yield view


def _close_descriptors(ancdata: list) -> None:
    """Descriptors a peer sent: nothing here takes any, so none may stay open."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass


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
