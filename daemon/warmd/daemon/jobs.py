"""Jobs as the daemon sees them, and the table that queues and retains them.

The daemon never looks inside a job's payload or result: both stay bytes.
Output events are kept pre-encoded, within a byte budget, so a late ``attach``
replays them verbatim (see ``streams``).
"""
from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ..protocol import encode, encode_parts, wire_size
from .jobids import JobIds
from .streams import DEFAULT_REPLAY_BYTES, Cursor, Replay

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, LOST = (
    "queued", "running", "succeeded", "failed", "cancelled", "lost")
FINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED, LOST})
EXIT_LOST = 125  # exit status of a job whose worker died under it


@dataclass(frozen=True, slots=True)
class ModuleCopy:
    """A user's module source as a client sent it: encoded once, forwarded to each worker
    that lacks this version (the daemon never compiles or runs it)."""
    name: str
    sha: str
    frame: bytes


@dataclass(eq=False)
class Job:
    id: str
    kind: str
    name: str
    run_header: dict[str, Any]
    payload: bytes
    client_pid: int | None
    device: int | None
    files: tuple = ()        # descriptors of the call's buffers (warmd.memfd.Descriptor): until it runs
    priority: int = 0        # higher starts first among queued jobs
    timeout: float = 0.0     # seconds it may run before it is cancelled (0: no limit)
    timed_out: bool = False  # its timeout passed: its end says so
    submitted: float = field(default_factory=time.time)
    state: str = QUEUED
    started: float | None = None
    finished: float | None = None
    worker_pid: int | None = None
    replay_limit: int = DEFAULT_REPLAY_BYTES
    done_frame: bytes | list | None = None  # its pieces (see protocol.encode_parts)
    done_header: dict[str, Any] | None = None
    subscribers: dict[Any, Cursor] = field(default_factory=dict)  # connections streaming events
    waiters: set[Any] = field(default_factory=set)      # connections wanting only "done"
    modules: tuple[ModuleCopy, ...] = ()                # sources the worker needs before the run
    cancel: Any = None                                  # daemon.cancel.Cancellation while cancelling
    fetched: bool = False
    # Families (see ``groups``): the running job that submitted this one, the group it joined,
    # and the jobs that name this one as their group or (having none) their parent.
    parent: "Job | None" = None
    group: "Job | None" = None
    children: dict["Job", None] = field(default_factory=dict)  # in order; evicted ones leave
    descendants: int = 0            # jobs below this one (groups not counted)
    descendants_done: int = 0       # of those, the ones that ended
    queued_below: int = 0           # of those, the ones in the queue now (see JobTable)
    children_left: int = 0          # children (groups too) that have not ended
    children_count: int = 0         # children it ever had
    children_failed: int = 0        # of those, the ones that ended other than succeeded
    first_failed: str | None = None  # which one did first, for a group's end
    progress: dict[str, Any] | None = None  # the latest report of warmd.progress
    open: bool = False              # a group that still takes jobs
    needs: tuple["Job", ...] = ()   # jobs whose results this one takes as arguments
    result: bytes | memoryview = b""  # the pickled result, as the end frame carries it
    result_files: tuple = ()        # descriptors of its buffers, sent with the end frame
    result_file_bytes: int = 0      # what those files hold
    pins: int = 0                   # queued jobs that need this one's result: kept until they start

    def __post_init__(self) -> None:
        self.replay = Replay(self.replay_limit)

    @property
    def finished_state(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def stored_bytes(self) -> int:
        """What the daemon holds for this job: its kept events and its end (with the result)."""
        return (self.replay.bytes + (wire_size(self.done_frame) if self.done_frame else 0)
                + self.result_file_bytes)

    def add_event(self, fields: dict[str, Any], payload: bytes = b"", output: int | None = None) -> bytes:
        frame = encode({"t": "event", "job": self.id, "seq": self.replay.last + 1,
                        "ts": round(time.time(), 6), **fields}, payload)
        self.replay.add(frame, len(payload) if output is None else output)
        return frame

    def finish(self, header: dict[str, Any], payload: bytes = b"", files: tuple = (),
               file_bytes: int = 0, at: float | None = None) -> list:
        self.state = header["state"]
        self.finished = time.time() if at is None else at
        if self.kind == "call":
            self.payload = b""  # a code string stays, for restart
        self.files = ()
        self.modules = ()
        self.done_header = {"t": "done", "job": self.id, "worker_pid": self.worker_pid,
                            "submitted": self.submitted, "started": self.started,
                            "finished": self.finished, **header}
        self.done_frame = encode_parts(self.done_header, payload, files)
        self.result, self.result_files, self.result_file_bytes = payload, tuple(files), file_bytes
        return self.done_frame

    @property
    def owner(self) -> "Job | None":
        """The job or group this one is listed under: its group, else its parent."""
        return self.group or self.parent

    def ancestors(self) -> list["Job"]:
        out, node = [], self.owner
        while node is not None:
            out.append(node)
            node = node.owner
        return out

    def summary(self) -> dict[str, Any]:
        done = self.done_header or {}
        return {"id": self.id, "state": self.state, "kind": self.kind, "name": self.name,
                "submitted": self.submitted, "started": self.started, "finished": self.finished,
                "worker_pid": self.worker_pid, "client_pid": self.client_pid, "device": self.device,
                "exit_status": done.get("exit_status"),
                "error": (done.get("error") or {}).get("message") if done else None,
                "events": self.replay.last,
                "parent": self.parent.id if self.parent else None,
                "group": self.group.id if self.group else None,
                "progress": self.progress,
                **({"priority": self.priority} if self.priority else {}),
                **({"timeout": self.timeout} if self.timeout else {}),
                **({"timed_out": True} if self.timed_out else {}),
                **_measured(done),
                **({"children": {"done": self.descendants_done, "total": self.descendants}}
                   if self.descendants or self.kind in ("group", "session") else {})}


def _measured(done: dict[str, Any]) -> dict[str, Any]:
    """What the worker measured of a finished job: seconds, peak RSS, GPU pool peak."""
    gpu = done.get("gpu") if isinstance(done.get("gpu"), dict) else {}
    out = {key: done[key] for key in ("seconds", "peak_rss") if done.get(key) is not None}
    if gpu.get("peak_bytes") is not None:
        out["gpu_peak_bytes"] = gpu["peak_bytes"]
    return out


class AmbiguousJob(LookupError):
    """A typed prefix names more than one job."""

    def __init__(self, prefix: str, jobs: list[Job]) -> None:
        super().__init__(prefix)
        self.prefix = prefix
        self.jobs = jobs


class JobTable:
    """Every job the daemon holds: the queue, the running ones, and finished results
    retained within a count, a byte budget and an age; fetched results go first."""

    def __init__(self, max_jobs: int, max_bytes: int, ttl: float,
                 on_drop: Callable[[Job], None] = lambda job: None) -> None:
        self.on_drop = on_drop  # told of each finished job that leaves the table
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.jobs: dict[str, Job] = {}
        self.queue: deque[Job] = deque()
        self.finished: OrderedDict[str, Job] = OrderedDict()
        self.finished_bytes = 0
        self.done_count = 0
        self.ids = JobIds()

    def new_id(self) -> str:
        return self.ids.next()

    def add(self, job: Job) -> None:
        self.jobs[job.id] = job
        self._enqueue(job)

    def restore(self, recovered: list[Job]) -> list[Job]:
        """Retain the ended jobs a previous daemon left in the ledger; returns those it lost
        (the rest, its clean stop kept)."""
        for job in recovered:
            self.jobs[job.id] = job
            self.retire(job)
        return [job for job in recovered if not job.done_header.get("restored")]

    def requeue(self, job: Job) -> None:
        """A job that never started goes back, first in line."""
        self._enqueue(job, front=True)

    def _enqueue(self, job: Job, front: bool = False) -> None:
        # Each ancestor counts the jobs below it in the queue: a parent waiting for its
        # children is told apart in constant time (see ``scheduler``).
        queue = self.queue
        if front:
            queue.appendleft(job)
        elif not queue or queue[-1].priority >= job.priority:
            queue.append(job)
        else:  # ahead of every lower priority, behind its own (first in, first out)
            at = next(i for i, queued in enumerate(queue) if queued.priority < job.priority)
            queue.insert(at, job)
        for node in job.ancestors():
            node.queued_below += 1

    def _dequeued(self, job: Job) -> None:
        for node in job.ancestors():
            node.queued_below -= 1

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def find(self, ref: str) -> Job | None:
        """The job whose id is ``ref``, else the one whose id starts with it (AmbiguousJob
        when several do). Ids are typed by people as short prefixes, as git's are."""
        job = self.jobs.get(ref)
        if job is not None:
            return job
        matches = [j for j in self.jobs.values() if j.id.startswith(ref)]
        if len(matches) > 1:
            raise AmbiguousJob(ref, matches)
        return matches[0] if matches else None

    def next_for(self, accepts: Callable[[Job], bool]) -> Job | None:
        """Take the oldest queued job that ``accepts`` says it can run."""
        for job in self.queue:
            if accepts(job):
                self.queue.remove(job)
                self._dequeued(job)
                return job
        return None

    def unqueue(self, job: Job) -> bool:
        try:
            self.queue.remove(job)
        except ValueError:
            return False
        self._dequeued(job)
        return True

    def retire(self, job: Job) -> None:
        """Record a finished job and evict what the bounds no longer allow."""
        self.done_count += 1
        self.finished[job.id] = job
        self.finished_bytes += job.stored_bytes
        self.evict()

    def evict(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if self.ttl:
            # Jobs retire in finishing order, so the expired ones are all at the front.
            expired = []
            for oldest in self.finished.values():
                if oldest.finished is None or now - oldest.finished < self.ttl:
                    break
                if not oldest.pins:
                    expired.append(oldest)
            for job in expired:
                self._drop(job)
        while len(self.finished) > self.max_jobs or self.finished_bytes > self.max_bytes:
            # A result a queued job still needs stays until that job has it.
            victim = (next((j for j in self.finished.values() if j.fetched and not j.pins), None)
                      or next((j for j in self.finished.values() if not j.pins), None))
            if victim is None:
                break
            self._drop(victim)

    def next_expiry(self) -> float | None:
        if not self.ttl or not self.finished:
            return None
        oldest = next(iter(self.finished.values()))
        return (oldest.finished or time.time()) + self.ttl

    def forget(self, job: Job) -> None:
        """Drop a finished job now, as eviction would."""
        if job.id in self.finished:
            self._drop(job)

    def _drop(self, job: Job) -> None:
        del self.finished[job.id]
        del self.jobs[job.id]
        self.finished_bytes -= job.stored_bytes
        if job.owner is not None:  # a parent or group kept on must not keep this one's result
            job.owner.children.pop(job, None)
        self.on_drop(job)

    def running(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.state == RUNNING]

    def counts(self) -> dict[str, int]:
        # Queued includes a job a worker holds to start next (not in ``queue`` any more).
        queued = sum(1 for j in self.jobs.values() if j.state == QUEUED)
        return {"queued": queued, "running": len(self.running()), "done": self.done_count,
                "retained": len(self.finished), "retained_bytes": self.finished_bytes}
