"""Turning a job's end into a return value or the right exception."""
from __future__ import annotations

import concurrent.futures
from typing import Any

from .. import oob
from ..errors import (JobExit, JobLost, JobTimedOut, RemoteError, RemoteTraceback, ResultElsewhere,
                      WarmdError)
from .events import Finished


class JobCancelled(WarmdError, concurrent.futures.CancelledError):
    """The job was cancelled (by this client or another). A ``concurrent.futures``
    CancelledError, as a cancelled future's ``result()`` raises, with the reason."""

    def __init__(self, job_id: str, message: str = "") -> None:
        super().__init__(message or f"job {job_id} was cancelled")
        self.job_id = job_id


def result_of(end: Finished) -> Any:
    """The job's return value; raises what the job raised, or why it has no result."""
    if end.state == "succeeded":
        if end.info.get("result_lost"):
            raise JobLost(end.job, f"job {end.job} succeeded, but warmd was restarted since and "
                                   "its result was not kept across the restart; submit it again")
        if not end.payload:
            if end.info.get("result_elsewhere"):
                raise ResultElsewhere(end.job, f"job {end.job} was a session's call: its result went to "
                                               "its caller alone, and the daemon keeps none")
            return None
        import cloudpickle
        return oob.loads(end.payload, end.info.get("buffers"), end.files, cloudpickle.loads)
    error = end.error or {}
    if end.info.get("timed_out"):
        raise JobTimedOut(end.job, error.get("message", ""))
    if end.state == "cancelled":
        raise JobCancelled(end.job, error.get("message", ""))
    if end.state == "lost":
        raise JobLost(end.job, error.get("message", f"job {end.job} was lost"))
    if error.get("type") == "SystemExit":
        raise JobExit(end.job, end.exit_status)
    raise remote_exception(end)


def remote_exception(end: Finished) -> BaseException:
    """The job's exception as its own type when it unpickles here, else a RemoteError."""
    error = end.error or {}
    tb = error.get("traceback", "")
    if end.payload:
        try:
            import cloudpickle
            exc = cloudpickle.loads(end.payload)
        except Exception:
            exc = None
        if isinstance(exc, BaseException):
            exc.__cause__ = RemoteTraceback(tb)
            return exc
    return RemoteError(error.get("type", "Exception"), error.get("message", ""), tb)
