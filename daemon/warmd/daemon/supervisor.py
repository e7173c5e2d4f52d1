"""The supervisor: one asyncio loop that owns the jobs, the workers and the clients.

Signal handlers only schedule work on the loop (as in gunicorn's arbiter); every
state change happens here, in one thread. The supervisor routes payloads and
results as opaque bytes and never unpickles them.
"""
from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import socket
import time
from typing import Any, Callable

import psutil

from .. import proctree
from .._version import __version__
from ..config import Config
from ..protocol import Frame, cloudpickle_version, python_version
from . import pool, status, streams
from .batch import WriteBatch
from .cancel import Canceller, cancelled_header
from .connections import ClientConnection, WorkerConnection
from .expiry import ResultExpiry
from .jobs import FAILED, LOST, QUEUED, SUCCEEDED, Job, JobTable
from .ledger import Ledger
from .listener import Listener
from .logs import JobOutputLog
from .notify import Notifier
from .outputfiles import JobOutputFiles
from .placement import Placement
from .pool import LIVE, WorkerProcess, WorkerState
from .requests import Requests
from .scheduler import Scheduler
from .warmnotice import WarmupNotices

log = logging.getLogger("warmd")

EXIT_LOST = 125          # exit status of a job whose worker died under it
_MAX_BACKOFF = 60.0
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
        self.replay_limit = daemon_cfg["replay_max_bytes"]
        self.jobs = JobTable(daemon_cfg["result_max_jobs"], daemon_cfg["result_max_bytes"],
                             daemon_cfg["result_ttl"])
        self.workers: dict[int, WorkerProcess] = {}   # by pid, until reaped
        self.clients: set[ClientConnection] = set()
        self.requests = Requests(self)
        self.cancels = Canceller(self, config["cancel"], self.call_later)
        self.expiry = ResultExpiry(self.jobs, self.call_later)
        self.notices = WarmupNotices(self.jobs.queue, self.workers, self.job_event, self.call_later)
        self.started = time.time()
        self.python = python_version()
        self.cloudpickle = cloudpickle_version()
        self.stopping: str | None = None
        self.exit_code = 0
        # Packages warm-up imports: clients send them by reference so jobs see the warm state.
        warmup = config["warmup"]
        self.warm_packages = sorted({name.split(":")[0].split(".")[0]
                                     for name in (*warmup["import"], *warmup["hooks"])})
        self.backoff = 0.0
        self.retry_at = 0.0
        self.warmup_error: str | None = None
        self._slots = 0
        self._pending_sweeps = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._done: asyncio.Event | None = None
        self._retry_handle: asyncio.TimerHandle | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._idle_task: asyncio.Task | None = None
        self._clients_gone: asyncio.Event | None = None  # set while the stopped daemon drains
        self.ledger = Ledger.beside(listener.path)  # running jobs, for the next daemon after a crash
        self.batch = WriteBatch(self.ledger)  # what one read makes us write, written together
        self.scheduler = Scheduler(self.jobs, self.workers, placement, config["workers"]["max_jobs"],
                                   self.ledger, self.job_event)

    # ---------------------------------------------------------------- lifecycle

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop this supervisor schedules its timers and tasks on (``run`` binds its own)."""
        self._loop = loop

    def soon(self, callback: Callable[[], None]) -> None:
        self._loop.call_soon(callback)

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
        return self._loop.call_later(delay, callback, *args)

    async def run(self, on_listening: Callable[[], None] = lambda: None) -> int:
        loop = asyncio.get_running_loop()
        self.bind_loop(loop)
        self._done = asyncio.Event()
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, lambda: None)  # a closed terminal must not kill us
        self._recover_lost_jobs()
        self._server = await self._serve()
        self.fill_pool()
        log.info("warmd %s serving %s (started by %s; %d workers, %d spares)", __version__,
                 self.listener.path, self.started_by, self.placement.capacity,
                 self.placement.target - self.placement.capacity)
        self.notifier.ready(self.summary())
        on_listening()
        if self.notifier.watchdog_interval:
            self._watchdog()
        self.check_idle()
        await self._done.wait()
        await self._let_clients_drain()
        self.ledger.close()
        return self.exit_code

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

    async def _serve(self) -> asyncio.AbstractServer:
        # On a duplicate: closing the server to stop accepting must leave the listener itself
        # open, so that an idle stop can be taken back and the socket still be told apart.
        return await self._loop.create_unix_server(
            lambda: ClientConnection(self, self.max_payload), sock=self.listener.sock.dup())

    def _recover_lost_jobs(self) -> None:
        """Jobs a previous daemon on this socket died running: report them lost, not unknown."""
        for job in self.ledger.recover(EXIT_LOST):
            self.jobs.jobs[job.id] = job
            self.jobs.retire(job)
            log.warning("job %s lost: %s", job.id, job.done_header["error"]["message"],
                        extra={"JOB_ID": job.id, "JOB_STATE": job.state})
        self.expiry.schedule()

    def _watchdog(self) -> None:
        # Pinged from the loop itself, so a wedged loop stops the pings and systemd restarts us.
        if self.stopping:
            return
        self.notifier.watchdog()
        self._loop.call_later(self.notifier.watchdog_interval, self._watchdog)

    def request_stop(self, reason: str, *, drain: bool = False) -> None:
        """Stop accepting, end what is held (cancel it, or with ``drain`` let it finish), exit."""
        if self.stopping:
            if reason in ("SIGTERM", "SIGINT"):
                self._force_stop()
            return
        self.stopping = reason
        self.notices.stopped = True
        log.info("stopping (%s)", reason)
        if self._server is not None:
            self._server.close()  # new connections wait in the backlog for the next activation
        self.listener.remove()
        # Cancelling running jobs escalates within the cancel graces; workers then exit at once.
        graces = self.config["cancel"]
        self.notifier.stopping(f"stopping ({reason})",
                               graces["interrupt_grace"] + graces["terminate_grace"] + 15)
        if not drain:
            for job in list(self.jobs.queue):
                self.jobs.unqueue(job)
                self.finish_job(job, cancelled_header("the daemon is shutting down"))
            for worker in list(self.workers.values()):
                if worker.held is not None:
                    self.cancels.cancel(worker.held, "terminate", None, None)
            for job in self.jobs.running():
                self.cancels.cancel(job, "terminate", None, None)
        for worker in list(self.workers.values()):
            if worker.state == WorkerState.IDLE:
                self.stop_worker(worker)
            elif worker.state == WorkerState.STARTING:
                self.kill_worker(worker)
        if not drain:
            # Whatever still runs after the cancel escalation had its chance gets SIGKILL.
            graces = self.config["cancel"]
            self._loop.call_later(graces["interrupt_grace"] + graces["terminate_grace"] + 2.0,
                                  self._force_stop)
        self.check_stopped()

    def _force_stop(self) -> None:
        if not self.workers:
            return
        log.warning("stopping: killing the workers still running")
        for worker in list(self.workers.values()):
            self.kill_worker(worker)

    def check_stopped(self) -> None:
        if not self.stopping or self._done is None or self._done.is_set():
            return
        if self.jobs.queue or self.jobs.running():
            return
        for worker in list(self.workers.values()):
            if worker.state == WorkerState.IDLE:
                self.stop_worker(worker)
        if self.workers or self._pending_sweeps:
            return
        if self.stopping == "idle" and self.clients:
            return  # serve whoever connected during the idle window, then go
        for conn in list(self.clients):
            self.catch_up(conn, force=True)  # a slow reader still learns how its jobs ended
            conn.close()
        log.info("stopped")
        self._done.set()

    # ---------------------------------------------------------------- workers

    def fill_pool(self) -> None:
        """Start workers until every placement slot is covered, unless backing off."""
        if self.stopping:
            return
        now = time.monotonic()
        if now < self.retry_at:
            if self._retry_handle is None:
                self._retry_handle = self._loop.call_later(self.retry_at - now, self._retry)
            return
        live = [w for w in self.workers.values() if w.state in LIVE]
        for device in self.placement.missing([w.device for w in live]):
            self.spawn_worker(device)

    def _retry(self) -> None:
        self._retry_handle = None
        self.fill_pool()

    def spawn_worker(self, device: int | None) -> None:
        self._slots += 1
        worker = pool.spawn(self._slots, self.placement.visible_devices(device), device)
        self.workers[worker.pid] = worker
        log.info("started worker pid %d%s", worker.pid, self.placement.label(device),
                 extra={"WORKER_PID": worker.pid})
        self._loop.create_task(self._connect(worker))
        timeout = self.config["workers"]["warmup_timeout"]
        if timeout:
            self._loop.call_later(timeout, self._warmup_deadline, worker)
        self.notifier.extend_timeout(timeout or 600)

    async def _connect(self, worker: WorkerProcess) -> None:
        await self._loop.connect_accepted_socket(lambda: WorkerConnection(self, worker), sock=worker.sock)

    def worker_connected(self, worker: WorkerProcess) -> None:
        warmup = self.config["warmup"]
        worker.connection.send({"t": "warmup", "imports": list(warmup["import"]),
                                "hooks": list(warmup["hooks"]), "device": worker.device,
                                "max_frame": self.max_payload, **self.placement.warmup_options()})

    def _warmup_deadline(self, worker: WorkerProcess) -> None:
        if worker.state == WorkerState.STARTING and not worker.reaped:
            step = f" (at {worker.warmup_step})" if worker.warmup_step else ""
            worker.error = (f"warm-up did not finish within {self.config['workers']['warmup_timeout']:g} s"
                            f"{step} (workers.warmup_timeout)")
            log.error("worker pid %d: %s", worker.pid, worker.error, extra={"WORKER_PID": worker.pid})
            # Still STARTING when it is reaped: a warm-up that timed out is a warm-up that failed
            # (backoff, the error in status, waiting clients told), not a worker we stopped.
            proctree.signal_group(worker.pgid, signal.SIGKILL)

    def worker_frame(self, worker: WorkerProcess, frame: Frame) -> None:
        kind = frame.type
        job = worker.job
        if kind == "out":
            stream = "stdout" if frame.get("fd") == 1 else "stderr"
            if job is not None:
                self.job_event(job, {"kind": stream}, frame.payload)
                self.joblog.output(job.id, worker.pid, stream, frame.payload)
                self.files.write(job.id, frame.payload)
            else:
                text = frame.payload.decode(errors="replace").rstrip()
                if text:
                    log.info("worker pid %d %s: %s", worker.pid, stream, text,
                             extra={"WORKER_PID": worker.pid})
        elif kind == "log" and job is not None:
            self.job_event(job, {"kind": "log", "level": frame.get("level"), "name": frame.get("name"),
                                 "message": frame.get("message")})
            self.joblog.record(job.id, worker.pid, frame.get("level", 20), frame.get("name", ""),
                               frame.get("message", ""))
            self.files.record(job.id, frame.get("level", 20), frame.get("name", ""),
                              frame.get("message", ""))
        elif kind == "progress" and job is not None:
            self.job_event(job, {"kind": "progress", "done": frame.get("done"),
                                 "total": frame.get("total"), "message": frame.get("message")})
        elif kind == "done" and frame.get("job") in worker.skipping:
            worker.skipping.discard(frame.get("job"))  # cancelled before it started: answered
        elif kind == "done" and job is not None and frame.get("job") == job.id:
            self.worker_finished_job(worker, frame)
        elif kind == "warming" and worker.state == WorkerState.STARTING:
            step = frame.get("step")
            worker.warmup_step = step[:200] if isinstance(step, str) else None
            self.notices.update()
        elif kind == "ready" and worker.error is not None:
            pass  # it timed out and is being killed: it runs nothing
        elif kind == "ready":
            worker.state = WorkerState.IDLE
            worker.token = frame.get("token")
            worker.warmup_steps = frame.get("steps", [])
            worker.warmup_seconds = frame.get("seconds")
            worker.extra = {k: v for k, v in frame.header.items()
                            if k not in ("t", "token", "steps", "seconds", "pid")}
            self.backoff = 0.0
            self.warmup_error = None
            log.info("worker pid %d warm in %.3f s", worker.pid, worker.warmup_seconds or 0,
                     extra={"WORKER_PID": worker.pid})
            self.dispatch()
        elif kind == "warmup_failed":
            worker.error = f"warm-up failed at {frame.get('step')}: {frame.get('error')}"
            log.error("worker pid %d %s\n%s", worker.pid, worker.error, frame.get("traceback", ""),
                      extra={"WORKER_PID": worker.pid})
        else:
            log.warning("worker pid %d sent an unexpected %r frame", worker.pid, kind,
                        extra={"WORKER_PID": worker.pid})
        self.update_status()

    def worker_finished_job(self, worker: WorkerProcess, frame: Frame) -> None:
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
                self.scheduler.running(worker.job, worker)
            reason = self.recycle_reason(worker, header)
            if reason:
                # A job it holds runs first: it is ahead of the exit in the worker's socket.
                log.info("recycling worker pid %d: %s", worker.pid, reason,
                         extra={"WORKER_PID": worker.pid})
                self.stop_worker(worker)
                self.fill_pool()
            elif worker.job is None:
                worker.state = WorkerState.IDLE
        self.dispatch()  # first: the worker waits for its next job, the client only for news
        self.finish_job(job, header, frame.payload)
        self.check_stopped()

    def recycle_reason(self, worker: WorkerProcess, done: dict[str, Any]) -> str | None:
        limits = self.config["workers"]
        if limits["max_jobs"] and worker.jobs_run >= limits["max_jobs"]:
            return f"ran {worker.jobs_run} jobs (workers.max_jobs)"
        if limits["max_rss"]:
            rss = worker.rss()
            if rss is not None and rss > limits["max_rss"]:
                return f"RSS {rss} bytes over workers.max_rss"
        return self.placement.recycle_reason(done)

    def stop_worker(self, worker: WorkerProcess) -> None:
        """Ask an idle worker to exit between jobs."""
        worker.state = WorkerState.STOPPING
        if worker.connection is not None:
            worker.connection.send({"t": "exit"})
        else:
            self.kill_worker(worker)

    def kill_worker(self, worker: WorkerProcess) -> None:
        if not worker.reaped:
            worker.state = WorkerState.STOPPING
            proctree.signal_group(worker.pgid, signal.SIGKILL)

    def reap(self) -> None:
        """SIGCHLD: collect every exited child; workers get their exit handled, orphans just go."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            worker = self.workers.pop(pid, None)
            if worker is not None:
                self.worker_exited(worker, status)
        self.update_status()

    def worker_exited(self, worker: WorkerProcess, status: int) -> None:
        worker.reaped = True
        worker.popen.returncode = os.waitstatus_to_exitcode(status)
        worker.exit_description = proctree.describe_status(status)
        if worker.connection is not None:
            worker.connection.close()
        was = worker.state
        worker.state = WorkerState.EXITED
        if was == WorkerState.STARTING:
            self._warmup_failed(worker)
        else:
            log.info("worker pid %d exited (%s)", worker.pid, worker.exit_description,
                     extra={"WORKER_PID": worker.pid})
        job = worker.job
        worker.job = None
        if worker.cancel_fd is not None:
            os.close(worker.cancel_fd)
            worker.cancel_fd = None
        held, worker.held = worker.held, None
        if held is not None:
            held.worker_pid = None
            if held.cancel is not None or self.stopping:
                self.finish_job(held, cancelled_header(f"cancelled; its worker pid {worker.pid} exited "
                                                     "before it started"))
            else:
                self.jobs.queue.appendleft(held)  # it never started: first in line again
        # Whatever the worker left behind re-parented to us (we are a subreaper): kill it all.
        leftovers = self._orphans()
        if job is not None and job.cancel is not None:
            leftovers += job.cancel.snapshot
        proctree.send(leftovers, signal.SIGKILL)
        if job is not None:
            self.after_exit(leftovers, lambda: self._job_worker_died(job, worker))
        elif leftovers:
            self.after_exit(leftovers, lambda: None)
        # Starting a replacement forks and execs from this loop: let the cancel's answer
        # and the spare's next job go out first.
        self._loop.call_soon(self.fill_pool)
        self.dispatch()
        self.check_stopped()

    def _warmup_failed(self, worker: WorkerProcess) -> None:
        error = worker.error or f"worker exited during warm-up ({worker.exit_description})"
        worker.error = error
        self.warmup_error = error
        self.backoff = min(max(1.0, self.backoff * 2), _MAX_BACKOFF)
        self.retry_at = time.monotonic() + self.backoff
        log.error("worker pid %d failed to warm up: %s; retrying in %g s", worker.pid, error,
                  self.backoff, extra={"WORKER_PID": worker.pid})
        if not any(w.state in LIVE for w in self.workers.values()):
            # Nobody can run the queue now: fail it rather than leave clients waiting blind.
            for job in list(self.jobs.queue):
                self.jobs.unqueue(job)
                self.finish_job(job, _no_worker_header(error))

    def _job_worker_died(self, job: Job, worker: WorkerProcess) -> None:
        if job.cancel is not None:
            header = cancelled_header(f"job cancelled; its worker pid {worker.pid} was "
                                    f"{worker.exit_description}")
        else:
            header = {"state": LOST, "exit_status": EXIT_LOST,
                      "error": {"type": "WorkerDied", "traceback": "",
                                "message": f"worker pid {worker.pid} died during the job "
                                           f"({worker.exit_description})"}}
        header.update(token=worker.token, device=worker.device)
        self.finish_job(job, header)
        self.dispatch()
        self.check_stopped()

    def _orphans(self) -> list[psutil.Process]:
        """Our children that are not workers, with their descendants: leftovers of dead workers."""
        direct = proctree.child_pids()
        if direct is not None and direct <= self.workers.keys():
            return []  # the common case, known without walking all of /proc
        try:
            children = psutil.Process().children()
        except psutil.Error:
            return []
        out = []
        for child in children:
            if child.pid in self.workers:
                continue
            out.append(child)
            try:
                out.extend(child.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
        return out

    def after_exit(self, procs: list[psutil.Process], callback: Callable[[], None]) -> None:
        """Call ``callback`` once every process in ``procs`` has exited (pidfd events)."""
        pending: dict[int, psutil.Process] = {}
        for proc in proctree.alive(procs):
            try:
                fd = os.pidfd_open(proc.pid)
            except ProcessLookupError:
                continue
            if not proc.is_running():  # the pid was recycled between our look and the open
                os.close(fd)
                continue
            pending[fd] = proc
        if not pending:
            callback()
            return
        self._pending_sweeps += 1

        def exited(fd: int) -> None:
            self._loop.remove_reader(fd)
            os.close(fd)
            pending.pop(fd, None)
            if not pending:
                self._pending_sweeps -= 1
                self.reap()
                callback()
                self.check_stopped()

        for fd in pending:
            self._loop.add_reader(fd, exited, fd)

    # ---------------------------------------------------------------- jobs

    def dispatch(self) -> None:
        """Hand queued jobs to idle workers (see ``scheduler``)."""
        self.scheduler.dispatch()

    def job_event(self, job: Job, fields: dict[str, Any], payload: bytes = b"") -> None:
        streams.publish(job, job.add_event(fields, payload), len(payload))

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

    def finish_job(self, job: Job, header: dict[str, Any], payload: bytes = b"") -> None:
        done = job.finish(header, payload)
        job.fetched = bool(job.subscribers or job.waiters)
        for conn in job.waiters:
            conn.write(done)
        job.waiters.clear()
        streams.ended(job)
        self.ledger.finished(job)
        if job.cancel is not None:
            job.cancel.settle(job)
        self.joblog.finished(job.id, job.worker_pid)
        self.files.finished(job.id)
        # Every end goes to the journal (searchable by JOB_ID); a plain log file keeps the
        # ones worth reading, or a busy client would grow it by a line per job.
        level = logging.INFO if job.state != SUCCEEDED or self.joblog.enabled else logging.DEBUG
        if log.isEnabledFor(level):
            self._log_end(job, header, level)
        self.jobs.retire(job)
        self.expiry.schedule()
        self.update_status()
        self.check_idle()

    def _log_end(self, job: Job, header: dict[str, Any], level: int) -> None:
        gpu = header.get("gpu") if isinstance(header.get("gpu"), dict) else {}
        log.log(level, "job %s %s (%s)", job.id, job.state, job.name,
                extra={"JOB_ID": job.id, "JOB_STATE": job.state,
                       **({"WORKER_PID": job.worker_pid} if job.worker_pid else {}),
                       **({"CLIENT_PID": job.client_pid} if job.client_pid else {}),
                       **({"DEVICE": header["device"]} if header.get("device") is not None else {}),
                       **({"GPU_PEAK_BYTES": gpu["peak_bytes"]} if "peak_bytes" in gpu else {})})

    # ---------------------------------------------------------------- clients

    def client_connected(self, conn: ClientConnection) -> None:
        self.clients.add(conn)
        self.check_idle()

    def client_gone(self, conn: ClientConnection) -> None:
        self.clients.discard(conn)
        if not self.clients and self._clients_gone is not None:
            self._clients_gone.set()
        for job in self.jobs.jobs.values():
            job.subscribers.pop(conn, None)
            job.waiters.discard(conn)
        for job in conn.lagging:  # ended jobs it was still catching up with, expired or not
            job.subscribers.pop(conn, None)
        conn.lagging.clear()
        self.check_idle()
        self.check_stopped()

    def submit(self, job: Job) -> Job:
        """Queue a new job and start it if a worker is free; the caller then answers the client.

        The ledger records it before the client learns its id (started, or else queued).
        """
        self.jobs.add(job)
        log.debug("job %s queued (%s)", job.id, job.name,
                  extra={"JOB_ID": job.id, "CLIENT_PID": job.client_pid})
        self.dispatch()
        if job.state == QUEUED:
            self.ledger.queued(job)
            self.notices.queued(job)
        return job

    def no_worker_message(self) -> str:
        return _no_worker_header(self.warmup_error or "")["error"]["message"]

    # ---------------------------------------------------------------- idle exit, status

    def check_idle(self) -> None:
        idle_exit = self.config["daemon"]["idle_exit"]
        if not idle_exit or self.stopping or self._loop is None:
            return
        idle = not self.clients and not self.jobs.queue and not self.jobs.running()
        if idle and self._idle_handle is None:
            self._idle_handle = self._loop.call_later(idle_exit, self._idle_timeout)
        elif not idle and self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    def _idle_timeout(self) -> None:
        self._idle_handle = None
        if self._idle_task is None and not self.clients and not self.jobs.queue and not self.jobs.running():
            self._idle_task = self._loop.create_task(self._idle_stop())

    async def _idle_stop(self) -> None:
        """Stop accepting first; exit only if nobody got in before that, else serve them."""
        try:
            # From here on a new client waits in systemd's socket for the next activation
            # (a self-bound socket's path goes: the client starts a new daemon).
            self.listener.remove()
            self._server.close()
            # A connection asyncio accepted just before the close reaches connection_made
            # two callbacks later (accept task, then transport): let it arrive.
            for _ in range(3):
                await asyncio.sleep(0)
            if self.stopping:
                return
            if (self.clients or self.jobs.queue or self.jobs.running()
                    or _connection_pending(self.listener.sock)):
                log.info("a client arrived as the daemon went idle: serving it")
                self._server = await self._serve()
                if self.stopping:
                    self._server.close()
                self.check_idle()
                return
            self.request_stop("idle", drain=True)
        finally:
            self._idle_task = None

    def status(self) -> dict[str, Any]:
        return status.build(self)

    def summary(self) -> str:
        return status.summary_line(self)

    def update_status(self) -> None:
        if self.notifier.enabled and not self.stopping:
            self.notifier.status(self.summary())


def _connection_pending(sock: socket.socket) -> bool:
    """Whether a client waits in the listening socket's backlog (readable = acceptable)."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def _no_worker_header(error: str) -> dict[str, Any]:
    return {"state": FAILED, "exit_status": 1,
            "error": {"type": "WarmupError", "traceback": "",
                      "message": f"no warm worker can run jobs: {error}. Fix the warm-up "
                                 "configuration, then restart the daemon ('warmctl shutdown')"}}
