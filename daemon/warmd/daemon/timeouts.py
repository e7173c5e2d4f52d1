"""Job timeouts: a job still running when its timeout passes is cancelled (interrupt,
then terminate, then kill, as any cancel), and its end says it timed out."""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from .jobs import SUCCEEDED, Job

EXIT_TIMED_OUT = 124  # as timeout(1) exits


class Timeouts:
    def __init__(self, call_later: Callable[..., asyncio.TimerHandle],
                 cancel: Callable[[Job], Any]) -> None:
        self.call_later = call_later
        self.cancel = cancel
        self._timers: dict[Job, asyncio.TimerHandle] = {}

    def started(self, job: Job) -> None:
        if job.timeout:
            self._timers[job] = self.call_later(job.timeout, self._expired, job)

    def ended(self, job: Job) -> None:
        timer = self._timers.pop(job, None)
        if timer is not None:
            timer.cancel()

    def _expired(self, job: Job) -> None:
        self._timers.pop(job, None)
        if not job.finished_state:
            job.timed_out = True
            self.cancel(job)


def end_header(job: Job, header: dict[str, Any]) -> dict[str, Any]:
    """A timed-out job's end (one that ended well all the same stays as it is)."""
    if not job.timed_out:
        return header
    return timed_out_end(header, job.id, job.name, job.timeout)


def timed_out_end(header: dict[str, Any], job_id: str, name: str, timeout: float) -> dict[str, Any]:
    """The end of a job cancelled for running past its timeout: the daemon's, and a session
    worker's for the call's caller."""
    if header.get("state") == SUCCEEDED:
        return header
    error = header.get("error") or {}
    return {**header, "state": "failed", "exit_status": EXIT_TIMED_OUT, "timed_out": True,
            "error": {"type": "TimeoutError", "traceback": error.get("traceback", ""),
                      "message": f"job {job_id} ({name}) ran past its timeout of {timeout:g} s "
                                 "and was cancelled"}}
