"""What ``warmctl top`` shows, worked out from the watch stream (the verb is ``topcmd``,
the Textual app ``topapp``).

What the tables and the output pane show is worked out here, by plain code over
the watch events (``TopModel``, ``worker_rows``, ``job_rows``, ``OutputLines``),
so it can be tested without a terminal; the app only moves it onto widgets.
"""
from __future__ import annotations

import fnmatch
import logging
import time
from typing import Any, Iterable, Mapping

from ..client.events import Finished, Gap, Log, Output, StateChange, Warming
from ..client.info import JobInfo, WorkerInfo
from ..client.watch import JobChanged, JobProgress, Snapshot, StatusChanged, WorkerChanged
from . import render

# (key, heading, width) of each column
WORKER_COLUMNS = (("pid", "PID", 8), ("device", "DEVICE", 6), ("state", "STATE", 8),
                  ("warmup", "WARM-UP", 14), ("jobs", "JOBS", 5), ("rss", "RSS", 9),
                  ("gpu", "GPU POOL", 20))
JOB_COLUMNS = (("id", "JOB", 12), ("name", "NAME", 34), ("state", "STATE", 20),
               ("progress", "PROGRESS", 17), ("elapsed", "ELAPSED", 8), ("worker", "WORKER", 8))
BAR_WIDTH = 10
Row = tuple[str, ...]


# ---------------------------------------------------------------- rows

def device_text(device: int | None) -> str:
    return "cpu" if device is None else f"gpu{device}"


def gpu_pool(worker: WorkerInfo) -> str:
    """The worker's CUDA memory pool, from what its warm-up reported: pool/limit."""
    gpu = worker.extra.get("gpu")
    if not isinstance(gpu, dict):
        return "-"
    pool, limit = gpu.get("pool_bytes"), gpu.get("memory_limit")
    if pool is None:
        return str(gpu.get("name") or "-")
    return render.size(pool) + (f"/{render.size(limit)}" if limit else "")


def worker_row(worker: WorkerInfo) -> Row:
    if worker.warmup_seconds is not None:
        warmup = render.duration(worker.warmup_seconds)
    else:
        warmup = worker.warmup_step or "-"
    return (str(worker.pid), device_text(worker.device), worker.state, render.shown_name(warmup, 14),
            str(worker.jobs_run), render.size(worker.rss), gpu_pool(worker))


def progress_text(job: JobInfo) -> str:
    """A bar with the percentage when the fraction is known (``[####......]  40%``), else
    the count so far, else ``-``."""
    fraction = job.fraction
    if fraction is not None:
        # the columns that make render's bar exactly BAR_WIDTH wide before the count
        return render.bar_line(fraction, f" {100 * fraction:3.0f}%", "", BAR_WIDTH + 9)
    return render.own_progress(job.to_json()) or "-"


def elapsed_text(job: JobInfo, now: float) -> str:
    return render.duration((job.finished or now) - job.started) if job.started else "-"


def job_row(job: JobInfo, depth: int, now: float) -> Row:
    name = ("  " * (depth - 1) + "└ " if depth else "") + render.shown_name(job.name or job.kind)
    state = job.state + (" (timed out)" if job.timed_out else "")
    return (job.id, name, state, progress_text(job), elapsed_text(job, now),
            "-" if job.worker_pid is None else str(job.worker_pid))


def matches(job: JobInfo, pattern: str) -> bool:
    """The ``/`` filter: a shell pattern when it has one of ``*?[``, else a substring of the
    name; either way ignoring case."""
    if not pattern:
        return True
    pattern, name = pattern.lower(), (job.name or "").lower()
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name


def job_order(jobs: Mapping[str, JobInfo], pattern: str = "") -> list[tuple[int, JobInfo]]:
    """(depth, job) in tree order (``render.job_tree``), only the jobs ``pattern`` matches."""
    tree = render.job_tree([j.to_json() for j in jobs.values()])
    return [(depth, jobs[row["id"]]) for depth, row in tree if matches(jobs[row["id"]], pattern)]


def worker_rows(state: Any) -> list[tuple[str, Row]]:
    """(key, cells) per live worker of a ``WatchState`` (or ``Snapshot``, or ``TopModel``)."""
    workers: Iterable[WorkerInfo] = state.workers.values()
    return [(str(w.pid), worker_row(w)) for w in sorted(workers, key=lambda w: (w.slot, w.pid))]


def job_rows(state: Any, pattern: str = "", now: float | None = None) -> list[tuple[str, Row]]:
    """(key, cells) per job of a ``WatchState`` (or ``Snapshot``...), as a tree."""
    now = time.time() if now is None else now
    return [(job.id, job_row(job, depth, now)) for depth, job in job_order(state.jobs, pattern)]


