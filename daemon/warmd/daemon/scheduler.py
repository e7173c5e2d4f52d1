"""Which queued job goes to which worker, and when.

Jobs leave the queue oldest first, each to an idle worker whose device the job
accepts, within the running-job capacity (``Placement``), spread over the devices.
Children of running jobs go first, and a job whose needed results have not all
ended waits. Where one job runs at a time, the busy worker also gets the next
job to hold, so it starts that job as it sends the last one's end without
waiting for the daemon.

A parent waiting for its children holds its worker. So that parents can never
fill the pool with children that cannot start, a busy worker whose job has
children in the queue does not count against the capacity, for up to
``workers.max_extra`` such workers; the pool keeps one more worker warm for each
(see ``workerpool``), and lets it go when no parent runs. It does the same for each
open session (see ``sessions``), whose held worker runs no queued job.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any, Callable

from ..protocol import encode_parts
from .handoff import Handoff
from .jobs import RUNNING, Job, JobTable
from .ledger import Ledger
from .placement import Placement
from .pool import WorkerProcess, WorkerState
from .timeouts import Timeouts
from .workerpool import WorkerPool

JobEvent = Callable[[Job, dict[str, Any]], None]


class Scheduler:
    def __init__(self, jobs: JobTable, workers: WorkerPool, placement: Placement,
                 limits: dict[str, Any], ledger: Ledger, job_event: JobEvent, handoff: Handoff,
                 timeouts: Timeouts, sessions_first: Callable[[], None] = lambda: None,
                 sessions_wanted: Callable[[], Counter] = Counter) -> None:
        self.jobs = jobs
        self.pool = workers
        self.workers = workers.workers
        self.placement = placement
        self.max_jobs = limits["max_jobs"]    # a worker near it holds no next job
        self.max_extra = limits["max_extra"]  # busy parents not counted against the capacity
        self.ledger = ledger
        self.job_event = job_event
        self.handoff = handoff
        self.timeouts = timeouts
        self.sessions_first = sessions_first    # sessions waiting for a worker go before jobs
        self.sessions_wanted = sessions_wanted  # a worker each, beyond the placement

    def dispatch(self) -> None:
        """Hand queued jobs to idle workers, within the running-job capacity."""
        self.sessions_first()
        # Worked out once per call: which parents wait changes only as their children start,
        # and a parent exempted a moment too long costs at most max_extra slots.
        exempt = {id(w) for w in self.waiting_parents(self.pool.in_state(WorkerState.BUSY))[:self.max_extra]}
        while self.jobs.queue:
            busy = [w for w in self.workers.values() if w.state == WorkerState.BUSY]
            idle = [w for w in self.workers.values() if w.state == WorkerState.IDLE]
            counted = [w for w in busy if id(w) not in exempt]
            if not idle or len(counted) >= self.placement.capacity:
                self._hold_next(busy)
                break
            load = Counter(w.device for w in counted)
            idle.sort(key=lambda w: load[w.device])  # spread over the devices
            chosen: list[WorkerProcess] = []

            def fits(job: Job) -> bool:
                if not self.handoff.ready(job):
                    return False
                for worker in idle:
                    if self.placement.accepts(worker.device, job.device, counted):
                        chosen.append(worker)
                        return True
                return False

            job = (self.jobs.next_for(lambda j: j.parent is not None and fits(j))
                   or self.jobs.next_for(fits))
            if job is None:
                break
            self.start(job, chosen[0])
        self._plan_extra()

    def waiting_parents(self, busy: list[WorkerProcess]) -> list[WorkerProcess]:
        """Busy workers whose job has jobs queued below it (it may be waiting for them)."""
        if not self.max_extra:
            return []
        return [w for w in busy if w.job is not None and w.job.queued_below]

    def _plan_extra(self) -> None:
        """Keep one more worker warm for each running parent (up to max_extra); the pool lets
        the extras go a while after no parent runs."""
        if not self.max_extra:
            return
        parents = [w for w in self.workers.values()
                   if w.state == WorkerState.BUSY and w.job is not None and w.job.children_count]
        sessions = self.sessions_wanted()
        if parents or sessions or self.pool.extra:
            self.pool.want_extra(Counter(w.device for w in parents[:self.max_extra]) + sessions)

    def deadlock(self, parent: Job) -> str | None:
        """Why a child of ``parent`` could never start, or None. Every worker a job may use is
        held by a job with children queued, this parent's included: nothing would free one."""
        busy = [w for w in self.workers.values() if w.state == WorkerState.BUSY]
        waiting = {id(w) for w in self.waiting_parents(busy)}
        holders = [w for w in busy if id(w) in waiting or w.job is parent]
        slots = self.placement.capacity + self.max_extra
        if len(holders) < slots:
            return None
        return (f"this job cannot start: all {slots} worker slots (workers.count or devices, plus "
                f"workers.max_extra = {self.max_extra}) are held by jobs waiting for their children, "
                f"its parent {parent.id} among them. Raise workers.max_extra, or workers.count, in "
                "the daemon's configuration")

    def _hold_next(self, busy: list[WorkerProcess]) -> None:
        """Where one job runs at a time, the busy worker gets the next queued job to hold, and
        starts it as it sends the last one's end: no wait for the daemon between jobs.

        Not with more workers: a held job could wait behind a long one while another worker
        frees up. Not on GPUs: a worker must not go on after a job that left its device in an
        error state, and GPU jobs are long enough that the wait does not matter. A held job's
        cancel goes through the worker's cancel pipe (see ``cancel``).
        """
        if self.placement.gpu or self.placement.capacity != 1 or len(busy) != 1:
            return
        worker = busy[0]
        if worker.held is not None or worker.connection is None or (
                self.max_jobs and worker.jobs_run + 1 >= self.max_jobs):
            return
        # Never a child: its parent may be the job this worker runs, waiting for it.
        job = self.jobs.next_for(lambda j: j.parent is None and (j.device is None or j.device == worker.device)
                                 and self.handoff.ready(j))
        if job is not None:
            worker.held = job
            job.worker_pid = worker.pid
            self._send_run(job, worker)

    def start(self, job: Job, worker: WorkerProcess) -> None:
        worker.job = job
        worker.move(WorkerState.BUSY)
        self._send_run(job, worker)
        # After the send, so the worker starts sooner. A crash in between still finds a job
        # that waited in the queue (it has its queue line), and a job submitted in this same
        # read has not been acknowledged to its client yet.
        self.running(job, worker)

    def _send_run(self, job: Job, worker: WorkerProcess) -> None:
        # The sources of this job's modules that the worker does not hold yet, then the run.
        pieces = [m.frame for m in job.modules if worker.modules.get(m.name) != m.sha]
        worker.modules.update((m.name, m.sha) for m in job.modules)
        pieces += self.handoff.pieces(job)
        pieces += encode_parts({**job.run_header, "t": "run", "job": job.id}, job.payload, job.files)
        worker.connection.write(pieces if len(pieces) > 1 else pieces[0])

    def running(self, job: Job, worker: WorkerProcess) -> None:
        """``job`` runs on ``worker`` now (started, or the held job it went on to)."""
        job.state = RUNNING
        job.started = time.time()
        job.worker_pid = worker.pid
        if job.kind == "call":  # kept until now: a held job goes back to the queue if its worker dies
            job.payload = b""  # (a code string stays: small, and restart runs it again)
        job.files = ()
        job.modules = ()
        self.handoff.started(job)
        self.timeouts.started(job)
        self.ledger.started(job)
        self.job_event(job, {"kind": "state", "state": RUNNING, "worker_pid": worker.pid,
                             "device": worker.device})
