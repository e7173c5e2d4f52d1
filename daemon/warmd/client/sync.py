"""``warmd.Client``: a concurrent.futures.Executor whose work runs on the daemon's warm workers."""
from __future__ import annotations

import concurrent.futures
import threading
from typing import Any, Callable, Iterator

from ..errors import ClientClosed, WarmdError
from . import jobspec
from .core import cancel_fields, job_rows, status_of
from .events import Event, Finished
from .future import JobFuture
from .group import JobGroup
from .info import JobInfo, Status
from .session import Session
from .syncconn import SyncConnection
from .watch import WatchEvent, WatchFeed

class Client(SyncConnection, concurrent.futures.Executor):
    """Submit Python calls, scripts and code to warm workers of a warmd daemon.

    ``socket``: the daemon's socket (default as ``warmctl``); ``autostart``: start
    a daemon when none answers; ``echo``: copy jobs' stdout/stderr to this
    process's own, as a local pool would; ``reconnect``: when the daemon goes away,
    connect again and pick up the jobs this client follows (True: for 30 s; or
    seconds; see ``warmd.client.reconnect``).
    """

    # ---------------------------------------------------------------- submitting
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> JobFuture:
        """Run ``fn(*args, **kwargs)`` on a warm worker (Executor.submit)."""
        return self.submit_job(self._core.call(fn, args, kwargs, self._modules))

    def submit_call(self, fn: Callable[..., Any], args: tuple = (), kwargs: dict | None = None, *,
                    device: int | None = None, **options: Any) -> JobFuture:
        """Like ``submit`` with the job's options spelled out: ``device`` pins a GPU;
        ``name``, ``timeout`` (seconds from its start; it is then cancelled and raises
        ``warmd.JobTimedOut``), ``priority`` (higher starts first), ``log_level``, ``env``
        (its whole environment) and ``stdin`` (a file it reads as its input) as
        ``warmd.client.jobspec.JobOptions`` says."""
        request = self._core.call(fn, args, kwargs or {}, self._modules)
        return self.submit_job(request.with_options(jobspec.JobOptions(**options)), device=device)

    def run_script(self, path: str, argv: list[str] | None = None, *, device: int | None = None,
                   **options: Any) -> JobFuture:
        """Run a Python script with runpy, as ``python path argv...`` would (options as
        ``submit_call`` takes them)."""
        request = jobspec.script(path, argv or [])
        return self.submit_job(request.with_options(jobspec.JobOptions(**options)), device=device)

    def run_module(self, module: str, argv: list[str] | None = None, *, device: int | None = None,
                   **options: Any) -> JobFuture:
        """Run a module, as ``python -m module argv...`` would, found from the current
        directory (options as ``submit_call``)."""
        request = jobspec.module(module, argv or [])
        return self.submit_job(request.with_options(jobspec.JobOptions(**options)), device=device)

    def run_code(self, code: str, argv: list[str] | None = None, *, device: int | None = None,
                 **options: Any) -> JobFuture:
        """Run a code string, as ``python -c code argv...`` would (options as ``submit_call``)."""
        request = jobspec.code(code, argv or [])
        return self.submit_job(request.with_options(jobspec.JobOptions(**options)), device=device)

    def submit_job(self, request: jobspec.JobRequest, *, device: int | None = None,
                   attach: bool = True, group: str | None = None) -> JobFuture:
        self._check_open()
        future = JobFuture(self)
        future._detached = not attach
        device = self.device if device is None else device
        self._send_with(lambda: self._core.submit(request, device, attach, group), future)
        return future

    def group(self, name: str = "group", *, device: int | None = None, follow: bool = True) -> JobGroup:
        """A new group: an Executor whose jobs run, are cancelled and report progress as one
        (see ``JobGroup``). Inside a job, the group is that job's child. Without ``follow``
        this client is not sent the group's events (its ``progress`` stays empty)."""
        self._check_open()
        future = JobFuture(self)
        future._detached = not follow
        self._send("group", future, name=str(name), attach=follow)
        future.job_id  # the daemon's refusal, if any, raises here
        return JobGroup(self, future, self.device if device is None else device)

    def map(self, fn: Callable[..., Any], *iterables: Any, timeout: float | None = None,
            chunksize: int = 1, device: int | None = None) -> Any:
        """Executor.map over warm workers: the jobs form one group (one cancel, one
        progress); results in order, raising at the first failing item."""
        # Nobody here can read this group's progress: its events are not sent.
        group = self.group(name=f"map {getattr(fn, '__qualname__', None) or 'call'}", device=device,
                           follow=False)
        try:
            return group.map(fn, *iterables, timeout=timeout)  # submits them all before it returns
        finally:
            group.close()

    def session(self, name: str = "session", *, device: int | None = None) -> Session:
        """A warm worker held for this client's calls, called directly: an Executor whose
        calls all run there, their modules kept imported between them (see
        ``warmd.client.session``). Blocks until a worker is free; refused (RequestFailed
        "no_workers") when ``workers.max_extra`` sessions are open already. Close it (or
        leave its ``with``) to let the worker go."""
        return Session(self, name, device)

    def attach(self, job_id: str) -> JobFuture:
        """A future for a job submitted elsewhere: its output so far, the rest live, its result."""
        future = JobFuture(self)
        self._send("attach", future, job=job_id)
        return future

    def detach(self, job_id: str) -> None:
        """Stop following a job (by its full id): this client's handles of it get no more
        events; the job goes on, and ``attach`` follows it again."""
        with self._lock:
            self._jobs.pop(job_id, None)
        self._call("detach", job=job_id)

    def resolve(self, job_id: str) -> str:
        """The full id of the job ``job_id`` names: an id, or a unique prefix of one
        (AmbiguousJob lists the candidates when several match)."""
        return self._call("resolve", job=job_id).header["job"]

    def restart(self, job_id: str) -> str:
        """Submit a finished script, code or module job again as it ran; the new job's id."""
        return self._call("restart", job=job_id).header["job"]

    def forget(self, job_ids: list[str]) -> dict[str, Any]:
        """Drop finished jobs from the daemon: {"jobs": the ids forgotten, "kept": {ref: why}}."""
        reply = self._call("forget", jobs=list(job_ids)).header
        return {"jobs": list(reply.get("jobs") or []), "kept": dict(reply.get("kept") or {})}

    def logs(self, job_id: str) -> list[Event]:
        """The events a job has produced so far, without following it."""
        job_id = self.resolve(job_id)  # the replay is routed by the job's full id
        future = JobFuture(self)
        self._follow(job_id, future)
        try:
            self._call("logs", job=job_id)  # the reply comes after the replayed events
        finally:
            self._unfollow(job_id, future)
        return list(future._events)

    def wait(self, job_id: str) -> Finished:
        """Block until the job ends and return its end record (no output)."""
        future = JobFuture(self)
        self._send("wait", future, job=job_id)  # followed by the id the reply names, as attach is
        future.job_id  # raises the daemon's refusal (UnknownJob, AmbiguousJob)
        with future._stream:
            while future._end is None and future._error is None:
                future._stream.wait()
        if future._end is None:
            raise future._error
        return future._end

    # ---------------------------------------------------------------- control
    def cancel(self, job_id: str, mode: str = "interrupt", *, interrupt_grace: float | None = None,
               terminate_grace: float | None = None) -> str:
        """Cancel a job by id; returns when its processes are gone.

        ``mode``: "interrupt" (SIGINT, then escalate), "terminate" or "kill".
        Returns "cancelled", "removed_from_queue", "already_finished" or "finished".
        """
        fields = cancel_fields(job_id, mode, interrupt_grace, terminate_grace)
        return self._call("cancel", **fields).header["outcome"]

    def ping(self) -> dict[str, Any]:
        return self._call("ping").header

    def status(self) -> Status:
        """The daemon, its workers and its job counts (``warmctl status``)."""
        return status_of(self._call("status"))

    def jobs(self) -> list[JobInfo]:
        """Every job the daemon holds, queued, running and finished (``warmctl jobs``)."""
        return job_rows(self._call("jobs"))

    def watch(self) -> Iterator[WatchEvent]:
        """Every change in the daemon as it happens, blocking between events: a ``Snapshot``
        first, then ``JobChanged``, ``JobProgress``, ``WorkerChanged`` and ``StatusChanged``
        (see ``warmd.client.watch``); ``Disconnected`` last, if the connection ends."""
        with self._watch_start:
            if self._feed is None:
                feed = WatchFeed()
                with self._lock:
                    self._feed = feed
                try:
                    self._call("watch")  # answered by the snapshot, which fills the feed first
                except BaseException:
                    with self._lock:
                        self._feed = None
                    raise
        return self._feed.blocking(self._lock, lambda: self._broken)

    def shutdown_daemon(self) -> None:
        """Ask the daemon to stop (it cancels what runs and exits)."""
        self._call("shutdown")

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Executor.shutdown: no new jobs from here on (ClientClosed); ``cancel_futures``
        cancels this client's jobs that have not started; with ``wait`` return once the
        rest have ended, else at once, disconnecting when they have."""
        with self._lock:
            self._shut = True
            sessions = list(self._sessions)
        for session in sessions:  # each lets its worker go once its calls have ended
            session.shutdown(wait=wait, cancel_futures=cancel_futures)
        with self._lock:
            pending = {f for s in sessions for f in s.pending()}
            pending.update(f for fs in self._jobs.values() for f in fs)
            pending.update(r for r in self._requests.values() if isinstance(r, JobFuture))
            pending.update(self._parked)
        if cancel_futures:
            for future in pending:
                if not future.running() and not future.done():
                    try:
                        future.cancel()
                    except WarmdError:
                        pass
        if wait:
            concurrent.futures.wait(pending)
            self.close()
        elif pending:
            threading.Thread(target=self._close_when_done, args=(pending,),
                             name="warmd-client-shutdown", daemon=True).start()
        else:
            self.close()

    def _close_when_done(self, pending: set[JobFuture]) -> None:
        concurrent.futures.wait(pending)
        self.close()

    def _check_open(self) -> None:
        if self._shut or self._closed:
            raise ClientClosed()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        # On an error, do not wait for jobs: they belong to the daemon and keep running there.
        self.shutdown(wait=exc_type is None)
        return False
