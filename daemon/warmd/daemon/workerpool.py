"""The worker pool: starting workers, warm-up and its failures, stopping, reaping, leftovers.

Workers are processes with a state machine (see ``pool``). This module keeps
enough of them warm for the placement, backs off when warm-up keeps failing,
and collects each exit: what the exited worker held goes back to the host (the
supervisor), with whatever processes it left behind killed first.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import Counter
from typing import Any, Callable, Protocol

import psutil

from .. import proctree
from ..config import buffer_limit, warmup_concurrency
from ..unixtransport import UnixTransport
from . import pool
from .jobs import Job
from .placement import Placement
from .pool import LIVE, WorkerProcess, WorkerState

log = logging.getLogger("warmd")

_MAX_BACKOFF = 60.0
EXTRA_LINGER = 30.0  # seconds an extra worker stays after the parents that wanted it ended


class Host(Protocol):
    """What the pool needs of the supervisor when a worker comes or goes."""

    def worker_connection(self, worker: WorkerProcess) -> asyncio.Protocol: ...
    def worker_gone(self, worker: WorkerProcess, job: Job | None, held: Job | None,
                    leftovers: list[psutil.Process]) -> None: ...
    def warmup_lost(self, error: str) -> None: ...
    def check_stopped(self) -> None: ...
    def update_status(self) -> None: ...
    def worker_changed(self, worker: WorkerProcess) -> None: ...


class WorkerPool:
    def __init__(self, host: Host, placement: Placement, config: dict[str, Any],
                 extend_timeout: Callable[[float], None]) -> None:
        self.host = host
        self.placement = placement
        self.warmup = config["warmup"]
        self.limits = config["workers"]
        self.max_frame = config["daemon"]["max_frame"]
        self.buffers = config["buffers"]
        self.job_log_level = config["workers"]["job_log_level"]
        self.extend_timeout = extend_timeout  # tells systemd a start may take this long
        self.workers: dict[int, WorkerProcess] = {}   # by pid, until reaped
        self.backoff = 0.0
        self.retry_at = 0.0
        self.warmup_error: str | None = None
        self.stopping = False
        self.extra: Counter = Counter()  # device -> workers wanted beyond the placement for now
        self.pending_sweeps = 0          # leftovers of exited workers not yet gone
        self._slots = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retry_handle: asyncio.TimerHandle | None = None
        self._trim_handle: asyncio.TimerHandle | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    # ---------------------------------------------------------------- views

    def live(self) -> list[WorkerProcess]:
        return [w for w in self.workers.values() if w.state in LIVE]

    def any_live(self) -> bool:
        return any(w.state in LIVE for w in self.workers.values())

    def in_state(self, state: WorkerState) -> list[WorkerProcess]:
        return [w for w in self.workers.values() if w.state == state]

    def running_job_of(self, pid: int | None) -> Job | None:
        """The job running in the process group ``pid`` belongs to, if that is a worker's:
        how a client inside a job is told apart (its submits become the job's children)."""
        if pid is None:
            return None
        try:
            pgid = os.getpgid(pid)
        except OSError:
            return None
        worker = self.workers.get(pgid)
        if worker is None or worker.state != WorkerState.BUSY or worker.job is None:
            return None
        return worker.job

    # ---------------------------------------------------------------- starting

    def fill(self) -> None:
        """Start workers until every placement slot (and every extra asked for) is covered,
        at most ``workers.warmup_concurrency`` warming at once (the rest start as those
        are warm), unless backing off after failed warm-ups."""
        if self.stopping:
            return
        now = time.monotonic()
        if now < self.retry_at:
            if self._retry_handle is None:
                self._retry_handle = self._loop.call_later(self.retry_at - now, self._retry)
            return
        room = (warmup_concurrency(self.limits["warmup_concurrency"])
                - len(self.in_state(WorkerState.STARTING)))
        for device in self.placement.missing([w.device for w in self.live()], self.extra)[:max(0, room)]:
            self.spawn(device)

    def _retry(self) -> None:
        self._retry_handle = None
        self.fill()

    def spawn(self, device: int | None) -> None:
        self._slots += 1
        worker = pool.spawn(self._slots, self.placement.visible_devices(device), device)
        self.workers[worker.pid] = worker
        worker.observer = self.host.worker_changed
        worker.observer(worker)
        log.info("started worker pid %d%s", worker.pid, self.placement.label(device),
                 extra={"WORKER_PID": worker.pid})
        UnixTransport(self._loop, worker.sock, self.host.worker_connection(worker))
        timeout = self.limits["warmup_timeout"]
        if timeout:
            self._loop.call_later(timeout, self._warmup_deadline, worker)
        self.extend_timeout(timeout or 600)

    def connected(self, worker: WorkerProcess) -> None:
        worker.connection.send({"t": "warmup", "imports": list(self.warmup["import"]),
                                "hooks": list(self.warmup["hooks"]), "device": worker.device,
                                "max_frame": self.max_frame, "buffer_min": self.buffers["min_bytes"],
                                "buffer_max": buffer_limit(self.buffers["max_bytes"]),
                                "log_level": self.job_log_level,
                                **self.placement.warmup_options()})

    def _warmup_deadline(self, worker: WorkerProcess) -> None:
        if worker.state == WorkerState.STARTING and not worker.reaped:
            step = f" (at {worker.warmup_step})" if worker.warmup_step else ""
            worker.error = (f"warm-up did not finish within {self.limits['warmup_timeout']:g} s"
                            f"{step} (workers.warmup_timeout)")
            log.error("worker pid %d: %s", worker.pid, worker.error, extra={"WORKER_PID": worker.pid})
            # Still STARTING when it is reaped: a warm-up that timed out is a warm-up that failed
            # (backoff, the error in status, waiting clients told), not a worker we stopped.
            proctree.signal_group(worker.pgid, signal.SIGKILL)

    def warm(self, worker: WorkerProcess) -> None:
        """``worker`` finished warming up: failures so far are forgiven."""
        worker.move(WorkerState.IDLE)
        self.backoff = 0.0
        self.warmup_error = None
        self._loop.call_soon(self.fill)  # its warm-up slot is free for the next worker

    # ---------------------------------------------------------------- stopping

    def recycle_reason(self, worker: WorkerProcess, done: dict[str, Any]) -> str | None:
        if self.limits["max_jobs"] and worker.jobs_run >= self.limits["max_jobs"]:
            return f"ran {worker.jobs_run} jobs (workers.max_jobs)"
        if self.limits["max_rss"]:
            rss = worker.rss()
            if rss is not None and rss > self.limits["max_rss"]:
                return f"RSS {rss} bytes over workers.max_rss"
        return self.placement.recycle_reason(done)

    def stop(self, worker: WorkerProcess) -> None:
        """Ask an idle worker to exit between jobs."""
        worker.move(WorkerState.STOPPING)
        if worker.connection is not None:
            worker.connection.send({"t": "exit"})
        else:
            self.kill(worker)

    def kill(self, worker: WorkerProcess) -> None:
        if not worker.reaped:
            worker.move(WorkerState.STOPPING)
            proctree.signal_group(worker.pgid, signal.SIGKILL)

    def want_extra(self, extra: Counter) -> None:
        """Workers wanted beyond the placement (per device) for now: started at once; let go
        ``EXTRA_LINGER`` seconds after they stop being wanted, so that a front end pressing
        "Run" again finds them warm."""
        if extra == self.extra:
            return
        grew = bool(extra - self.extra)
        self.extra = extra
        if grew:
            if self._trim_handle is not None:
                self._trim_handle.cancel()
                self._trim_handle = None
            self.fill()
        elif self._trim_handle is None:
            self._trim_handle = self._loop.call_later(EXTRA_LINGER, self.trim)

    def trim(self) -> None:
        """Stop workers beyond what the placement and the extras now want: those still
        warming first, then the idle ones started last."""
        self._trim_handle = None
        surplus = Counter(w.device for w in self.live()) - (self.placement.wanted() + self.extra)
        candidates = sorted((w for w in self.live()
                             if w.state not in (WorkerState.BUSY, WorkerState.HELD) and w.held is None),
                            key=lambda w: (w.state != WorkerState.STARTING, -w.spawned))
        for worker in candidates:
            if surplus[worker.device] > 0:
                surplus[worker.device] -= 1
                log.info("stopping extra worker pid %d: no longer needed", worker.pid,
                         extra={"WORKER_PID": worker.pid})
                if worker.state == WorkerState.STARTING:
                    self.kill(worker)
                else:
                    self.stop(worker)

    # ---------------------------------------------------------------- exits

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
                self._exited(worker, status)
        self.host.update_status()

    def _exited(self, worker: WorkerProcess, status: int) -> None:
        worker.reaped = True
        worker.popen.returncode = os.waitstatus_to_exitcode(status)
        worker.exit_description = proctree.describe_status(status)
        if worker.connection is not None:
            worker.connection.close()
        was = worker.state
        worker.move(WorkerState.EXITED)
        if was == WorkerState.STARTING:
            self._warmup_failed(worker)
        else:
            log.info("worker pid %d exited (%s)", worker.pid, worker.exit_description,
                     extra={"WORKER_PID": worker.pid})
        job, worker.job = worker.job, None
        held, worker.held = worker.held, None
        if worker.cancel_fd is not None:
            os.close(worker.cancel_fd)
            worker.cancel_fd = None
        # Whatever the worker left behind re-parented to us (we are a subreaper): kill it all.
        leftovers = self._orphans()
        if job is not None and job.cancel is not None:
            leftovers += job.cancel.snapshot
        proctree.send(leftovers, signal.SIGKILL)
        self.host.worker_gone(worker, job, held, leftovers)
        # Starting a replacement forks and execs from this loop: let the cancel's answer
        # and the spare's next job go out first.
        self._loop.call_soon(self.fill)

    def _warmup_failed(self, worker: WorkerProcess) -> None:
        error = worker.error or f"worker exited during warm-up ({worker.exit_description})"
        worker.error = error
        self.warmup_error = error
        self.backoff = min(max(1.0, self.backoff * 2), _MAX_BACKOFF)
        self.retry_at = time.monotonic() + self.backoff
        log.error("worker pid %d failed to warm up: %s; retrying in %g s", worker.pid, error,
                  self.backoff, extra={"WORKER_PID": worker.pid})
        if not self.any_live():
            self.host.warmup_lost(error)  # nobody can run the queue now

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
        self.pending_sweeps += 1

        def exited(fd: int) -> None:
            self._loop.remove_reader(fd)
            os.close(fd)
            pending.pop(fd, None)
            if not pending:
                self.pending_sweeps -= 1
                self.reap()
                callback()
                self.host.check_stopped()

        for fd in pending:
            self._loop.add_reader(fd, exited, fd)
