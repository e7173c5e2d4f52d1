"""Results handed from job to job by reference, as Dask and Ray pass futures.

A call's arguments may name other jobs (``warmd.ref(future)``); the submit lists
them as ``needs``. The job waits in the queue until they have all ended; if one
did not succeed, the job fails without running. Otherwise the worker receives
each needed result as a "result" frame just before the run and unpickles it in
place of the reference. The daemon forwards the pickled bytes it already holds
for the needed job's end; it never unpickles them. A needed result stays
retained (``pins``) until every job that needs it has started.
"""
from __future__ import annotations

from typing import Any, Callable

from ..protocol import encode_parts
from .jobs import SUCCEEDED, Job, JobTable

MAX_NEEDS = 1024


class UnknownNeed(LookupError):
    """A submit names a job whose result this daemon does not hold."""


class Handoff:
    def __init__(self, jobs: JobTable, fail: Callable[[Job, dict[str, Any]], None]) -> None:
        self.jobs = jobs
        self.fail = fail            # ends a job that cannot run (supervisor.finish_job)
        self._waiting: dict[str, list[Job]] = {}  # needed job id -> queued jobs that need it

    def resolve(self, ids: list[str]) -> tuple[Job, ...]:
        """The jobs a submit's ``needs`` names (full ids); UnknownNeed for one not held."""
        out = []
        for job_id in dict.fromkeys(ids):
            job = self.jobs.get(job_id)
            if job is None:
                raise UnknownNeed(job_id)
            out.append(job)
        return tuple(out)

    def attach(self, job: Job, needs: tuple[Job, ...]) -> None:
        job.needs = needs
        for need in needs:
            need.pins += 1
            if not need.finished_state:
                self._waiting.setdefault(need.id, []).append(job)

    @staticmethod
    def ready(job: Job) -> bool:
        return all(n.finished_state for n in job.needs)

    @staticmethod
    def unmet(needs: tuple[Job, ...]) -> Job | None:
        """A needed job that has already ended without a result to hand on, if any."""
        return next((n for n in needs if n.finished_state and n.state != SUCCEEDED), None)

    @staticmethod
    def failure(need: Job) -> dict[str, Any]:
        """The end of a job that cannot run because ``need`` did not succeed."""
        return {"state": "failed", "exit_status": 1,
                "error": {"type": "DependencyFailed", "traceback": "",
                          "message": f"job {need.id} ({need.name}), whose result this job takes as an "
                                     f"argument, ended {need.state}: this job did not run"}}

    def pieces(self, job: Job) -> list:
        """The "result" frames a worker takes in before running ``job``, as pieces: each
        result goes from the bytes the daemon keeps, uncopied."""
        return [piece for n in job.needs
                for piece in encode_parts({"t": "result", "job": n.id,
                                           "buffers": (n.done_header or {}).get("buffers") or []},
                                          n.result, n.result_files)]

    def started(self, job: Job) -> None:
        """``job`` has its results (or ended without them): they need not be kept for it."""
        if not job.needs:
            return
        for need in job.needs:
            need.pins -= 1
        job.needs = ()
        self.jobs.evict()

    def ended(self, need: Job) -> list[Job]:
        """``need`` has ended: jobs waiting on it that can no longer run fail; returns the
        ones it may have made ready to run."""
        waiting = self._waiting.pop(need.id, [])
        if need.state == SUCCEEDED:
            return waiting
        for job in waiting:
            if job.finished_state or not self.jobs.unqueue(job):
                continue
            self.fail(job, self.failure(need))
        return []
