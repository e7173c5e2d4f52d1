"""A session's protocol without I/O, shared by ``Session`` and ``AsyncSession``.

The daemon answers a "session" request, once it holds a worker, with one end of a
socketpair whose other end that worker has. A call goes down it as a "call" frame
(after a "source" frame for each user module this session has not sent yet) with an
id the client makes; its end comes back as a "done" frame. The daemon hears of each
call from the worker, so it is listed, cancelled and timed out as any job is.
"""
from __future__ import annotations

import secrets
from typing import Any

from ..errors import JobLost, SessionClosed
from ..protocol import Frame, FrameReader, Wire, encode_parts
from .core import ClientCore
from .events import Finished, from_frame
from .jobspec import JobRequest

# Options a session's call takes; the rest (device, priority, stdin, group) belong to
# how a job is queued and placed, which a session has done once for all its calls.
CALL_OPTIONS = ("name", "timeout", "log_level", "env", "env_update")


class SessionCore:
    def __init__(self, reply: Frame, core: ClientCore) -> None:
        h = reply.header
        self.id: str = h["session"]
        self.worker_pid: int | None = h.get("worker_pid")
        self.device: int | None = h.get("device")
        self.token: str | None = h.get("token")
        self.core = core
        self.reader = FrameReader(max(core.reader.max_payload, int((core.welcome.get("max_frame") or 0)
                                                                   if core.welcome else 0)))
        self._sources_sent: dict[str, str] = {}

    def call(self, request: JobRequest) -> tuple[str, Wire]:
        """A new call's id and bytes: "source" frames this session has not sent, then the call."""
        if request.fields.get("needs"):
            raise ValueError("a session's call cannot take another job's result by reference "
                             "(a future or warmd.ref): pass the value itself")
        self.core.check_size("call", len(request.payload), request.buffer_bytes)
        job_id = secrets.token_hex(6)
        fields = {k: v for k, v in request.submit_fields(None, False).items()
                  if k not in ("device", "attach", "priority")}
        pieces: Wire = []
        for module in request.modules:
            if self._sources_sent.get(module.name) != module.sha:
                pieces.append(module.frame())
                self._sources_sent[module.name] = module.sha
        pieces += encode_parts({**fields, "t": "call", "job": job_id}, request.payload, request.files)
        return job_id, pieces

    def receive_data(self, data: bytes | memoryview, files: Any = ()) -> list[Finished]:
        self.reader.receive_data(data, files)
        out = []
        while (frame := self.reader.next_frame()) is not None:
            if frame.type == "done" and isinstance(frame.get("job"), str):
                out.append(from_frame(frame))
        return out

    @staticmethod
    def skipped(job_id: str) -> Finished:
        """The end of a call cancelled before it began (the worker will skip it)."""
        return Finished(job_id, "cancelled", 130, {"type": "Cancelled", "traceback": "",
                                                   "message": "cancelled before it started"})

    def lost(self, job_id: str) -> JobLost:
        """What a call ends with when the session's channel closes before its end came."""
        return JobLost(job_id, f"call {job_id} is lost: the worker of session {self.id} (pid "
                               f"{self.worker_pid}) went away during it: it died, or the session "
                               "was cancelled ('warmctl jobs' says which). Open a new session")

    def closed(self) -> SessionClosed:
        return SessionClosed(f"session {self.id} is closed: it takes no more calls; open a new one")

    def gone(self) -> SessionClosed:
        """Why the session takes no more calls once its channel has closed."""
        return SessionClosed(f"session {self.id} is over: its worker (pid {self.worker_pid}) went away "
                             "(the session was cancelled, or its worker died); open a new session")


class SessionFacts:
    """What both sessions tell of themselves (``Session``, ``AsyncSession``)."""
    _core: SessionCore

    @property
    def id(self) -> str:
        """The session's job id (``warmctl jobs`` lists its calls below it)."""
        return self._core.id

    @property
    def worker_pid(self) -> int | None:
        return self._core.worker_pid

    @property
    def device(self) -> int | None:
        return self._core.device


def check_options(options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(CALL_OPTIONS))
    if unknown:
        raise TypeError(f"a session's call takes {', '.join(CALL_OPTIONS)}, not {', '.join(unknown)} "
                        "(the session was placed once, for all its calls)")
