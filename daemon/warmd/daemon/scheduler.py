"""Which queued job goes to which worker, and when.

Jobs leave the queue oldest first, each to an idle worker whose device the job
accepts, within the running-job capacity (``Placement``). Where one job runs at
a time, the busy worker also gets the next job to hold, so it starts that job
as it sends the last one's end without waiting for the daemon.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from ..protocol import encode
from .jobs import RUNNING, Job, JobTable
from .ledger import Ledger
from .placement import Placement
from .pool import WorkerProcess, WorkerState

JobEvent = Callable[[Job, dict[str, Any]], None]


class Scheduler:
    def __init__(self, jobs: JobTable, workers: dict[int, WorkerProcess], placement: Placement,
                 max_jobs: int, ledger: Ledger, job_event: JobEvent) -> None:
        self.jobs = jobs
        self.workers = workers
        self.placement = placement
        self.max_jobs = max_jobs      # workers.max_jobs: a worker near it holds no next job
        self.ledger = ledger
        self.job_event = job_event

    def dispatch(self) -> None:
        """Hand queued jobs to idle workers, within the running-job capacity."""
        while self.jobs.queue:
            busy = [w for w in self.workers.values() if w.state == WorkerState.BUSY]
            idle = [w for w in self.workers.values() if w.state == WorkerState.IDLE]
            if not idle or len(busy) >= self.placement.capacity:
                self._hold_next(busy)
                return
            chosen: list[WorkerProcess] = []

            def fits(job: Job) -> bool:
                for worker in idle:
                    if self.placement.accepts(worker.device, job.device, busy):
                        chosen.append(worker)
                        return True
                return False

            job = self.jobs.next_for(fits)
            if job is None:
                return
            self.start(job, chosen[0])

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
        job = self.jobs.next_for(lambda j: j.device is None or j.device == worker.device)
        if job is not None:
            worker.held = job
            job.worker_pid = worker.pid
            self._send_run(job, worker)

    def start(self, job: Job, worker: WorkerProcess) -> None:
        worker.state = WorkerState.BUSY
        worker.job = job
        self._send_run(job, worker)
        # After the send, so the worker starts sooner. A crash in between still finds a job
        # that waited in the queue (it has its queue line), and a job submitted in this same
        # read has not been acknowledged to its client yet.
        self.running(job, worker)

    def _send_run(self, job: Job, worker: WorkerProcess) -> None:
        # The sources of this job's modules that the worker does not hold yet, then the run.
        frames = [m.frame for m in job.modules if worker.modules.get(m.name) != m.sha]
        worker.modules.update((m.name, m.sha) for m in job.modules)
        frames.append(encode({**job.run_header, "t": "run", "job": job.id}, job.payload))
        worker.connection.write(b"".join(frames) if len(frames) > 1 else frames[0])

    def running(self, job: Job, worker: WorkerProcess) -> None:
        """``job`` runs on ``worker`` now (started, or the held job it went on to)."""
        job.state = RUNNING
        job.started = time.time()
        job.worker_pid = worker.pid
        job.payload = b""  # kept until now: a held job goes back to the queue if its worker dies
        job.modules = ()
        self.ledger.started(job)
        self.job_event(job, {"kind": "state", "state": RUNNING, "worker_pid": worker.pid,
                             "device": worker.device})
