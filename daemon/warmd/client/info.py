"""What ``jobs()``, ``status()`` and ``watch()`` describe, as typed records.

Each is built from the row the daemon sends (``from_row``) and gives it back
unchanged (``to_json``), so ``warmctl ... --json`` prints what the daemon said; a
key a newer daemon adds lands in ``extra`` rather than failing an older client.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable, TypeVar

T = TypeVar("T")


def _build(cls: type[T], row: dict[str, Any], **typed: Any) -> T:
    names = {f.name for f in dataclasses.fields(cls)} - {"extra", "raw"}  # type: ignore[arg-type]
    known = {k: v for k, v in row.items() if k in names}
    extra = {k: v for k, v in row.items() if k not in names}
    return cls(**{**known, **typed}, extra=extra, raw=row)  # type: ignore[call-arg]


@dataclass(frozen=True)
class JobInfo:
    """One job the daemon holds: ``warmctl jobs``'s row."""
    id: str
    state: str                       # queued, running, succeeded, failed, cancelled, lost
    kind: str                        # call, script, code, module, group
    name: str
    submitted: float                 # Unix time
    started: float | None = None
    finished: float | None = None
    worker_pid: int | None = None
    client_pid: int | None = None
    device: int | None = None
    exit_status: int | None = None
    error: str | None = None         # the message of a failed job's error
    events: int = 0                  # events in its stream so far
    parent: str | None = None        # the job that submitted it
    group: str | None = None         # the group it belongs to
    progress: dict[str, Any] | None = None   # its last report: done, total, message, fields
    priority: int = 0
    timeout: float | None = None
    timed_out: bool = False
    children: dict[str, int] | None = None   # jobs below it: done, total
    seconds: float | None = None     # how long it ran, as its worker measured
    peak_rss: int | None = None      # bytes: its worker's peak resident set during it
    gpu_peak_bytes: int | None = None  # a GPU job's peak use of its device's memory pool
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def job_id(self) -> str:
        return self.id

    @property
    def finished_state(self) -> bool:
        return self.state not in ("queued", "running")

    @property
    def fraction(self) -> float | None:
        """How far along it is, 0 to 1: its children's count when it has any, else its own
        report when that has a total; None when not known."""
        if self.children and self.children.get("total"):
            return self.children["done"] / self.children["total"]
        progress = self.progress or {}
        if progress.get("total"):
            return min(1.0, max(0.0, progress["done"] / progress["total"]))
        return None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "JobInfo":
        return _build(cls, row)

    def to_json(self) -> dict[str, Any]:
        return self.raw

    def with_progress(self, progress: dict[str, Any] | None,
                      children: dict[str, int] | None) -> "JobInfo":
        """This row with a newer progress report (from the watch stream)."""
        row = {**self.raw, "progress": progress}
        if children is not None:
            row["children"] = children
        return JobInfo.from_row(row)


@dataclass(frozen=True)
class WorkerInfo:
    """One worker process: a row of ``warmctl status``."""
    slot: int
    pid: int
    pgid: int
    state: str                       # warming, idle, busy, stopping, failed, exited
    device: int | None = None
    token: str | None = None
    jobs_run: int = 0
    job: str | None = None           # the job it runs
    held: str | None = None          # the job it will run next
    progress: dict[str, Any] | None = None
    warmup_seconds: float | None = None
    warmup_step: str | None = None   # the warm-up step running now, while warming
    warmup_steps: list[dict[str, Any]] = field(default_factory=list)
    rss: int | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)   # gpu: its device's pool
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def live(self) -> bool:
        return self.state in ("warming", "idle", "busy", "held")

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "WorkerInfo":
        return _build(cls, row)

    def to_json(self) -> dict[str, Any]:
        return self.raw


@dataclass(frozen=True)
class Status:
    """The daemon's state: ``warmctl status``."""
    summary: str
    daemon: dict[str, Any]           # pid, version, started_by, socket, uptime, python, config
    capacity: dict[str, Any]         # workers, spares, mode, extra, max_extra
    workers: list[WorkerInfo]
    jobs: dict[str, int]             # counts by state
    devices: list[dict[str, Any]] = field(default_factory=list)
    warmup_error: str | None = None
    warmup_retry_in: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def pid(self) -> int:
        return self.daemon["pid"]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Status":
        return _build(cls, row, workers=[WorkerInfo.from_row(w) for w in row.get("workers") or []])

    def to_json(self) -> dict[str, Any]:
        return self.raw


def family(jobs: Iterable[JobInfo], root: str) -> list[JobInfo]:
    """The job ``root`` and every job below it (its children, the groups it opened and
    their jobs, and theirs), as listed in ``jobs``, in their order."""
    jobs = list(jobs)
    ids, grew = {root}, True
    while grew:
        grew = False
        for job in jobs:
            if job.id not in ids and (job.parent in ids or job.group in ids):
                ids.add(job.id)
                grew = True
    return [job for job in jobs if job.id in ids]