class TopModel:
    """What the app shows, kept from the watch events. ``apply`` returns what to redraw:
    ``"all"`` (a snapshot), ``"job"``, ``"worker"`` or ``"status"``."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobInfo] = {}
        self.workers: dict[int, WorkerInfo] = {}
        self.summary = ""
        self.daemon: dict[str, Any] = {}
        self.pattern = ""

    def apply(self, event: Any) -> str | None:
        if isinstance(event, Snapshot):
            self.jobs, self.workers = dict(event.jobs), dict(event.workers)
            if event.status is not None:
                self.summary, self.daemon = event.status.summary, dict(event.status.daemon)
            return "all"
        if isinstance(event, JobChanged):
            if event.change == "dropped":
                self.jobs.pop(event.job.id, None)
            else:
                self.jobs[event.job.id] = event.job
            return "job"
        if isinstance(event, JobProgress):
            self.jobs[event.job.id] = event.job
            return "job"
        if isinstance(event, WorkerChanged):
            if event.worker.live:
                self.workers[event.worker.pid] = event.worker
            else:
                self.workers.pop(event.worker.pid, None)
            return "worker"
        if isinstance(event, StatusChanged):
            self.summary = event.summary
            return "status"
        return None

    def worker_rows(self) -> list[tuple[str, Row]]:
        return worker_rows(self)

    def job_rows(self, now: float | None = None) -> list[tuple[str, Row]]:
        return job_rows(self, self.pattern, now)

    def depth(self, job: JobInfo) -> int:
        depth, seen = 0, {job.id}
        owner = job.group or job.parent
        while owner in self.jobs and owner not in seen:
            seen.add(owner)
            depth += 1
            above = self.jobs[owner]
            owner = above.group or above.parent
        return depth

    def job_cells(self, job_id: str, now: float | None = None) -> Row | None:
        """The row of one job; None when it is gone or the filter hides it."""
        job = self.jobs.get(job_id)
        if job is None or not matches(job, self.pattern):
            return None
        return job_row(job, self.depth(job), time.time() if now is None else now)

    def worker_cells(self, pid: int) -> Row | None:
        worker = self.workers.get(pid)
        return None if worker is None else worker_row(worker)

    def header(self, socket: str) -> str:
        d = self.daemon
        who = f"warmd {d.get('version', '?')} (pid {d.get('pid', '?')})" if d else "warmd"
        line = f"{who}: {self.summary}" if self.summary else who
        return line + (f"  [filter: {self.pattern}]" if self.pattern else "") + f"  ({socket})"


# ---------------------------------------------------------------- the output pane

MAX_PENDING = 4096  # a partial line longer than this is shown without waiting for its end


class OutputLines:
    """A followed job's events as whole lines for the pane: (text, style), where style is
    "" for stdout, "stderr", "log", "warning" or "note"."""

    def __init__(self) -> None:
        self.pending: dict[str, str] = {}
        self.warm_step: str | None = None

    def feed(self, event: Any) -> list[tuple[str, str]]:
        if isinstance(event, Output):
            style = "" if event.stream == "stdout" else "stderr"
            text = self.pending.pop(event.stream, "") + event.text
            *whole, rest = text.split("\n")
            if len(rest) > MAX_PENDING:
                whole, rest = whole + [rest], ""
            if rest:
                self.pending[event.stream] = rest
            return [(line.rstrip("\r"), style) for line in whole]
        if isinstance(event, Log):
            style = "warning" if event.level >= logging.WARNING else "log"
            head = f"{logging.getLevelName(event.level)}:{event.name}:"
            return [(head + line, style) for line in event.message.splitlines() or [""]]
        if isinstance(event, Gap):
            return [(event.describe(), "warning")]
        if isinstance(event, Warming) and event.step != self.warm_step:
            self.warm_step = event.step
            return [(f"waiting for a worker to warm up: {event.step}", "note")]
        if isinstance(event, StateChange) and event.state == "running":
            where = f" on worker {event.worker_pid}" if event.worker_pid else ""
            return [(f"started{where}", "note")]
        return []

    def flush(self) -> list[tuple[str, str]]:
        out = [(text, "" if stream == "stdout" else "stderr") for stream, text in self.pending.items()]
        self.pending.clear()
        return out

    def finish(self, end: Finished | None) -> list[tuple[str, str]]:
        """The partial lines left, then how the job ended (None: the connection did)."""
        out = self.flush()
        if end is None:
            return out + [("[the connection to the daemon ended before the job did]", "warning")]
        error = end.error or {}
        if end.state == "failed" and error.get("type") != "SystemExit":
            tb = error.get("traceback") or f"{error.get('type')}: {error.get('message')}"
            out += [(line, "stderr") for line in tb.rstrip("\n").splitlines()]
        why = f": {error['message']}" if end.state in ("cancelled", "lost") and error.get("message") else ""
        out.append((f"[job {end.job} {end.state}, exit status {end.exit_status}{why}]", "note"))
        return out
