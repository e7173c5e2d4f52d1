"""``warmd.Client``: a concurrent.futures.Executor whose work runs on the daemon's warm workers."""
from __future__ import annotations

import concurrent.futures
import os
import threading
from typing import Any, Callable, Iterator

from .. import fdpass
from ..channel import Channel, send_wire
from ..errors import ClientClosed, DaemonUnavailable, WarmdError
from ..protocol import E_SHUTTING_DOWN, RECV_SIZE, Frame, Wire
from . import jobspec
from . import reconnect as reconnects
from .connect import connect, socket_path
from .core import ClientCore, JobItem, Reply, WatchItem, cancel_fields, job_rows, raise_for, status_of
from .events import Event, Finished, Gap, Output, echo
from .future import JobFuture
from .group import JobGroup
from .info import JobInfo, Status
from .watch import WatchEvent, WatchFeed
from .waiters import Pending, Reattach, fail_waiting

class Client(concurrent.futures.Executor):
    """Submit Python calls, scripts and code to warm workers of a warmd daemon.

    ``socket``: the daemon's socket (default as ``warmctl``); ``autostart``: start
    a daemon when none answers; ``echo``: copy jobs' stdout/stderr to this
    process's own, as a local pool would; ``reconnect``: when the daemon goes away,
    connect again and pick up the jobs this client follows (True: for 30 s; or
    seconds; see ``warmd.client.reconnect``).
    """

    def __init__(self, socket: str | os.PathLike | None = None, autostart: bool = True, *,
                 echo: bool = False, device: int | None = None, name: str = "python",
                 daemon_args: list[str] | None = None, reconnect: bool | float = True) -> None:
        self.socket_path = socket_path(socket)
        self.echo = echo
        self.device = device
        self._name, self._autostart, self._daemon_args = name, autostart, daemon_args
        self._reconnect_for = reconnects.window(reconnect)
        self._online = threading.Event()    # clear while connecting again
        self._stopping = threading.Event()  # close() ends a reconnect's backoff
        self._modules = jobspec.UserModules()
        self._lock = threading.Lock()
        self._requests: dict[int, Pending | JobFuture] = {}
        self._parked: list[JobFuture] = []  # refused by a stopping daemon: for the next one
        self._jobs: dict[str, list[JobFuture]] = {}  # job id -> futures following it
        self._closed = False
        self._shut = False  # shutdown() was called: no new jobs, the rest may still end
        self._broken: BaseException | None = None
        self._feed: WatchFeed | None = None      # this connection's watch, once asked for
        self._watch_start = threading.Lock()
        self._channel, self._core = self._open()
        self._online.set()
        self._reader = threading.Thread(target=self._read_loop, name="warmd-client", daemon=True)
        self._reader.start()

    @property
    def daemon_info(self) -> dict[str, Any]:
        """What the daemon said in its welcome: version, pid, started_by."""
        return dict(self._core.welcome.header) if self._core.welcome else {}

    def _open(self) -> tuple[Channel, ClientCore]:
        """A new connection, greeted (starting a daemon if allowed and needed)."""
        channel, core = Channel(connect(self.socket_path, self._autostart, self._daemon_args)), ClientCore(self._name)
        try:
            channel.sock.sendall(core.greeting())
            while core.welcome is None:
                data = channel.sock.recv(65536)
                if not data:
                    raise core.eof()
                core.receive_data(data)
        except BaseException:
            channel.close()
            raise
        self._modules.warm_packages = frozenset(core.welcome.get("warm_packages", ()))
        return channel, core

    # ---------------------------------------------------------------- I/O thread
    def _read_loop(self) -> None:
        while True:
            error = self._read_until_lost()
            if not self._reconnected_after(error):
                break
        self._fail_all(error)

    def _read_until_lost(self) -> BaseException:
        sock, buffer = self._channel.sock, bytearray(RECV_SIZE)
        try:
            while True:
                n, files = fdpass.recv_into(sock, buffer)
                if not n:
                    error = self._core.eof()
                    break
                with memoryview(buffer) as view:
                    deliveries = self._core.receive_data(view[:n], files)
                for delivery in deliveries:
                    self._deliver(delivery)
                # Not kept until the next read: a result dropped by its caller goes now.
                files = deliveries = delivery = None
        except BaseException as exc:  # a protocol error or a reset
            error = exc if isinstance(exc, WarmdError) else DaemonUnavailable(f"connection to warmd lost: {exc}")
        return error

    def _reconnected_after(self, error: BaseException) -> bool:
        """Connect again and pick up what this client follows; False: not allowed, or the
        daemon did not come back in time."""
        if self._closed or not self._reconnect_for or not reconnects.worth_it(error):
            return False
        self._online.clear()
        with self._lock:
            waiting = list(self._requests.values())
            self._requests.clear()
            if self._feed is not None:
                self._feed.disconnected(error, reconnecting=True)
        fail_waiting(waiting, error)
        opened = reconnects.connect_again(self._open, self._reconnect_for, self._stopping.wait)
        if opened is None:
            return False
        channel, core = opened
        with self._lock:
            if self._closed:  # close() came while this connected: it shut the old one
                channel.close()
                return False
            old, self._channel, self._core = self._channel, channel, core
            followed = {job: reconnects.since(fs) for job, fs in self._jobs.items()}
            parked, self._parked = self._parked, []
            if self._feed is not None:
                self._feed.reconnected(core.welcome.get("pid"))
        old.close()
        self._online.set()
        try:
            for future in parked:
                self._send_with(future._resend, future)
            for job_id, seen in followed.items():  # the rest of their streams, or JobLost
                self._send_with(lambda j=job_id, n=seen: core.request("attach", job=j, since=n),
                                Reattach(job_id))
            if self._feed is not None:
                self._send_with(lambda: core.request("watch"), Pending())
        except OSError:
            pass  # gone again: the read loop finds out
        return True

    def _fail_all(self, error: BaseException) -> None:
        with self._lock:
            self._broken = error
            followed = [(job_id, f) for job_id, fs in self._jobs.items() for f in fs]
            waiting = list(self._requests.values()) + self._parked
            self._requests.clear()
            self._parked.clear()
            closed = self._closed
            if self._feed is not None:
                self._feed.disconnected(error)
        self._online.set()  # senders waiting for a reconnect see the error
        for job_id, future in followed:
            if not future.done():
                future._fail(self._core.followed_job_error(job_id, error, closed))
        fail_waiting(waiting, error)

    def _deliver(self, delivery: Reply | JobItem | WatchItem) -> None:
        if isinstance(delivery, WatchItem):
            with self._lock:
                if self._feed is not None:
                    self._feed.received(delivery.frame)
            return
        if isinstance(delivery, JobItem):
            item = delivery.item
            with self._lock:
                futures = list(self._jobs.get(delivery.job, ()))
                if isinstance(item, Finished):
                    self._jobs.pop(delivery.job, None)
            if self.echo and isinstance(item, (Output, Gap)):
                echo(item)
            for future in futures:  # each unpickles its own result: its arrays are its own
                future._add(item)
            return
        with self._lock:
            waiter = self._requests.pop(delivery.req, None)
        if isinstance(waiter, Reattach):
            if delivery.frame.type == "error":  # the daemon now on the socket does not know it
                with self._lock:
                    futures = self._jobs.pop(waiter.job_id, [])
                lost = reconnects.unknown_after_reconnect(waiter.job_id, self.daemon_info.get("pid"))
                for future in futures:
                    future._fail(lost)
            return
        if isinstance(waiter, JobFuture):
            if self._stopping_daemon(delivery.frame):
                with self._lock:  # sent again once connected to the next daemon
                    self._parked.append(waiter)
                return
            try:
                frame = raise_for(delivery.frame)
            except BaseException as exc:
                waiter._fail(exc)
                return
            if not waiter._detached:
                self._follow(frame.header["job"], waiter)
            waiter._accept(frame.header["job"])
        elif waiter is not None:
            waiter.frame = delivery.frame
            waiter.event.set()

    def _stopping_daemon(self, frame: Frame) -> bool:
        """A refusal because the daemon is stopping, when this client will connect to the
        next one: the job goes there instead (a restart must not fail a submit)."""
        return (frame.type == "error" and frame.get("code") == E_SHUTTING_DOWN
                and bool(self._reconnect_for) and not self._closed)

    def _send(self, message: str, waiter: Pending | JobFuture, payload: bytes = b"", /,
              **fields: Any) -> None:
        self._send_with(lambda: self._core.request(message, payload, **fields), waiter)

    def _send_with(self, encode: Callable[[], tuple[int, Wire]], waiter: Any) -> None:
        if not self._online.is_set():
            self._online.wait(self._reconnect_for)  # connecting again: this goes to the new daemon
        # Encoded and sent under one lock: frames leave in the order the core made them.
        with self._channel.send_lock:
            with self._lock:
                if self._closed:
                    raise ClientClosed()
                if self._broken is not None:
                    raise self._broken
                req, data = encode()
                self._requests[req] = waiter
                if isinstance(waiter, JobFuture):
                    waiter._resend = encode  # to the next daemon, if this one is stopping
            send_wire(self._channel.sock, data)

    def _follow(self, job_id: str, future: JobFuture) -> None:
        with self._lock:
            self._jobs.setdefault(job_id, []).append(future)

    def _unfollow(self, job_id: str, future: JobFuture) -> None:
        with self._lock:
            futures = self._jobs.get(job_id, [])
            if future in futures:
                futures.remove(future)
            if not futures:
                self._jobs.pop(job_id, None)

    def _call(self, message: str, /, **fields: Any) -> Frame:
        pending = Pending()
        self._send(message, pending, **fields)
        pending.event.wait()
        if pending.error is not None:
            raise pending.error
        return raise_for(pending.frame)

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
            pending = {f for fs in self._jobs.values() for f in fs}
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

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            channel = self._channel  # a reconnect that swaps it after this sees _closed
        self._stopping.set()
        try:
            channel.sock.shutdown(2)
        except OSError:
            pass
        self._reader.join()
        self._channel.close()
