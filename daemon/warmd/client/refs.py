"""References to other jobs' results, passed as arguments (``warmd.ref``).

A reference pickles as a call of ``resolve(job_id)``; the worker that runs the
call puts the job's result in its place (see ``warmd.worker.execute``), so the
result goes from job to job through the daemon without this process unpickling
it. A ``JobFuture`` or ``AsyncJob`` passed as an argument is a reference too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ResultRef:
    """The result of job ``job_id``, to be passed to another job as an argument."""
    job_id: str

    def __warmd_ref__(self) -> str:
        return self.job_id


def ref(job: Any) -> ResultRef:
    """A reference to a job's result: ``job`` is a job id, a ``JobFuture`` or an ``AsyncJob``."""
    if isinstance(job, str):
        if not job:
            raise ValueError("warmd.ref: a job id cannot be empty")
        return ResultRef(job)
    ref_of = getattr(type(job), "__warmd_ref__", None)
    if ref_of is None:
        raise TypeError(f"warmd.ref takes a job id, a JobFuture or an AsyncJob, not {type(job).__name__}")
    return ResultRef(ref_of(job))


def resolve(job_id: str) -> Any:
    """Stands for job ``job_id``'s result; only a warm worker running a call can resolve it."""
    raise RuntimeError(f"a reference to the result of job {job_id} can only be resolved by a warmd "
                       "worker running a call that takes it as an argument")
