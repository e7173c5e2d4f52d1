"""Cancel escalation: the state machine that takes a job from interrupt to kill, and its timers.

    (queued)  --cancel--> removed from the queue, ended "cancelled"
    (held)    --cancel--> named in the worker's cancel pipe; skipped if not started yet
    (running) --interrupt--> SIGINT to the worker's group; after interrupt_grace:
              --terminate--> SIGTERM to the group and every descendant (the worker dies
                             with its job); after terminate_grace:
              --kill-------> SIGKILL to them

A later request can escalate (interrupt to kill), never go back. Before any
signal the job is named in its worker's cancel pipe and what the worker already
sent is read, so a signal meant for a job that has just ended never reaches the
worker's next job. The job ends when its worker answers or dies; ``settle``
then answers whoever asked for the cancel.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import psutil

from .. import proctree
from .jobs import CANCELLED, EXIT_LOST, LOST, QUEUED, Job, JobTable
from .pool import WorkerProcess, WorkerState

log = logging.getLogger("warmd")

STAGES = ("interrupt", "terminate", "kill")
EXIT_CANCELLED = 130     # as a shell reports a command ended by Ctrl-C


def cancelled_header(message: str) -> dict[str, Any]:
    """The end of a job that was cancelled."""
    return {"state": CANCELLED, "exit_status": EXIT_CANCELLED,
            "error": {"type": "Cancelled", "message": message, "traceback": ""}}


def worker_died_header(job: Job, worker: WorkerProcess) -> dict[str, Any]:
    """The end of a job whose worker exited under it: cancelled if a cancel was under way."""
    if job.cancel is not None:
        header = cancelled_header(f"job cancelled; its worker pid {worker.pid} was {worker.exit_description}")
    else:
        header = {"state": LOST, "exit_status": EXIT_LOST,
                  "error": {"type": "WorkerDied", "traceback": "",
                            "message": f"worker pid {worker.pid} died during the job ({worker.exit_description})"}}
    return {**header, "token": worker.token, "device": worker.device}


@dataclass(eq=False)
class Cancellation:
    """A cancel in progress: how far it has escalated and who waits for its end."""
    stage: str | None = None
    interrupt_grace: float = 1.0
    terminate_grace: float = 1.0
    requesters: list[tuple[Any, Any]] = field(default_factory=list)  # (connection, req)
    snapshot: list[psutil.Process] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    told: bool = False  # the job's id went down its worker's cancel pipe

    def settle(self, job: Job) -> None:
        """The job has ended: stop the escalation, answer whoever asked for the cancel."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        outcome = "cancelled" if job.state == CANCELLED else "finished"
        for conn, req in self.requesters:
            conn.send({"t": "cancelled", "req": req, "job": job.id, "outcome": outcome,
                       "state": job.state})
        self.requesters.clear()
        self.snapshot = []


class Host(Protocol):
    """What the cancel machinery needs of the supervisor."""
    jobs: JobTable
    workers: dict[int, WorkerProcess]

    def finish_job(self, job: Job, header: dict[str, Any], payload: bytes = b"") -> None: ...
    def dispatch(self) -> None: ...


class Canceller:
    def __init__(self, host: Host, graces: dict[str, float],
                 call_later: Callable[..., asyncio.TimerHandle]) -> None:
        self.host = host
        self.graces = graces
        self.call_later = call_later

    def cancel(self, job: Job, stage: str, interrupt_grace: float | None,
               terminate_grace: float | None, requester: tuple[Any, Any] | None = None) -> str:
        """Start or escalate a cancel. Returns "pending", "removed" or "finished"."""
        host = self.host
        if job.finished_state:
            return "finished"
        if job.state == QUEUED and host.jobs.unqueue(job):
            host.finish_job(job, cancelled_header("cancelled before it started"))
            return "removed"
        c = job.cancel
        if c is None:
            c = job.cancel = Cancellation(
                interrupt_grace=self.graces["interrupt_grace"] if interrupt_grace is None else interrupt_grace,
                terminate_grace=self.graces["terminate_grace"] if terminate_grace is None else terminate_grace)
        holder = host.workers.get(job.worker_pid or -1) if job.state == QUEUED else None
        if holder is not None and holder.held is job:
            # Named in the pipe first, so the worker skips it if it has not started it by the
            # time it reads the pipe. Then what the worker already sent: if the job before
            # has not ended, the job surely has not started.
            self.tell_worker(holder, job)
            holder.connection.drain()
            if holder.held is job:
                holder.held = None
                holder.skipping.add(job.id)
                job.worker_pid = None
                host.finish_job(job, cancelled_header("cancelled before it started"))
                host.dispatch()
                return "removed"
            if job.finished_state:  # it started, and the worker's answer is already in
                return "removed" if job.state == CANCELLED else "finished"
            # It has started after all: cancel it as a running job.
        if requester is not None:
            c.requesters.append(requester)
        if c.stage is None or STAGES.index(stage) > STAGES.index(c.stage):
            self.escalate(job, stage)
        return "pending"

    def escalate(self, job: Job, stage: str) -> None:
        c = job.cancel
        worker = self.host.workers.get(job.worker_pid or -1)
        if c is None or job.finished_state or worker is None or worker.reaped:
            return  # already ending: the exit handler finishes the job
        # The worker may hold a next job and start it the moment it sends this one's end. So:
        # name the job in the pipe (the worker then waits for our word before going on), read
        # what it already sent, and signal its group only if the job has still not ended.
        self.tell_worker(worker, job)
        if worker.connection is not None:
            worker.connection.drain()
        if job.finished_state or worker.reaped:
            return
        if c.timer is not None:
            c.timer.cancel()
            c.timer = None
        c.stage = stage
        log.info("cancelling job %s: %s", job.id, stage, extra={"JOB_ID": job.id, "WORKER_PID": worker.pid})
        if stage == "interrupt":
            proctree.signal_group(worker.pgid, signal.SIGINT)
            c.timer = self.call_later(c.interrupt_grace, self.escalate, job, "terminate")
            return
        # The worker dies with its job: remember every descendant, escaped ones included.
        worker.move(WorkerState.STOPPING)
        c.snapshot.extend(proctree.descendants(worker.pid))
        sig = signal.SIGTERM if stage == "terminate" else signal.SIGKILL
        proctree.signal_group(worker.pgid, sig)
        proctree.send(c.snapshot, sig)
        if stage == "terminate":
            c.timer = self.call_later(c.terminate_grace, self.escalate, job, "kill")

    def tell_worker(self, worker: WorkerProcess, job: Job) -> None:
        """Name ``job`` in its worker's cancel pipe (once): the worker's SIGINT handler only
        interrupts a job named there, and a worker starts no job named there."""
        if job.cancel.told or worker.cancel_fd is None:
            return
        try:
            # One line (under PIPE_BUF: one piece): the id, and why when it is a timeout.
            os.write(worker.cancel_fd, job.id.encode() + (b" timeout\n" if job.timed_out else b"\n"))
            job.cancel.told = True
        except OSError as exc:  # a full pipe would mean a worker that stopped reading: it dies soon
            log.warning("cannot name job %s to worker pid %d: %s", job.id, worker.pid, exc,
                        extra={"JOB_ID": job.id, "WORKER_PID": worker.pid})
