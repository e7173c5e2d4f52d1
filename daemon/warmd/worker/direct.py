"""A session's direct channel, worker side.

While a session holds this worker, its client's calls come straight from the client
over a socketpair the daemon made and passed to both ends (SCM_RIGHTS), and their
results go straight back: the daemon is not in their path. It stays in control: the
worker tells it each call's start ("began", before the call runs, so cancel and
``warmctl jobs`` see it) and end ("done" with ``direct``, after the caller has the
result), and the call's output goes to the daemon as any job's does.

The daemon's own frames come first: its "release" stops the session's calls, and
its "resume" or "exit" must never wait behind a client that keeps sending.
"""
from __future__ import annotations

import re
import select
import socket
import time
from collections import deque
from typing import Any

from ..channel import Channel
from ..errors import ProtocolError
from ..protocol import Frame

_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class Inbox:
    """Where the worker's next frame comes from: the daemon, and the client of the session
    that holds this worker, if one does."""

    def __init__(self, daemon: Channel) -> None:
        self.daemon = daemon
        self.waiting: deque[Frame] = deque()  # the daemon's, kept while a cancelled job's end settles
        self.session: str | None = None
        self.direct: Channel | None = None
        self.page: Any = None  # the call page shared with the daemon (see warmd.callpage)
        self.checked_paths: list[str] | None = None  # the last call's import paths, checked

    def next(self) -> tuple[Frame | None, bool]:
        """The next frame and whether it came from the session's client; (None, False) when
        the daemon is gone."""
        if self.waiting:
            return self.waiting.popleft(), False
        while self.direct is not None:
            frame = self.daemon.reader.next_frame()
            if frame is not None:
                return frame, False
            try:
                frame = self.direct.reader.next_frame()
            except ProtocolError:
                self._drop_direct()
                continue
            if frame is not None:
                return frame, True
            ready = select.select([self.daemon.sock, self.direct.sock], [], [])[0]
            if self.daemon.sock in ready:
                return self.daemon.recv(), False
            try:
                frame = self.direct.recv()
            except (ProtocolError, OSError):
                frame = None
            if frame is not None:
                return frame, True
            self._drop_direct()  # the client went away: the daemon releases this worker
        return self.daemon.recv(), False

    def hold(self, session: str, sock: socket.socket, page: Any, max_payload: int) -> None:
        self.release()
        self.session = session
        self.direct = Channel(sock, max_payload)
        self.page = page

    def release(self) -> None:
        self._drop_direct()
        self.session = None
        if self.page is not None:
            self.page.close()
            self.page = None

    def _drop_direct(self) -> None:
        if self.direct is not None:
            self.direct.close()
            self.direct = None

    def reply(self, header: dict[str, Any], payload: bytes = b"", files: tuple = ()) -> None:
        """Send a call's end to the client; one that went away is not waited for."""
        if self.direct is None:
            return
        try:
            self.direct.send(header, payload, files)
        except OSError:
            self._drop_direct()


def check_call(header: dict[str, Any]) -> str | None:
    """Why a session call's header cannot run (None: it can): its id is the one thing the
    worker needs before it can answer at all."""
    job = header.get("job")
    if not isinstance(job, str) or not _JOB_ID.fullmatch(job):
        return "a session call needs a job id of letters, digits, '.', '_' or '-' (64 at most)"
    if header.get("kind") != "call":
        return "a session runs calls only"
    return None


def direct_end(end: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """What the caller gets: the end, with what the daemon would have added to it."""
    return {**end, **info, "finished": time.time()}


def notice_of(end: dict[str, Any], payload: bytes) -> dict[str, Any]:
    """What the daemon gets of a call's end: all of it but the result, which only its
    caller has (the daemon keeps no copy)."""
    notice = {k: v for k, v in end.items() if k != "buffers"}
    notice["direct"] = True
    if payload and end.get("state") == "succeeded":
        notice["result_elsewhere"] = True
    return notice
