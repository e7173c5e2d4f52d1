"""What workers send, routed: output and logs to the job's followers, the journal and its
file; warm-up reports to the pool; a job's end to the scheduler and its clients."""
from __future__ import annotations

import logging
from typing import Any, Callable, Protocol

from .. import oob
from ..protocol import Frame
from .jobs import Job
from .logs import JobOutputLog
from .outputfiles import JobOutputFiles
from .pool import WorkerProcess, WorkerState
from .scheduler import Scheduler
from .sessions import Sessions
from .warmnotice import WarmupNotices
from .workerpool import WorkerPool

log = logging.getLogger("warmd")


class Host(Protocol):
    buffer_max: int

    def job_event(self, job: Job, fields: dict[str, Any], payload: bytes = b"") -> None: ...
    def job_progress(self, job: Job, report: dict[str, Any], detail: bytes = b"") -> None: ...
    def finish_job(self, job: Job, header: dict[str, Any], payload: bytes = b"",
                   files: tuple = (), file_bytes: int = 0) -> None: ...
    def check_stopped(self) -> None: ...
    def update_status(self) -> None: ...


class WorkerFrames:
    def __init__(self, host: Host, workers: WorkerPool, scheduler: Scheduler, sessions: Sessions,
                 notices: WarmupNotices, joblog: JobOutputLog, files: JobOutputFiles) -> None:
        self.host = host
        self.sessions = sessions
        self.pool = workers
        self.scheduler = scheduler
        self.notices = notices
        self.joblog = joblog
        self.files = files
        self._handlers: dict[str, Callable[[WorkerProcess, Frame], None]] = {
            "out": self._out, "log": self._log, "progress": self._progress, "done": self._done,
            "began": self._began, "released": self._released,
            "warming": self._warming, "ready": self._ready, "warmup_failed": self._warmup_failed}

    def handle(self, worker: WorkerProcess, frame: Frame) -> None:
        handler = self._handlers.get(frame.type)
        if frame.files and (frame.type != "done" or frame.get("direct")):
            log.warning("worker pid %d sent %d descriptors with a %r frame, which takes none; "
                        "closed them", worker.pid, len(frame.files), frame.type,
                        extra={"WORKER_PID": worker.pid})
        if handler is None:
            log.warning("worker pid %d sent an unexpected %r frame", worker.pid, frame.type,
                        extra={"WORKER_PID": worker.pid})
        else:
            handler(worker, frame)
        self.host.update_status()

    def _out(self, worker: WorkerProcess, frame: Frame) -> None:
        stream = "stdout" if frame.get("fd") == 1 else "stderr"
        job = worker.job
        if job is not None:
            self.host.job_event(job, {"kind": stream}, frame.payload)
            self.joblog.output(job.id, worker.pid, stream, frame.payload)
            self.files.write(job.id, frame.payload)
            return
        text = frame.payload.decode(errors="replace").rstrip()
        if text:
            log.info("worker pid %d %s: %s", worker.pid, stream, text, extra={"WORKER_PID": worker.pid})

    def _log(self, worker: WorkerProcess, frame: Frame) -> None:
        job = worker.job
        if job is None:
            return
        level, name, message = frame.get("level", 20), frame.get("name", ""), frame.get("message", "")
        self.host.job_event(job, {"kind": "log", "level": frame.get("level"), "name": frame.get("name"),
                                  "message": frame.get("message")})
        self.joblog.record(job.id, worker.pid, level, name, message)
        self.files.record(job.id, level, name, message)

    def _progress(self, worker: WorkerProcess, frame: Frame) -> None:
        if worker.job is not None:
            self.host.job_progress(worker.job, frame.header, frame.payload if frame.get("detail") else b"")

    def _began(self, worker: WorkerProcess, frame: Frame) -> None:
        self.sessions.began(worker, frame)

    def _released(self, worker: WorkerProcess, frame: Frame) -> None:
        self.sessions.released(worker, frame)

    def _done(self, worker: WorkerProcess, frame: Frame) -> None:
        job_id = frame.get("job")
        if frame.get("direct"):  # a session's call: its caller has the result
            self.sessions.call_ended(worker, frame)
        elif job_id in worker.skipping:
            worker.skipping.discard(job_id)  # cancelled before it started: answered
        elif worker.job is not None and job_id == worker.job.id:
            self._finished(worker, frame)

    def _warming(self, worker: WorkerProcess, frame: Frame) -> None:
        if worker.state == WorkerState.STARTING:
            step = frame.get("step")
            worker.warmup_step = step[:200] if isinstance(step, str) else None
            self.notices.update()

    def _ready(self, worker: WorkerProcess, frame: Frame) -> None:
        if worker.error is not None or worker.state != WorkerState.STARTING:
            return  # it timed out and is being killed: it runs nothing
        worker.token = frame.get("token")
        worker.warmup_steps = frame.get("steps", [])
        worker.warmup_seconds = frame.get("seconds")
        worker.extra = {k: v for k, v in frame.header.items()
                        if k not in ("t", "token", "steps", "seconds", "pid")}
        self.pool.warm(worker)
        log.info("worker pid %d warm in %.3f s", worker.pid, worker.warmup_seconds or 0,
                 extra={"WORKER_PID": worker.pid})
        self.scheduler.dispatch()

    def _warmup_failed(self, worker: WorkerProcess, frame: Frame) -> None:
        worker.error = f"warm-up failed at {frame.get('step')}: {frame.get('error')}"
        log.error("worker pid %d %s\n%s", worker.pid, worker.error, frame.get("traceback", ""),
                  extra={"WORKER_PID": worker.pid})

    def _finished(self, worker: WorkerProcess, frame: Frame) -> None:
        job = worker.job
        worker.jobs_run += 1
        header = {k: v for k, v in frame.header.items() if k not in ("t", "job")}
        header.update(token=worker.token, device=worker.device)
        if worker.state != WorkerState.BUSY:
            # Stopping (a cancel escalated to terminate or kill, or the daemon stops): a job it
            # holds must not start there; it goes back to the queue when the worker has exited.
            worker.job = None
        else:
            # The job it held is running now: the worker goes on to it as it sends this end, or,
            # if this job was named for cancel, once it has our word.
            worker.job, worker.held = worker.held, None
            if job.cancel is not None and job.cancel.told:
                worker.connection.send({"t": "resume", "job": job.id})
            if worker.job is not None:
                worker.move(WorkerState.BUSY)  # busy still, with another job
                self.scheduler.running(worker.job, worker)
            reason = self.pool.recycle_reason(worker, header)
            if reason:
                # A job it holds runs first: it is ahead of the exit in the worker's socket.
                log.info("recycling worker pid %d: %s", worker.pid, reason,
                         extra={"WORKER_PID": worker.pid})
                self.pool.stop(worker)
                self.pool.fill()
            elif worker.job is None:
                worker.move(WorkerState.IDLE)
        self.scheduler.dispatch()  # first: the worker waits for its next job, the client only for news
        payload, files = frame.payload, frame.files
        try:
            file_bytes = oob.check(frame.get("buffers"), files, self.host.buffer_max)
        except oob.BadBuffers as exc:
            log.error("worker pid %d sent job %s's result with bad buffers: %s", worker.pid, job.id,
                      exc, extra={"WORKER_PID": worker.pid, "JOB_ID": job.id})
            header.update(state="failed", exit_status=1, buffers=[], error={
                "type": "BadBuffers", "traceback": "",
                "message": f"the job's result could not be passed on: {exc}"})
            payload, files, file_bytes = b"", (), 0
        self.host.finish_job(job, header, payload, files, file_bytes)
        self.host.check_stopped()
