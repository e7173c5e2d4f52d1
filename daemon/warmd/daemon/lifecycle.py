"""How the daemon stops: on a signal or request (cancelling or draining what it holds),
by itself when it has been idle for ``daemon.idle_exit``, and when nobody can reach it
any more (its socket file removed or replaced) once its last client and job are gone."""
from __future__ import annotations

import asyncio
import logging
import select
import socket
from typing import Any, Protocol

from .cancel import cancelled_header
from .groups import Families
from .jobs import Job, JobTable
from .listener import Listener
from .notify import Notifier
from .pool import WorkerState
from .warmnotice import WarmupNotices
from .workerpool import WorkerPool

log = logging.getLogger("warmd")

REACH_CHECK = 10.0  # seconds between looks at whether the socket file is still this daemon's


class Host(Protocol):
    clients: set[Any]

    def finish_job(self, job: Job, header: dict[str, Any], payload: bytes = b"") -> None: ...
    def close_clients(self) -> None: ...
    async def serve(self) -> None: ...
    def stop_serving(self) -> None: ...


class Lifecycle:
    def __init__(self, host: Host, jobs: JobTable, workers: WorkerPool, cancels: Families,
                 listener: Listener, notifier: Notifier, notices: WarmupNotices,
                 graces: dict[str, float], idle_exit: float) -> None:
        self.host = host
        self.jobs = jobs
        self.pool = workers
        self.cancels = cancels
        self.listener = listener
        self.notifier = notifier
        self.notices = notices
        self.graces = graces
        self.idle_exit = idle_exit
        self.stopping: str | None = None
        self.done = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._idle_task: asyncio.Task | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        if not self.listener.activated:
            loop.call_later(REACH_CHECK, self._check_reachable)

    def _check_reachable(self) -> None:
        """A daemon whose socket file went (its runtime directory removed, say) can never
        be reached again: it leaves once the clients it has and their jobs are done,
        rather than holding warm workers for nobody."""
        if self.stopping:
            return
        if self.listener.reachable() or not self._idle():
            self._loop.call_later(REACH_CHECK, self._check_reachable)
            return
        log.warning("the socket %s is gone or another's: no client can reach this daemon; "
                    "stopping", self.listener.path)
        self.request_stop("unreachable", drain=True)

    def _kill_grace(self) -> float:
        return self.graces["interrupt_grace"] + self.graces["terminate_grace"]

    # ---------------------------------------------------------------- stop

    def request_stop(self, reason: str, *, drain: bool = False) -> None:
        """Stop accepting, end what is held (cancel it, or with ``drain`` let it finish), exit."""
        if self.stopping:
            if reason in ("SIGTERM", "SIGINT"):
                self._force_stop()
            return
        self.stopping = reason
        self.pool.stopping = True
        self.notices.stopped = True
        log.info("stopping (%s)", reason)
        self.host.stop_serving()  # new connections wait in the backlog for the next activation
        self.listener.remove()
        # Cancelling running jobs escalates within the cancel graces; workers then exit at once.
        self.notifier.stopping(f"stopping ({reason})", self._kill_grace() + 15)
        if not drain:
            for job in list(self.jobs.queue):
                self.jobs.unqueue(job)
                self.host.finish_job(job, cancelled_header("the daemon is shutting down"))
            for worker in list(self.pool.workers.values()):
                if worker.held is not None:
                    self.cancels.cancel(worker.held, "terminate", None, None)
            for job in self.jobs.running():
                self.cancels.cancel(job, "terminate", None, None)
        for worker in list(self.pool.workers.values()):
            if worker.state == WorkerState.IDLE or (worker.state == WorkerState.HELD and worker.job is None):
                self.pool.stop(worker)
            elif worker.state == WorkerState.STARTING:
                self.pool.kill(worker)
        if not drain:
            # Whatever still runs after the cancel escalation had its chance gets SIGKILL.
            self._loop.call_later(self._kill_grace() + 2.0, self._force_stop)
        self.check_stopped()

    def _force_stop(self) -> None:
        if not self.pool.workers:
            return
        log.warning("stopping: killing the workers still running")
        for worker in list(self.pool.workers.values()):
            self.pool.kill(worker)

    def check_stopped(self) -> None:
        if not self.stopping or self.done.is_set():
            return
        if self.jobs.queue or self.jobs.running():
            return
        for worker in self.pool.in_state(WorkerState.IDLE) + self.pool.in_state(WorkerState.HELD):
            self.pool.stop(worker)
        if self.pool.workers or self.pool.pending_sweeps:
            return
        if self.stopping == "idle" and self.host.clients:
            return  # serve whoever connected during the idle window, then go
        self.host.close_clients()
        log.info("stopped")
        self.done.set()

    # ---------------------------------------------------------------- idle exit

    def _idle(self) -> bool:
        return not self.host.clients and not self.jobs.queue and not self.jobs.running()

    def check_idle(self) -> None:
        if not self.idle_exit or self.stopping or self._loop is None:
            return
        idle = self._idle()
        if idle and self._idle_handle is None:
            self._idle_handle = self._loop.call_later(self.idle_exit, self._idle_timeout)
        elif not idle and self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    def _idle_timeout(self) -> None:
        self._idle_handle = None
        if self._idle_task is None and self._idle():
            self._idle_task = self._loop.create_task(self._idle_stop())

    async def _idle_stop(self) -> None:
        """Stop accepting first; exit only if nobody got in before that, else serve them."""
        try:
            # From here on a new client waits in systemd's socket for the next activation
            # (a self-bound socket's path goes: the client starts a new daemon).
            self.listener.remove()
            self.host.stop_serving()
            # A connection asyncio accepted just before the close reaches connection_made
            # two callbacks later (accept task, then transport): let it arrive.
            for _ in range(3):
                await asyncio.sleep(0)
            if self.stopping:
                return
            if not self._idle() or _connection_pending(self.listener.sock):
                log.info("a client arrived as the daemon went idle: serving it")
                await self.host.serve()
                if self.stopping:
                    self.host.stop_serving()
                self.check_idle()
                return
            self.request_stop("idle", drain=True)
        finally:
            self._idle_task = None


def _connection_pending(sock: socket.socket) -> bool:
    """Whether a client waits in the listening socket's backlog (readable = acceptable)."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))
