"""What the blocking client's reader thread hands replies to: a caller waiting for one
(``Pending``), a job handle (``JobFuture``), or a re-attach after a reconnect."""
from __future__ import annotations

import threading

from ..protocol import Frame
from .future import JobFuture


class Pending:
    __slots__ = ("event", "frame", "error")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.frame: Frame | None = None
        self.error: BaseException | None = None


class Reattach:
    """The waiter of an "attach" sent after a reconnect: the job's handles carry on."""
    __slots__ = ("job_id",)

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id


def fail_waiting(waiting: list, error: BaseException) -> None:
    """Requests that had no answer when the connection ended."""
    for w in waiting:
        if isinstance(w, JobFuture):
            if not w.done():
                w._fail(error)
        elif isinstance(w, Pending):
            w.error = error
            w.event.set()
