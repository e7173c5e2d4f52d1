"""The supervisor: one asyncio loop that owns the jobs, the workers and the clients.

Signal handlers only schedule work on the loop (as in gunicorn's arbiter); every
state change happens here, in one thread. This module builds the parts (the
worker pool, the scheduler, cancel escalation, the lifecycle) and decides what a
job's end means for everyone who holds it. It routes payloads and results as
opaque bytes and never unpickles them.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter
from typing import Any, Callable

import psutil

from .._version import __version__
from ..config import Config, buffer_limit
from ..protocol import cloudpickle_version, python_version
from ..unixtransport import UnixServer
from . import status, streams
from .batch import WriteBatch
from .cancel import Canceller, cancelled_header, worker_died_header
from .connections import ClientConnection, WorkerConnection
from .expiry import ResultExpiry
from .groups import Families
from .handoff import Handoff
from .timeouts import Timeouts, end_header
from .jobs import EXIT_LOST, FAILED, Job, JobTable, QUEUED
from .ledger import Ledger
from .lifecycle import Lifecycle
from .listener import Listener
from .logs import JobOutputLog, log_end
from .notify import Notifier
from .outputfiles import JobOutputFiles
from .placement import Placement
from .pool import WorkerProcess
from .requests import Requests
from .scheduler import Scheduler
from .sessions import Sessions
from .warmnotice import WarmupNotices
from .workerframes import WorkerFrames
from .watch import Watchers
from .workerpool import WorkerPool

log = logging.getLogger("warmd")

_DRAIN_SECONDS = 5.0     # a stopped daemon waits this long for clients to read what is left


class Supervisor:
    def __init__(self, config: Config, listener: Listener, started_by: str,
                 placement: Placement, notifier: Notifier, joblog: JobOutputLog,
                 files: JobOutputFiles | None = None) -> None:
        self.config = config
        self.listener = listener
        self.started_by = started_by
        self.placement = placement
        self.notifier = notifier
        self.joblog = joblog
        self.files = files or JobOutputFiles("")
        daemon_cfg = config["daemon"]
        self.max_payload = daemon_cfg["max_frame"]
        self.job_timeout = config["workers"]["job_timeout"]
        self.buffer_min = config["buffers"]["min_bytes"]
        self.buffer_max = buffer_limit(config["buffers"]["max_bytes"])
        self.replay_limit = daemon_cfg["replay_max_bytes"]
        self.watch = Watchers(self)  # front ends told of every change (see daemon.watch)
        self.jobs = JobTable(daemon_cfg["result_max_jobs"], daemon_cfg["result_max_bytes"],
                             daemon_cfg["result_ttl"], self.watch.dropped)
        self.clients: set[ClientConnection] = set()
        self.started = time.time()
        self.python = python_version()
        self.cloudpickle = cloudpickle_version()
        self.warm_packages = config.warm_packages
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: UnixServer | None = None
        self._clients_gone: asyncio.Event | None = None  # set while the stopped daemon drains
        self.ledger = Ledger.beside(listener.path)  # running jobs, for the next daemon after a crash
        self.batch = WriteBatch(self.ledger)  # what one read makes us write, written together
        self.pool = WorkerPool(self, placement, config, notifier.extend_timeout)
        self.workers = self.pool.workers
        self.cancels = Canceller(self, config["cancel"], self.call_later)
        self.families = Families(self, self.jobs, self.cancels, self.job_event,
                                 session_end=lambda job: self.sessions.end_header(job))
        self.handoff = Handoff(self.jobs, self.finish_job)
        self.timeouts = Timeouts(self.call_later, self._time_out)
        self.scheduler = Scheduler(self.jobs, self.pool, placement, config["workers"], self.ledger,
                                   self.job_event, self.handoff, self.timeouts,
                                   sessions_first=lambda: self.sessions.serve(),
                                   sessions_wanted=lambda: self.sessions.wanted())
        self.sessions = Sessions(self, self.jobs, self.pool, placement, self.families, config["workers"],
                                 self.scheduler.running, lambda job: self.watch.job(job, "submitted"))
        self.expiry = ResultExpiry(self.jobs, self.call_later)
        self.notices = WarmupNotices(self.jobs.queue, self.workers, self.job_event, self.call_later)
        self.frames = WorkerFrames(self, self.pool, self.scheduler, self.sessions, self.notices, joblog, self.files)
        self.lifecycle = Lifecycle(self, self.jobs, self.pool, self.families, listener, notifier,
                                   self.notices, config["cancel"], daemon_cfg["idle_exit"])
        self.requests = Requests(self)

    # ---------------------------------------------------------------- running

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop this supervisor schedules its timers and tasks on (``run`` binds its own)."""
        self._loop = loop
        self.pool.bind_loop(loop)
        self.lifecycle.bind_loop(loop)

    def soon(self, callback: Callable[[], None]) -> None:
        self._loop.call_soon(callback)

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
        return self._loop.call_later(delay, callback, *args)

    @property
    def stopping(self) -> str | None:
        return self.lifecycle.stopping

    @property
    def warmup_error(self) -> str | None:
        return self.pool.warmup_error

    @property
    def retry_at(self) -> float:
        return self.pool.retry_at

    @property
    def extra_workers(self) -> Counter:
        return self.pool.extra

    async def run(self, on_listening: Callable[[], None] = lambda: None) -> int:
        loop = asyncio.get_running_loop()
        self.bind_loop(loop)
        loop.add_signal_handler(signal.SIGCHLD, self.pool.reap)
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, lambda: None)  # a closed terminal must not kill us
        self._recover_lost_jobs()
        await self.serve()
        self.pool.fill()
        log.info("warmd %s serving %s (started by %s; %d workers, %d spares)", __version__,
                 self.listener.path, self.started_by, self.placement.capacity,
                 self.placement.target - self.placement.capacity)
        self.notifier.ready(self.summary())
        on_listening()
        if self.notifier.watchdog_interval:
            self._watchdog()
        self.check_idle()
        await self.lifecycle.done.wait()
        await self._let_clients_drain()
        self.ledger.close(kept=list(self.jobs.finished.values()))
        return 0

    async def serve(self) -> None:
        # On a duplicate: closing the server to stop accepting must leave the listener itself
        # open, so that an idle stop can be taken back and the socket still be told apart.
        self._server = UnixServer(self._loop, self.listener.sock.dup(),
                                  lambda: ClientConnection(self, self.max_payload))

    def stop_serving(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _let_clients_drain(self) -> None:
        """The connections are closing: let them send what they still hold (a slow reader's
        last events and its jobs' ends) before the loop, and their buffers, go away."""
        if not self.clients:
            return
        self._clients_gone = asyncio.Event()
        try:
            await asyncio.wait_for(self._clients_gone.wait(), _DRAIN_SECONDS)
        except asyncio.TimeoutError:
            log.info("stopped with %d client(s) that did not read what was left for them",
                     len(self.clients))

    def close_clients(self) -> None:
        for conn in list(self.clients):
            self.catch_up(conn, force=True)  # a slow reader still learns how its jobs ended
            conn.close()

    def _recover_lost_jobs(self) -> None:
        """Jobs a previous daemon on this socket died running: report them lost, not unknown;
        and the finished jobs a previous daemon's clean stop kept: report them as they ended."""
        recovered = self.ledger.recover(EXIT_LOST)
        lost = self.jobs.restore(recovered)
        for job in lost:
            log.warning("job %s lost: %s", job.id, job.done_header["error"]["message"],
                        extra={"JOB_ID": job.id, "JOB_STATE": job.state})
        if (kept := len(recovered) - len(lost)):
            log.info("%d finished job(s) kept from the previous daemon", kept)
        self.expiry.schedule()

    def _watchdog(self) -> None:
        # Pinged from the loop itself, so a wedged loop stops the pings and systemd restarts us.
        if self.stopping:
            return
        self.notifier.watchdog()
        self._loop.call_later(self.notifier.watchdog_interval, self._watchdog)

    def request_stop(self, reason: str, *, drain: bool = False) -> None:
        if not drain:
            self.sessions.list_running()  # so that they are cancelled with the rest
        self.lifecycle.request_stop(reason, drain=drain)

    def check_stopped(self) -> None:
        self.lifecycle.check_stopped()

    def check_idle(self) -> None:
        self.lifecycle.check_idle()

    # ---------------------------------------------------------------- workers

    def worker_connection(self, worker: WorkerProcess) -> WorkerConnection:
        return WorkerConnection(self, worker)

    def worker_connected(self, worker: WorkerProcess) -> None:
        self.pool.connected(worker)

    def worker_frame(self, worker: WorkerProcess, frame: Any) -> None:
        self.frames.handle(worker, frame)

    def kill_worker(self, worker: WorkerProcess) -> None:
        self.pool.kill(worker)

    def worker_gone(self, worker: WorkerProcess, job: Job | None, held: Job | None,
                    leftovers: list[psutil.Process]) -> None:
        """A worker exited: what it held, ran, or was about to run ends or goes back."""
        if held is not None:
            held.worker_pid = None
            if held.cancel is not None or self.stopping:
                self.finish_job(held, cancelled_header(f"cancelled; its worker pid {worker.pid} exited "
                                                       "before it started"))
            else:
                self.jobs.requeue(held)  # it never started: first in line again
        unheard = self.sessions.worker_gone(worker)  # a session's call it had not told of yet
        job = job or unheard
        if job is not None:
            self.pool.after_exit(leftovers, lambda: self._job_worker_died(job, worker))
        elif leftovers:
            self.pool.after_exit(leftovers, lambda: None)
        self.dispatch()
        self.check_stopped()

    def warmup_lost(self, error: str) -> None:
        """No worker is left to warm up: fail the queue rather than leave clients waiting blind."""
        for job in list(self.jobs.queue):
            self.jobs.unqueue(job)
            self.finish_job(job, _no_worker_header(error))

    def _job_worker_died(self, job: Job, worker: WorkerProcess) -> None:
        self.finish_job(job, worker_died_header(job, worker))
        self.dispatch()
        self.check_stopped()

    # ---------------------------------------------------------------- jobs

    def dispatch(self) -> None:
        """Hand queued jobs to idle workers (see ``scheduler``)."""
        self.scheduler.dispatch()

    def job_event(self, job: Job, fields: dict[str, Any], payload: bytes = b"") -> None:
        # Only output counts as output (a gap says how much was missed); a progress
        # report's detail rides in the payload too.
        output = len(payload) if fields.get("kind") in ("stdout", "stderr") else 0
        streams.publish(job, job.add_event(fields, payload, output), output)
        self.watch.job_event(job, fields)

    def worker_changed(self, worker: WorkerProcess) -> None:
        self.watch.worker(worker)

    def job_progress(self, job: Job, report: dict[str, Any], detail: bytes = b"") -> None:
        kept = self.families.progress(job, report, detail)
        self.joblog.progress(job.id, job.worker_pid, kept)

    def running_job_of(self, pid: int | None) -> Job | None:
        return self.pool.running_job_of(pid)

    def deadlock(self, parent: Job) -> str | None:
        return self.scheduler.deadlock(parent)

    def output_location(self, job: Job) -> str | None:
        """Where a job's whole output is, for a reader told that part of it was dropped."""
        places = []
        if self.files.enabled:
            places.append(str(self.files.path(job.id)))
        if self.joblog.enabled:
            places.append(f"the journal (journalctl --user-unit warmd.service JOB_ID={job.id})")
        return " and ".join(places) or None

    def catch_up(self, conn: ClientConnection, force: bool = False) -> None:
        """``conn`` has room again: what it missed of the jobs it follows, then their ends."""
        streams.catch_up(conn, self.output_location, force)
        self.watch.catch_up(conn)

    def finish_job(self, job: Job, header: dict[str, Any], payload: bytes = b"",
                   files: tuple = (), file_bytes: int = 0) -> None:
        self.timeouts.ended(job)
        done = job.finish(end_header(job, header), payload, files, file_bytes)
        job.fetched = job.fetched or bool(job.subscribers or job.waiters)
        for conn in job.waiters:
            conn.write(done)
        job.waiters.clear()
        streams.ended(job)
        self.ledger.finished(job)
        if job.cancel is not None:
            job.cancel.settle(job)
        if job.needs:
            self.handoff.started(job)  # it will never run: what it needed need not be kept
        self.joblog.finished(job.id, job.worker_pid)
        self.files.finished(job.id)
        log_end(job, header, self.joblog.enabled)
        self.jobs.retire(job)
        self.watch.job(job, "ended")
        if job.kind == "session":
            self.sessions.ended(job)
        self.families.ended(job)
        if self.handoff.ended(job):
            self.dispatch()  # jobs that waited for this result may run now
        self.expiry.schedule()
        self.update_status()
        self.check_idle()

    def _time_out(self, job: Job) -> None:
        log.warning("job %s (%s) ran past its timeout of %g s: cancelling it", job.id, job.name,
                    job.timeout, extra={"JOB_ID": job.id, "JOB_NAME": job.name})
        self.families.cancel(job, "interrupt", None, None)

    # ---------------------------------------------------------------- clients

    def client_connected(self, conn: ClientConnection) -> None:
        self.clients.add(conn)
        self.check_idle()

    def client_gone(self, conn: ClientConnection) -> None:
        self.clients.discard(conn)
        self.watch.remove(conn)
        if not self.clients and self._clients_gone is not None:
            self._clients_gone.set()
        for job in self.jobs.jobs.values():
            job.subscribers.pop(conn, None)
            job.waiters.discard(conn)
        for job in conn.lagging:  # ended jobs it was still catching up with, expired or not
            job.subscribers.pop(conn, None)
        conn.lagging.clear()
        self.families.forget(conn)
        for group in list(conn.groups):  # a group its client left open ends with its jobs
            self.families.close_group(group)
        conn.groups.clear()
        self.sessions.client_gone(conn)
        self.check_idle()
        self.check_stopped()

    def submit(self, job: Job) -> Job:
        """Queue a new job and start it if a worker is free; the caller then answers the client.

        The ledger records it before the client learns its id (started, or else queued).
        """
        self.jobs.add(job)
        self.watch.job(job, "submitted")
        log.debug("job %s queued (%s)", job.id, job.name,
                  extra={"JOB_ID": job.id, "CLIENT_PID": job.client_pid})
        self.dispatch()
        if job.state == QUEUED:
            self.ledger.queued(job)
            self.notices.queued(job)
        return job

    def reject(self, job: Job, header: dict[str, Any]) -> None:
        """Hold a new job that can never run, ended as ``header`` says, for its client to see."""
        self.jobs.jobs[job.id] = job
        self.watch.job(job, "submitted")
        self.finish_job(job, header)

    def no_worker_message(self) -> str:
        return _no_worker_header(self.warmup_error or "")["error"]["message"]

    # ---------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        return status.build(self)

    def summary(self) -> str:
        return status.summary_line(self)

    def update_status(self) -> None:
        if self.notifier.enabled and not self.stopping:
            self.notifier.status(self.summary())
        self.watch.status()


def _no_worker_header(error: str) -> dict[str, Any]:
    return {"state": FAILED, "exit_status": 1,
            "error": {"type": "WarmupError", "traceback": "",
                      "message": f"no warm worker can run jobs: {error}. Fix the warm-up "
                                 "configuration, then restart the daemon ('warmctl shutdown')"}}
