"""asyncio protocol glue: bytes in, frames to the supervisor; frames out, bytes to the peer."""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Callable, Protocol

from .. import fdpass
from ..credentials import peer_credentials
from ..errors import ProtocolError, VersionMismatch
from ..protocol import E_DENIED, E_DESCRIPTORS, E_PROTOCOL, E_TOO_LARGE, E_VERSION, FrameReader, Wire, encode
from ..receiver import BufferedReceiver
from .batch import WriteBatch
from .jobs import ModuleCopy
from .pool import WorkerProcess

log = logging.getLogger("warmd")

_LINGER = 5.0  # seconds a refused peer gets to read our error before we close
# What a client's unread replies and events may take in the daemon before it stops
# sending to it (and reading its requests) until it reads: see daemon.streams.
HIGH_WATER = 1 << 20


class Host(Protocol):
    """What connections need of the supervisor."""
    batch: WriteBatch
    max_payload: int
    requests: Any  # daemon.requests.Requests: handle(conn, frame)

    def soon(self, callback: Callable[[], None]) -> None: ...
    def client_connected(self, conn: "ClientConnection") -> None: ...
    def client_gone(self, conn: "ClientConnection") -> None: ...
    def catch_up(self, conn: "ClientConnection", force: bool = False) -> None: ...
    def worker_connected(self, worker: WorkerProcess) -> None: ...
    def worker_frame(self, worker: WorkerProcess, frame: Any) -> None: ...
    def kill_worker(self, worker: WorkerProcess) -> None: ...


class ClientConnection(BufferedReceiver):
    def __init__(self, supervisor: Host, max_payload: int) -> None:
        self.supervisor = supervisor
        self.reader = FrameReader(max_payload)
        self.transport: asyncio.Transport | None = None
        self.pid: int | None = None
        self.greeted = False
        self.closed = False
        self.accepted = False
        self.modules: dict[str, ModuleCopy] = {}  # by module name: the latest source it sent
        self.paused = False                   # its socket buffer is over HIGH_WATER
        self.lagging: set[Any] = set()        # jobs whose stream it has fallen behind on
        self.groups: set[Any] = set()         # groups it opened and has not closed
        self._linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=HIGH_WATER)  # type: ignore[attr-defined]
        pid, uid, _ = peer_credentials(transport.get_extra_info("socket"))
        self.pid = pid
        if uid != os.getuid():
            log.warning("refused a connection from pid %d: uid %d is not the daemon's uid %d",
                        pid, uid, os.getuid(), extra={"CLIENT_PID": pid})
            self.fail(E_DENIED, f"permission denied: this warmd runs as uid {os.getuid()}; "
                                "start your own daemon (each user has one)")
            return
        self.accepted = True
        self.supervisor.client_connected(self)

    def received(self, data: memoryview, files: list) -> None:
        if self.closed:
            return  # and its descriptors close as they are dropped
        self.reader.receive_data(data, files)
        self._handle_frames()

    def _handle_frames(self) -> None:
        """Handle the complete frames received, until the replies would pass HIGH_WATER: the
        rest waits, in the reader, for the client to read what it asked for."""
        batch = self.supervisor.batch
        batch.begin()
        stopped = False
        try:
            while not self.closed:
                if self.paused or batch.held_bytes(self) >= HIGH_WATER:
                    stopped = True
                    break
                frame = self.reader.next_frame()
                if frame is None:
                    break
                self.supervisor.requests.handle(self, frame)
        except VersionMismatch as exc:
            self.fail(E_VERSION, str(exc))
        except ProtocolError as exc:
            code = E_TOO_LARGE if "exceeds" in str(exc) else E_PROTOCOL
            log.warning("client pid %s sent bad data: %s", self.pid, exc, extra={"CLIENT_PID": self.pid})
            self.fail(code, str(exc))
        finally:
            batch.end()
        if stopped and not self.paused and not self.closed:
            self.supervisor.soon(self._handle_frames)  # the batch went out and found room

    def receive_failed(self, exc: ProtocolError) -> None:
        """A frame's descriptors were lost in the kernel (this process out of them, or more
        than a frame may carry): the stream cannot go on, but the client is told why."""
        log.warning("client pid %s: %s", self.pid, exc, extra={"CLIENT_PID": self.pid})
        self.fail(E_DESCRIPTORS, f"{exc}: the connection ends here; connect again and pass "
                                 "fewer array buffers per request")

    def held_back(self) -> bool:
        """Whether the daemon should hold this client's stream back for now."""
        return self.paused

    def pause_writing(self) -> None:
        # Over HIGH_WATER: stop sending it job events (they wait in the jobs' replays) and
        # stop reading its requests, whose replies would pile up the same way.
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.closed or self.transport is None:
            return
        self.transport.resume_reading()
        self.supervisor.catch_up(self)
        self._handle_frames()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
        if self.reader.pending and not self.closed:
            log.info("client pid %s disconnected in the middle of a frame", self.pid)
        self.closed = True
        if self.accepted:
            self.accepted = False
            self.supervisor.client_gone(self)

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        self.write(encode(header, payload))

    def write(self, data: bytes | Wire) -> None:
        """A frame's bytes, or its pieces (a large payload is written as it is, unjoined)."""
        if self.closed or self.transport is None:
            return
        pieces = data if isinstance(data, list) else (data,)
        if self.supervisor.batch.active:
            for piece in pieces:
                self.supervisor.batch.hold(self, piece)
        else:
            for piece in pieces:
                self.transport.write(piece)

    def _flush_held(self) -> None:
        held = self.supervisor.batch.release(self)
        if not self.closed and self.transport is not None:
            for piece in held:
                self.transport.write(piece)

    def close(self) -> None:
        self._flush_held()
        self.closed = True  # what the rest of this read would write has nobody to go to
        if self.transport is not None:
            self.transport.close()

    def refuse(self, req: Any, code: str, message: str, **fields: Any) -> None:
        """Answer request ``req`` with an error frame; the connection goes on."""
        self.send({"t": "error", "req": req, "code": code, "message": message, **fields})

    def fail(self, code: str, message: str) -> None:
        """Tell the peer why, then hang up; the daemon keeps serving everyone else.

        Half-close and drain rather than close: closing with the peer's bytes
        unread would reset the connection and lose the error before it is read.
        """
        self._flush_held()
        if self.transport is not None and not self.closed:
            self.transport.write(encode({"t": "error", "code": code, "message": message}))
        self.closed = True
        if self.transport is None:
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._linger = asyncio.get_running_loop().call_later(_LINGER, self.transport.close)
        else:
            self.transport.close()

    def eof_received(self) -> bool:
        return False  # the peer is done: close our side too


