"""Jobs again, and jobs forgotten. ``restart`` submits a finished script, code or module
job again as it was (its arguments, environment, directory and options); a call job's
pickled payload is dropped when it starts, so it cannot be. ``forget`` drops finished
jobs from the table before their time."""
from __future__ import annotations

from .jobs import Job

RESTARTABLE = ("script", "code", "module")


def again(job: Job, new_id: str, client_pid: int | None, replay_limit: int) -> Job | str:
    """A new job that runs as ``job`` did, or why there is none."""
    if job.kind not in RESTARTABLE:
        return (f"job {job.id} is a {job.kind} job: only script, code and module jobs can be "
                "restarted (a call's pickled arguments are not kept once it starts); submit it again")
    if not job.finished_state:
        return f"job {job.id} is {job.state}: wait for it to end, or cancel it, then restart it"
    # Its stdin was read (or is still held by whoever passed it): the new job reads /dev/null.
    run = {key: value for key, value in job.run_header.items() if key != "stdin"}
    return Job(new_id, job.kind, job.name, run, job.payload, client_pid, job.device,
               replay_limit=replay_limit, priority=job.priority, timeout=job.timeout)


def kept_because(job: Job) -> str | None:
    """Why ``forget`` must keep ``job``, if it must."""
    if not job.finished_state:
        return f"{job.state}: only finished jobs are forgotten (cancel it first)"
    if job.pins:
        return "a queued job takes its result"
    return None
