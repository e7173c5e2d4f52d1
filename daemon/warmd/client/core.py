"""The client's protocol logic without I/O, shared by ``Client`` and ``AsyncClient``.

Feed received bytes to ``receive_data``; it returns deliveries: a ``Reply`` to a
numbered request, or a ``JobItem`` (event or end) for a job's stream. The
wrappers only move bytes and wake whoever waits.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Any, Union

from .. import oob
from ..config import parse_seconds
from ..errors import (AmbiguousJob, DaemonUnavailable, FrameTooLarge, JobLost, ProtocolError,
                      RequestFailed, UnknownJob, VersionMismatch, WarmdError)
from ..protocol import (DEFAULT_MAX_PAYLOAD, E_AMBIGUOUS_JOB, E_DENIED, E_UNKNOWN_JOB, E_VERSION, Frame,
                        FrameReader, Wire, encode, encode_parts, hello, load_json)
from .events import Event, Finished, from_frame
from .info import JobInfo, Status
from . import jobspec
from .jobspec import JobRequest, UserModules


@dataclass(frozen=True)
class Reply:
    req: int
    frame: Frame


@dataclass(frozen=True)
class JobItem:
    job: str
    item: Event | Finished


@dataclass(frozen=True)
class WatchItem:
    frame: Frame   # a "watch" frame: see warmd.client.watch


Delivery = Union[Reply, JobItem, WatchItem]


class ClientCore:
    def __init__(self, client_name: str, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.client_name = client_name
        self.reader = FrameReader(max_payload)
        self.welcome: Frame | None = None
        self._req = itertools.count(1)
        self._sources_sent: dict[str, str] = {}  # module name -> the digest sent on this connection

    def greeting(self) -> bytes:
        return encode(hello(self.client_name, os.getpid()))

    @property
    def buffer_min(self) -> int:
        """The smallest buffer that travels in a memfd rather than in the pickle (buffers.min_bytes)."""
        return int(self.welcome.get("buffer_min") or oob.MIN_BUFFER) if self.welcome else oob.MIN_BUFFER

    def call(self, fn: Any, args: tuple, kwargs: dict, modules: UserModules) -> JobRequest:
        """A call as a job, its large buffers kept out of its pickle as this daemon says."""
        return jobspec.call(fn, args, kwargs, modules, self.buffer_min)

    def request(self, message: str, payload: bytes = b"", /, files: Any = (), buffer_bytes: int = 0,
                **fields: Any) -> tuple[int, Wire]:
        self.check_size(message, len(payload), buffer_bytes)
        req = next(self._req)
        return req, encode_parts({"t": message, "req": req, **fields}, payload, files)

    def check_size(self, message: str, payload_bytes: int, buffer_bytes: int) -> None:
        """FrameTooLarge when a request is over what the daemon (or its workers) accept."""
        limit = self.welcome.get("max_frame") if self.welcome is not None else None
        if limit and payload_bytes > limit:
            raise FrameTooLarge(f"this {message} is {payload_bytes} bytes, over the daemon's limit of "
                                f"{limit} (daemon.max_frame): pass large data by path, not by value")
        cap = self.welcome.get("buffer_max") if self.welcome is not None else None
        if cap and buffer_bytes > cap:
            raise FrameTooLarge(f"this {message}'s arrays are {buffer_bytes} bytes, over the daemon's "
                                f"limit of {cap} (buffers.max_bytes): pass them by path, or raise it")

    def submit(self, request: JobRequest, device: int | None, attach: bool,
               group: str | None = None) -> tuple[int, Wire]:
        """A "submit" frame, after a "source" frame for each module whose current source this
        connection has not sent yet. The bytes must go out in this order, before any later
        request's: the daemon takes a submit's modules from what the connection sent before it.
        """
        req, data = self.request("submit", request.payload, files=request.files,
                                 buffer_bytes=request.buffer_bytes,
                                 **request.submit_fields(device, attach, group))
        sources = []  # after the submit is made: a refused one (too large) sends nothing
        for module in request.modules:
            if self._sources_sent.get(module.name) != module.sha:
                sources.append(module.frame())
                self._sources_sent[module.name] = module.sha
        return req, [*sources, *data]

    def receive_data(self, data: bytes | memoryview, files: Any = ()) -> list[Delivery]:
        self.reader.receive_data(data, files)
        out: list[Delivery] = []
        while (frame := self.reader.next_frame()) is not None:
            if self.welcome is None:
                if frame.type != "welcome":
                    raise_for(frame)
                    raise ProtocolError(f"expected a welcome from the daemon, got {frame.type!r}")
                self.welcome = frame
                # Accept whatever the daemon may send: results up to its own frame limit.
                self.reader.max_payload = max(self.reader.max_payload, int(frame.get("max_frame") or 0))
                continue
            if frame.type in ("event", "done"):
                item = from_frame(frame)
                if item is not None:
                    out.append(JobItem(frame.header["job"], item))
            elif frame.type == "watch":
                out.append(WatchItem(frame))  # the snapshot answering "watch" also replies to it
                if isinstance(frame.get("req"), int):
                    out.append(Reply(frame.header["req"], frame))
            elif isinstance(frame.get("req"), int):
                out.append(Reply(frame.header["req"], frame))
            else:
                raise_for(frame)
        return out

    def eof(self) -> Exception:
        """The error to give every pending request when the daemon closes the connection."""
        if self.welcome is None:
            return DaemonUnavailable("the daemon closed the connection during the handshake "
                                     "(it may be stopping); try again")
        return DaemonUnavailable(f"the daemon (pid {self.welcome.get('pid')}) went away: it crashed, "
                                 "was killed or stopped; a new one starts on the next connection")

    def followed_job_error(self, job_id: str, error: BaseException, closed_here: bool) -> BaseException:
        """What a job this connection followed ends with when the connection ends first:
        the client's own close leaves it running; the daemon going away loses it; an error
        the daemon sent (it closed the connection on a bad frame) stands as it is."""
        if closed_here:
            return self.closed_while_following(job_id)
        if isinstance(error, WarmdError) and not isinstance(error, DaemonUnavailable):
            return error
        return self.job_lost(job_id)

    def job_lost(self, job_id: str) -> JobLost:
        """What a job this connection followed became when the daemon went away without
        ending it: a daemon that stops ends (cancels) its jobs first, so only a crash or a
        kill leaves one unended, and its workers die with it."""
        pid = self.welcome.get("pid") if self.welcome is not None else "?"
        return JobLost(job_id, f"job {job_id} is lost: the daemon (pid {pid}) went away while it was "
                               "queued or running, and its workers stopped with it; its result and "
                               "the rest of its output are gone. Submit it again")

    @staticmethod
    def closed_while_following(job_id: str) -> WarmdError:
        return WarmdError(f"this client was closed while it followed job {job_id}; the job goes on "
                          f"in the daemon: re-attach with attach({job_id!r}) or 'warmctl attach "
                          f"{job_id}'")


def job_rows(frame: Frame) -> list[JobInfo]:
    """The rows of a "jobs" reply (in its payload: more than a header may hold)."""
    return [JobInfo.from_row(row) for row in load_json(frame.payload or b"[]")]


def status_of(frame: Frame) -> Status:
    return Status.from_row({k: v for k, v in frame.header.items() if k not in ("t", "req")})


def cancel_fields(job_id: str, mode: str, interrupt_grace: float | None,
                  terminate_grace: float | None) -> dict[str, Any]:
    """A "cancel" request's fields; a grace that is not a finite number of seconds is refused
    here, as JSON would carry NaN as null and so as no override at all."""
    fields: dict[str, Any] = {"job": job_id, "mode": mode}
    for key, grace in (("interrupt_grace", interrupt_grace), ("terminate_grace", terminate_grace)):
        if grace is not None:
            try:
                fields[key] = parse_seconds(grace)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
    return fields


def raise_for(frame: Frame) -> Frame:
    """Return a reply frame, or raise the typed error an "error" frame stands for."""
    if frame.type != "error":
        return frame
    code, message = frame.get("code", "error"), frame.get("message", "request failed")
    if code == E_VERSION:
        raise VersionMismatch(message)
    if code == E_UNKNOWN_JOB:
        raise UnknownJob(code, message)
    if code == E_AMBIGUOUS_JOB:
        raise AmbiguousJob(code, message, list(frame.get("candidates") or []))
    if code == E_DENIED:
        raise DaemonUnavailable(message)
    raise RequestFailed(code, message)
