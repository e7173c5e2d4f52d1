"""The watch stream: what a front end shows, pushed as it changes, so it never polls.

A connection that sends "watch" gets a snapshot first (the daemon's status and every
job it holds, as ``status`` and ``jobs`` answer), then "watch" frames for what
changes: a job submitted, started, ended or dropped (its whole row, as ``jobs`` lists
it); a job's progress, or the roll-up of its children's, at most ten times a second
per job; a worker that changed state (its row, as ``status`` lists it: warming,
idle, busy, stopping, exited, with warm-up steps and timings); and the status
summary when it changes. Changes go out together every FLUSH_INTERVAL: a job or a
worker that changed more than once in it is one event with its row as it is then
(a job's lists its changes in order), so a daemon running a thousand jobs a second
writes to and wakes each front end fifty times a second, not thousands.

Each watcher's backlog is bounded by its connection's write buffer
(``connections.HIGH_WATER``). A watcher that falls behind is sent nothing more until
its buffer drains, then a fresh snapshot marked ``resync``: it never stalls the
daemon, never costs it more than that buffer, and is consistent again at once.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

from ..protocol import dump_json, encode
from .connections import HIGH_WATER, ClientConnection
from .jobs import RUNNING, Job
from .pool import WorkerProcess

PROGRESS_INTERVAL = 0.1  # seconds between two progress events of one job
FLUSH_INTERVAL = 0.02    # events go out together at most this late: a front end's frame rate


class Host(Protocol):
    batch: Any
    jobs: Any

    def status(self) -> dict[str, Any]: ...
    def summary(self) -> str: ...
    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> Any: ...


class Watchers:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.behind: dict[ClientConnection, bool] = {}  # the watchers: whether each fell behind
        self._progress: dict[str, Job] = {}          # jobs whose progress is due to go out
        self._timer: Any = None
        self._progress_ready = False                 # PROGRESS_INTERVAL has passed for them
        self._jobs: dict[str, tuple[Job, list[str]]] = {}   # changed in this interval: how
        self._workers: dict[int, WorkerProcess] = {}        # changed in this interval
        self._flush_due = False
        self._status_due = False
        self._summary: str | None = None

    def __bool__(self) -> bool:
        return bool(self.behind)

    # ---------------------------------------------------------------- watchers

    def add(self, conn: ClientConnection, req: Any) -> None:
        self._flush()  # what happened before the snapshot must not come after it
        self.behind[conn] = False
        self._summary = self.host.summary()
        conn.write(self._snapshot(req, resync=False))

    def remove(self, conn: ClientConnection) -> bool:
        return self.behind.pop(conn, None) is not None

    def catch_up(self, conn: ClientConnection) -> None:
        """``conn``'s buffer drained: a watcher that missed events gets a fresh snapshot."""
        if self.behind.get(conn) and not self._full(conn):
            self._flush()  # to the others: it has all this in its snapshot
            self.behind[conn] = False
            conn.write(self._snapshot(None, resync=True))

    def _snapshot(self, req: Any, resync: bool) -> list[bytes]:
        jobs = dump_json([job.summary() for job in self.host.jobs.jobs.values()])
        header = {"t": "watch", "event": "snapshot", "resync": resync, "status": self.host.status()}
        if req is not None:
            header["req"] = req
        return [encode(header, jobs)]

    # ---------------------------------------------------------------- changes

    def job_event(self, job: Job, fields: dict[str, Any]) -> None:
        """An event of ``job``'s own stream, as far as watchers care: its progress or its
        children's (``child``), and its start."""
        kind = fields["kind"]
        if kind in ("progress", "child"):
            self.progress(job)
        elif kind == "state":
            self.job(job, "started" if fields["state"] == RUNNING else fields["state"])

    def job(self, job: Job, change: str) -> None:
        """``change``: submitted, started, ended (or another state it moved to)."""
        if self.behind:
            self._jobs.setdefault(job.id, (job, []))[1].append(change)
            self._schedule()

    def dropped(self, job: Job) -> None:
        """``job`` left the table (expired or forgotten): front ends drop its row."""
        self.job(job, "dropped")

    def progress(self, job: Job) -> None:
        """``job``'s progress, or its children's, moved: sent within PROGRESS_INTERVAL."""
        if self.behind:
            self._progress[job.id] = job
            if self._timer is None:
                self._timer = self.host.call_later(PROGRESS_INTERVAL, self._progress_due)

    def _progress_due(self) -> None:
        self._timer = None
        self._progress_ready = True
        self._schedule()

    def worker(self, worker: WorkerProcess) -> None:
        if self.behind:
            self._workers[worker.pid] = worker
            self._schedule()

    def status(self) -> None:
        """The summary may have changed (it counts every job the daemon holds: worked out
        once per interval, not once per change)."""
        if self.behind:
            self._status_due = True
            self._schedule()

    # ---------------------------------------------------------------- sending

    def _schedule(self) -> None:
        if not self._flush_due:
            self._flush_due = True
            self.host.call_later(FLUSH_INTERVAL, self._flush)

    def _flush(self) -> None:
        """What changed in the last interval, as one write to each watcher: a job or worker
        that changed several times in it is one event, its row as it is now, a job's event
        listing its changes in order. However busy the daemon, a front end is written to
        and woken at most once per FLUSH_INTERVAL."""
        self._flush_due = False
        events = []
        jobs, self._jobs = self._jobs, {}
        for job, changes in jobs.values():
            self._progress.pop(job.id, None)  # the row has it
            row = {"id": job.id} if changes[-1] == "dropped" else job.summary()
            events.append({"t": "watch", "event": "job", "change": changes[-1], "changes": changes,
                           "job": row})
        if self._progress_ready:
            self._progress_ready = False
            due, self._progress = self._progress, {}
            for job in due.values():
                row = job.summary()
                events.append({"t": "watch", "event": "progress", "job": job.id,
                               "progress": row["progress"],
                               **({"children": row["children"]} if "children" in row else {})})
        workers, self._workers = self._workers, {}
        events += [{"t": "watch", "event": "worker", "worker": w.describe()} for w in workers.values()]
        if self._status_due:
            self._status_due = False
            summary = self.host.summary()
            if summary != self._summary:
                self._summary = summary
                events.append({"t": "watch", "event": "status", "summary": summary,
                               "jobs": self.host.jobs.counts()})
        if not events:
            return
        data = b"".join(encode(e) for e in events)
        for conn, behind in self.behind.items():
            if behind:
                continue
            if self._full(conn):
                self.behind[conn] = True  # nothing more until it drains; then a snapshot
                continue
            conn.write(data)

    def _full(self, conn: ClientConnection) -> bool:
        return conn.held_back() or self.host.batch.held_bytes(conn) >= HIGH_WATER
