"""``Client.session()``: a warm worker held for this client's calls, called directly.

A session is an Executor (``submit``, ``submit_call``, ``map``) whose calls all run on
one worker that runs nothing else while the session holds it, so what a call leaves
in its modules (a loaded image, a compiled model) is there for the next. The calls'
bytes go straight between this process and that worker; the daemon lists them (as
jobs below the session's own), cancels them and times them out. See warmd-protocol(7).
"""
from __future__ import annotations

import concurrent.futures
import threading
from typing import Any, Callable

from .. import fdpass
from ..channel import Channel, send_wire, take_socket
from ..errors import ProtocolError
from ..protocol import RECV_SIZE
from . import jobspec
from .future import JobFuture
from ..errors import SessionClosed
from .sessioncore import SessionCore, SessionFacts, check_options


class Session(SessionFacts, concurrent.futures.Executor):
    def __init__(self, client: Any, name: str = "session", device: int | None = None) -> None:
        client._check_open()
        reply = client._call("session", name=str(name), device=client.device if device is None else device)
        sock = take_socket(reply.files)
        if sock is None:
            raise ProtocolError("the daemon's answer to a session request did not carry its channel")
        self._client = client
        self._core = SessionCore(reply, client._core)
        self._channel = Channel(sock)
        self._lock = threading.Lock()
        self._futures: dict[str, JobFuture] = {}
        self._closing: SessionClosed | None = None  # set once it takes no more calls
        self._ended = threading.Event()              # its channel is closed
        self._reader = threading.Thread(target=self._read_loop, name=f"warmd-session-{self.id}", daemon=True)
        self._reader.start()
        with client._lock:
            client._sessions.add(self)

    # ---------------------------------------------------------------- calls

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> JobFuture:
        """Run ``fn(*args, **kwargs)`` on the session's worker (Executor.submit)."""
        return self._send(self._client._core.call(fn, args, kwargs, self._client._modules))

    def submit_call(self, fn: Callable[..., Any], args: tuple = (), kwargs: dict | None = None,
                    **options: Any) -> JobFuture:
        """Like ``submit`` with options: ``name``, ``timeout``, ``log_level``, ``env``,
        ``env_update`` (as ``Client.submit_call`` takes them)."""
        check_options(options)
        request = self._client._core.call(fn, args, kwargs or {}, self._client._modules)
        return self._send(request.with_options(jobspec.JobOptions(**options)))

    def _send(self, request: jobspec.JobRequest) -> JobFuture:
        future = JobFuture(self)
        with self._channel.send_lock:
            with self._lock:
                if self._closing is not None:
                    raise self._closing
                job_id, data = self._core.call(request)
                self._futures[job_id] = future
            future._accept(job_id)
            future.set_running_or_notify_cancel()
            try:
                send_wire(self._channel.sock, data)
            except OSError:
                pass  # the worker is gone: the reader fails this call with the rest
        return future

    def cancel(self, job_id: str, mode: str = "interrupt") -> str:
        """Cancel one of this session's calls; the session and its worker's state stay."""
        outcome = self._client._call("cancel", job=job_id, mode=mode, session=self.id).header["outcome"]
        if outcome == "removed_from_queue":  # it never runs: no need to wait for the worker to skip it
            with self._lock:
                future = self._futures.pop(job_id, None)
            if future is not None:
                future._add(self._core.skipped(job_id))
        return outcome

    # ---------------------------------------------------------------- reading

    def _read_loop(self) -> None:
        sock, buffer = self._channel.sock, bytearray(RECV_SIZE)
        try:
            while True:
                n, files = fdpass.recv_into(sock, buffer)
                if not n:
                    break
                with memoryview(buffer) as view:
                    ends = self._core.receive_data(view[:n], files)
                for end in ends:
                    with self._lock:
                        future = self._futures.pop(end.job, None)
                    if future is not None:
                        future._add(end)
                files = ends = end = None  # a result dropped by its caller goes now
        except (OSError, ProtocolError):
            pass
        with self._lock:
            self._closing = self._closing or self._core.gone()
            lost, self._futures = self._futures, {}
        for job_id, future in lost.items():
            future._fail(self._core.lost(job_id))
        self._ended.set()

    # ---------------------------------------------------------------- ending

    def pending(self) -> list[JobFuture]:
        """Its calls sent and not ended yet."""
        with self._lock:
            return list(self._futures.values())

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more calls (SessionClosed); ``cancel_futures`` cancels those not finished; once
        its calls have ended (at once, or in the background without ``wait``) the worker is
        let go."""
        with self._lock:
            self._closing = self._closing or self._core.closed()
            pending = set(self._futures.values())
        if cancel_futures:
            for future in pending:
                try:
                    future.cancel()
                except Exception:
                    pass  # ended meanwhile, or the daemon is gone: the close below still runs
        if wait:
            self._release(pending)
        else:
            threading.Thread(target=self._release, args=(pending,), name="warmd-session-close",
                             daemon=True).start()

    close = shutdown

    def _release(self, pending: set[JobFuture]) -> None:
        with self._client._lock:
            self._client._sessions.discard(self)
        concurrent.futures.wait(pending)
        if not self._ended.is_set():
            try:
                self._client._call("session_close", session=self.id)
            except Exception:
                pass  # the daemon or the session is gone already: nothing is held
        try:
            self._channel.sock.shutdown(2)
        except OSError:
            pass
        self._reader.join()
        self._channel.close()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self.shutdown(wait=True, cancel_futures=exc_type is not None)
        return False
