"""``warmd.Client``: a concurrent.futures.Executor whose work runs on the daemon's warm workers."""
from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
from typing import Any, Callable

from .. import fdpass
from ..channel import Channel, send_wire
from ..errors import DaemonUnavailable, WarmdError
from ..protocol import RECV_SIZE, Frame, Wire
from . import jobspec
from .connect import connect, socket_path
from .core import ClientCore, JobItem, Reply, cancel_fields, raise_for
from .events import Event, Finished, Gap, Output
from .future import JobFuture
from .group import JobGroup

class _Pending:
    __slots__ = ("event", "frame", "error")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.frame: Frame | None = None
        self.error: BaseException | None = None


class Client(concurrent.futures.Executor):
    """Submit Python calls, scripts and code to warm workers of a warmd daemon.

    ``socket``: the daemon's socket (default as ``warmctl``); ``autostart``: start
    a daemon when none answers; ``echo``: copy jobs' stdout/stderr to this
    process's own, as a local pool would.
    """

    def __init__(self, socket: str | os.PathLike | None = None, autostart: bool = True, *,
                 echo: bool = False, device: int | None = None, name: str = "python",
                 daemon_args: list[str] | None = None) -> None:
        self.socket_path = socket_path(socket)
        self.echo = echo
        self.device = device
        self._core = ClientCore(name)
        self._modules = jobspec.UserModules()
        self._lock = threading.Lock()
        self._requests: dict[int, _Pending | JobFuture] = {}
        self._jobs: dict[str, list[JobFuture]] = {}  # job id -> futures following it
        self._closed = False
        self._broken: BaseException | None = None
        sock = connect(self.socket_path, autostart, daemon_args)
        self._channel = Channel(sock)
        try:
            self._handshake()
        except BaseException:
            self._channel.close()
            raise
        self._modules.warm_packages = frozenset(self._core.welcome.get("warm_packages", ()))
        self._reader = threading.Thread(target=self._read_loop, name="warmd-client", daemon=True)
        self._reader.start()

    @property
    def daemon_info(self) -> dict[str, Any]:
        """What the daemon said in its welcome: version, pid, started_by."""
        return dict(self._core.welcome.header) if self._core.welcome else {}

    def _handshake(self) -> None:
        self._channel.sock.sendall(self._core.greeting())
        while self._core.welcome is None:
            data = self._channel.sock.recv(65536)
            if not data:
                raise self._core.eof()
            self._core.receive_data(data)

    # ---------------------------------------------------------------- I/O thread
    def _read_loop(self) -> None:
        error: BaseException
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
        except BaseException as exc:  # a protocol error or a reset: fail everything pending
            error = exc if isinstance(exc, WarmdError) else DaemonUnavailable(f"connection to warmd lost: {exc}")
        with self._lock:
            self._broken = error
            followed = [(job_id, f) for job_id, fs in self._jobs.items() for f in fs]
            waiting = list(self._requests.values())
            self._requests.clear()
            closed = self._closed
        for job_id, future in followed:
            if not future.done():
                future._fail(self._core.followed_job_error(job_id, error, closed))
        for w in waiting:
            if isinstance(w, JobFuture):
                if not w.done():
                    w._fail(error)
            else:
                w.error = error
                w.event.set()

    def _deliver(self, delivery: Reply | JobItem) -> None:
        if isinstance(delivery, JobItem):
            item = delivery.item
            with self._lock:
                futures = list(self._jobs.get(delivery.job, ()))
                if isinstance(item, Finished):
                    self._jobs.pop(delivery.job, None)
            if self.echo and isinstance(item, (Output, Gap)):
                _echo(item)
            for future in futures:  # each unpickles its own result: its arrays are its own
                future._add(item)
            return
        with self._lock:
            waiter = self._requests.pop(delivery.req, None)
        if isinstance(waiter, JobFuture):
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

    def _send(self, message: str, waiter: _Pending | JobFuture, payload: bytes = b"", /,
              **fields: Any) -> None:
        self._send_with(lambda: self._core.request(message, payload, **fields), waiter)

    def _send_with(self, encode: Callable[[], tuple[int, Wire]], waiter: _Pending | JobFuture) -> None:
        # Encoded and sent under one lock: frames leave in the order the core made them.
        with self._channel.send_lock:
            with self._lock:
                if self._broken is not None:
                    raise self._broken
                if self._closed:
                    raise RuntimeError("cannot use a Client after shutdown()")
                req, data = encode()
                self._requests[req] = waiter
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
        pending = _Pending()
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
        future = JobFuture(self)
        future._detached = not attach
        device = self.device if device is None else device
        self._send_with(lambda: self._core.submit(request, device, attach, group), future)
        return future

    def group(self, name: str = "group", *, device: int | None = None, follow: bool = True) -> JobGroup:
        """A new group: an Executor whose jobs run, are cancelled and report progress as one
        (see ``JobGroup``). Inside a job, the group is that job's child. Without ``follow``
        this client is not sent the group's events (its ``progress`` stays empty)."""
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

    def status(self) -> dict[str, Any]:
        return {k: v for k, v in self._call("status").header.items() if k not in ("t", "req")}

    def jobs(self) -> list[dict[str, Any]]:
        return self._call("jobs").header["jobs"]

    def shutdown_daemon(self) -> None:
        """Ask the daemon to stop (it cancels what runs and exits)."""
        self._call("shutdown")

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Executor.shutdown: optionally cancel or wait for this client's jobs, then disconnect."""
        with self._lock:
            pending = {f for fs in self._jobs.values() for f in fs}
            pending.update(r for r in self._requests.values() if isinstance(r, JobFuture))
        if cancel_futures:
            for future in pending:
                if not future.done():
                    try:
                        future.cancel()
                    except WarmdError:
                        pass
        if wait:
            concurrent.futures.wait(pending)
        self.close()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        # On an error, do not wait for jobs: they belong to the daemon and keep running there.
        self.shutdown(wait=exc_type is None)
        return False

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._channel.sock.shutdown(2)
        except OSError:
            pass
        self._reader.join()
        self._channel.close()


def _echo(item: Output | Gap) -> None:
    if isinstance(item, Gap):
        print(f"warmd: job {item.job}: {item.describe()}", file=sys.stderr, flush=True)
        return
    out = sys.stdout if item.stream == "stdout" else sys.stderr
    if hasattr(out, "buffer"):
        out.buffer.write(item.data)
    else:
        out.write(item.text)
    out.flush()