class WorkerConnection(BufferedReceiver):
    def __init__(self, supervisor: Host, worker: WorkerProcess) -> None:
        self.supervisor = supervisor
        self.worker = worker
        self.reader = FrameReader(supervisor.max_payload)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.worker.connection = self
        self.supervisor.worker_connected(self.worker)

    def received(self, data: memoryview, files: list) -> None:
        # Not batched: a job's end goes to its clients at once, ahead of the bookkeeping.
        self.reader.receive_data(data, files)
        try:
            while (frame := self.reader.next_frame()) is not None:
                self.supervisor.worker_frame(self.worker, frame)
        except ProtocolError as exc:
            log.error("worker pid %d sent bad data (%s); stopping it", self.worker.pid, exc,
                      extra={"WORKER_PID": self.worker.pid})
            self.close()
            self.supervisor.kill_worker(self.worker)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def drain(self) -> None:
        """Handle now whatever the worker has already sent, ahead of the event loop."""
        sock = self.worker.sock
        buffer = self.get_buffer(-1)  # the connection's own: the loop is not reading now
        while self.transport is not None:
            try:
                n, files = fdpass.recv_into(sock, buffer)
            except (OSError, ProtocolError):
                return  # nothing more now (EAGAIN), or an error the transport sees too
            if not n:
                return  # end of stream: the transport's own read handles it
            self.received(memoryview(buffer)[:n], files)

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        self.write(encode(header, payload))

    def write(self, data: bytes | Wire) -> None:
        if self.transport is not None:
            for piece in data if isinstance(data, list) else (data,):
                self.transport.write(piece)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
