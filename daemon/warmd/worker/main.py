"""Worker entry point: warm up once, then run jobs the daemon sends, one at a time.

Started by the daemon as a fresh interpreter leading its own process group,
with one end of a socketpair on ``--fd`` and the read end of a cancel pipe on
``--cancel-fd``. Cancel reaches the worker as signals to its group: SIGINT
interrupts the running job (and is ignored between jobs), SIGTERM and SIGKILL
end the worker. The daemon may send the next job while one runs; the worker
starts it as it sends the last one's end. Before it signals, the daemon names
the job in the cancel pipe: a SIGINT then interrupts only that job, a job named
there is skipped rather than started, and after a named job ends the worker
waits for the daemon's "resume" before it starts another, so that a signal or
kill meant for the job that ended can never reach the next one.
"""
from __future__ import annotations

import _signal
import argparse
import logging
import os
import secrets
import select
import signal
import socket
import threading
import time
from collections import deque
from typing import Any, Callable

from .. import callpage, jobstdin, oob, proctree, runtime
from ..channel import Channel, take_socket
from ..daemon import fields
from ..daemon.timeouts import timed_out_end
from ..protocol import DEFAULT_MAX_PAYLOAD, Frame, source_digest
from . import execute, peakrss
from .capture import OutputPump
from .direct import Inbox, check_call, direct_end, notice_of
from .helpers import interpreter_helpers
from .usercode import UserCode, warm_modules
from .warmup import WarmupFailed, run_steps

EXIT_WARMUP_FAILED = 3  # reserved: the daemon backs off instead of respawning at once


class WorkerContext:
    """The worker side of warmd.runtime: what the running job can ask for."""

    def __init__(self, pump: OutputPump, device: int | None, cancel_fd: int | None = None) -> None:
        self.pump = pump
        self._device = device
        self.current_job: str | None = None
        self.cancel_requested = False
        self.cancel_fd = cancel_fd
        self.named: set[str] = set()  # jobs the daemon named in the cancel pipe
        self.timed_out: set[str] = set()  # of those, the ones it cancelled for their timeout
        self.code_change: list[Callable[[frozenset[str]], None]] = []  # warmd.on_code_change
        self.pid = os.getpid()
        self.token: str | None = None  # this warm-up's, told to the daemon when ready
        self.rss = peakrss.PeakRss()   # each job's peak memory
        if cancel_fd is not None:
            os.set_inheritable(cancel_fd, False)  # the job's own programs have no use for it

    def read_cancels(self) -> set[str]:
        """The jobs named in the cancel pipe so far (ids, one per line)."""
        while self.cancel_fd is not None:
            try:
                data = os.read(self.cancel_fd, 4096)
            except BlockingIOError:
                break
            if not data:  # the daemon is gone; the watch thread ends this worker
                self.cancel_fd = None
                break
            for line in data.decode("ascii", "replace").splitlines():
                words = line.split()
                if words:
                    self.named.add(words[0])
                    if "timeout" in words[1:]:
                        self.timed_out.add(words[0])
        return self.named

    # runtime.JobContext
    def progress(self, done: float, total: float | None, message: str,
                 fields: dict[str, Any] | None = None, detail: bytes = b"") -> None:
        if self.current_job is not None:
            self.pump.flush_then_send({"t": "progress", "done": done, "total": total,
                                       "message": str(message), **({"fields": fields} if fields else {}),
                                       **({"detail": True} if detail else {})}, detail)

    def cancelled(self) -> bool:
        return self.cancel_requested

    def device(self) -> int | None:
        return self._device

    def job_id(self) -> str | None:
        return self.current_job

    def on_code_change(self, callback: Callable[[frozenset[str]], None]) -> None:
        self.code_change.append(callback)

    def on_sigint(self, signum: int, frame: Any) -> None:
        # Only the running job, and only if the daemon named it: a SIGINT racing a job's end is
        # dropped, and so is one whose handler runs late (the signal landed on another thread
        # while this one waited in a system call) when the next job has started.
        if self.current_job is None or self.cancel_requested:
            return
        if os.getpid() != self.pid:
            raise KeyboardInterrupt  # a child the job forked: the group's SIGINT is for it
        if self.current_job in self.read_cancels():  # only this process reads the pipe
            self.cancel_requested = True
            raise KeyboardInterrupt


class JobLogHandler(logging.Handler):
    """Forwards the job's logging records to the daemon, in order with its output."""

    def __init__(self, context: WorkerContext) -> None:
        super().__init__(logging.DEBUG)
        self.context = context

    def emit(self, record: logging.LogRecord) -> None:
        if self.context.current_job is None:
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            self.context.pump.flush_then_send({"t": "log", "level": record.levelno,
                                               "name": record.name, "message": message})
        except Exception:
            self.handleError(record)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m warmd.worker")
    parser.add_argument("--fd", type=int, required=True, help="socketpair end to the daemon")
    parser.add_argument("--cancel-fd", type=int, help="read end of the daemon's cancel pipe")
    args = parser.parse_args(argv)

    sock = socket.socket(fileno=args.fd)
    channel = Channel(sock)
    proctree.become_subreaper()
    _watch_daemon(sock)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # until a job runs

    setup = channel.recv()
    if setup is None or setup.type != "warmup":
        return 1
    device = setup.get("device")
    pump = OutputPump(channel)
    context = WorkerContext(pump, device, args.cancel_fd)
    runtime.install(context)

    started = time.perf_counter()

    def on_step(label: str) -> None:  # the daemon tells clients waiting for a warm worker
        pump.flush_then_send({"t": "warming", "step": label})

    try:
        # A GPU worker readies its device first, so hooks compile kernels on it, under its limit.
        gpu = _start_gpu(device, setup.header, on_step) if device is not None else None
        steps = (gpu.steps if gpu else []) + run_steps(list(setup.get("imports", [])),
                                                       list(setup.get("hooks", [])), on_step)
    except WarmupFailed as exc:
        pump.flush_then_send({"t": "warmup_failed", "step": exc.step, "error": exc.error,
                              "traceback": exc.traceback})
        return EXIT_WARMUP_FAILED
    root = logging.getLogger()
    root.addHandler(JobLogHandler(context))
    # Python's own default (WARNING) unless workers.job_log_level says otherwise; a job's
    # log_level sets it for that job alone (see execute).
    root.setLevel(str(setup.get("log_level") or "warning").upper())
    spare = proctree.snapshot_identities()  # helpers started by warm-up stay warm
    context.rss.settle(context.rss.peak())  # the first job's peak is its own, not warm-up's
    usercode = UserCode(warm_modules(), context.code_change)
    context.token = secrets.token_hex(8)
    pump.flush_then_send({"t": "ready", "pid": os.getpid(), "token": context.token,
                          "steps": steps, "seconds": round(time.perf_counter() - started, 6),
                          **({"gpu": gpu.ready_info()} if gpu is not None else {})})
    signal.signal(signal.SIGINT, context.on_sigint)

    limits = execute.Limits(int(setup.get("max_frame") or DEFAULT_MAX_PAYLOAD),
                            int(setup.get("buffer_min") or oob.MIN_BUFFER), int(setup.get("buffer_max") or 0))
    channel.reader.max_payload = limits.max_frame  # a run's payload may be as large as the daemon allows
    inbox = Inbox(channel)
    held: execute.ProcessState | None = None  # the worker's state when a session took it
    while True:
        frame, direct = inbox.next()
        if frame is None:
            return 0
        if direct:  # from the client of the session holding this worker
            if frame.type == "source" and source_digest(str(frame.get("path")), frame.payload) == frame.get("sha"):
                usercode.add_source(frame.header, frame.payload)
            elif frame.type == "call":
                job_id = run_call(frame, context, spare, usercode, limits, gpu, inbox)
                frame = None
                if job_id is not None and not _settled(context, channel, usercode, inbox, job_id):
                    return 0
            continue
        if frame.type == "exit":
            return 0
        if frame.type == "source":
            usercode.add_source(frame.header, frame.payload)
        elif frame.type == "result":
            usercode.add_result(frame.header, frame.payload, frame.files)
        elif frame.type == "run":
            job_id = frame.header["job"]
            if job_id in context.read_cancels():
                context.named.discard(job_id)
                usercode.clear()
                pump.flush_then_send(_skipped(job_id))
                continue
            run_job(frame, context, spare, usercode, limits, gpu=gpu)
            frame = None  # its buffers' memfds close now, not when the next frame comes
            if not _settled(context, channel, usercode, inbox, job_id):
                return 0
        elif frame.type == "resume":
            context.named.discard(frame.get("job"))  # named after the worker had gone on
        elif frame.type == "hold":
            sock = take_socket(frame.files[:1])
            page = callpage.attach(frame.files[1].fd) if len(frame.files) == 2 else None
            if sock is None or page is None:
                pump.flush_then_send({"t": "released", "session": frame.get("session"),
                                      "error": "the session's channel did not arrive whole"})
                continue
            held = execute.ProcessState.save()
            inbox.hold(str(frame.get("session")), sock, page, limits.max_frame)
            pump.timed(True)
        elif frame.type == "release":
            session = inbox.session
            inbox.release()
            pump.timed(False)
            if held is not None:  # what the session's calls imported goes with it
                held.restore(forget_sent=True)
                held = None
            pump.flush_then_send({"t": "released", "session": session})


def _settled(context: WorkerContext, channel: Channel, usercode: UserCode, inbox: Inbox,
             job_id: str) -> bool:
    """After a job: if the daemon named it for cancel, wait for its word before going on."""
    if job_id in context.read_cancels() and not _wait_for_resume(channel, usercode, inbox.waiting, job_id):
        return False
    context.named.discard(job_id)
    context.timed_out.discard(job_id)
    return True


def _wait_for_resume(channel: Channel, usercode: UserCode, waiting: deque[Frame], job_id: str) -> bool:
    """After a job the daemon named for cancel: keep what arrives, start nothing, until the
    daemon has the job's end and says "resume" (False: told to exit, or the daemon is gone).
    A session's calls wait in their own socket."""
    while True:
        frame = channel.recv()
        if frame is None or frame.type == "exit":
            return False
        if frame.type == "resume" and frame.get("job") == job_id:
            return True
        if frame.type == "source":
            usercode.add_source(frame.header, frame.payload)
        elif frame.type != "resume":
            waiting.append(frame)


def run_call(frame: Frame, context: WorkerContext, spare: frozenset[tuple[int, float]],
             usercode: UserCode, limits: execute.Limits, gpu: Any, inbox: Inbox) -> str | None:
    """Run one of a session's calls. The daemon hears that it began once it has run a while,
    written or reported, or else with its end, after its caller has that end. Returns its id
    once it ran (None: refused or skipped)."""
    header = frame.header
    info = {"worker_pid": context.pid, "token": context.token, "device": context.device(),
            "started": time.time()}
    job_id = header.get("job") if isinstance(header.get("job"), str) else ""
    problem = check_call(header)
    try:
        run = (fields.run_fields(header, "call", frame.files, limits.buffer_max, inbox.checked_paths)
               if not problem else {})
        inbox.checked_paths = run.get("paths")
        modules = fields.mapping(header, "modules")
        timeout = fields.seconds(header, "timeout")
    except fields.BadRequest as exc:
        problem = str(exc)
    if problem:  # answered to the client alone: the daemon never hears of a call that never was
        inbox.reply(direct_end({"t": "done", "job": job_id, "state": "failed", "exit_status": 1,
                                "error": {"type": "BadRequest", "message": problem, "traceback": ""}},
                               info))
        return None
    # The page names the call before the pipe is read, and until its end has gone to the
    # daemon: a cancel that finds it unnamed there knows it will be skipped (see callpage).
    callpage.write(inbox.page, job_id, info["started"])
    try:
        return _run_call(frame, run, modules, timeout, info, context, spare, usercode, limits, gpu, inbox)
    finally:
        callpage.clear(inbox.page)


def _run_call(frame: Frame, run: dict[str, Any], modules: dict[str, str], timeout: float | None,
              info: dict[str, Any], context: WorkerContext, spare: frozenset[tuple[int, float]],
              usercode: UserCode, limits: execute.Limits, gpu: Any, inbox: Inbox) -> str | None:
    job_id = frame.header["job"]
    if job_id in context.read_cancels():  # named before it began: it never runs
        context.named.discard(job_id)
        end = _skipped(job_id)
        inbox.reply(direct_end(end, info))
        context.pump.send(notice_of(end, b""))
        return None
    began = {"t": "began", "job": job_id, "session": inbox.session, "name": run["name"] or "call",
             "started": info["started"], **({"timeout": timeout} if timeout is not None else {})}
    if timeout is not None:
        context.pump.send(began)  # the daemon times it from its start
    else:  # with its first output, after LATER seconds, or with its end: see capture
        context.pump.send_later(began)
    if modules:
        run["modules"] = modules

    def reply(end: dict[str, Any], payload: bytes, files: tuple) -> None:
        if job_id in context.timed_out:  # as the daemon says it, to the caller it did not reach
            end = timed_out_end(end, job_id, run["name"] or "call", timeout or 0.0)
        context.pump.flush_then_send(None)  # its output to the daemon first, as with any job
        inbox.reply(direct_end(end, info), payload, files)
        context.pump.send(notice_of(end, payload))  # the job is over: no output of its own left

    run_job(Frame({**run, "t": "run", "job": job_id}, frame.payload, frame.files), context, spare,
            usercode, limits, gpu=gpu, reply=reply)
    return job_id


def _skipped(job_id: str) -> dict[str, Any]:
    outcome = execute.Outcome("cancelled", 130, {"type": "Cancelled", "traceback": "",
                                                 "message": "cancelled before it started"})
    return {**outcome.header(), "job": job_id}


def _start_gpu(device: int, options: dict[str, Any], on_step) -> Any:
    # Imported here: only a worker pinned to a device loads cupy.
    from ..gpu.worker import warm_up
    return warm_up(device, options, on_step)


def _watch_daemon(sock: socket.socket) -> None:
    """If the daemon dies, take the job's processes down with this worker.

    The main thread may be deep in a job and not reading the socket; this thread
    only waits for the peer's hang-up (POLLRDHUP consumes nothing).
    """
    def watch() -> None:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLRDHUP)
        poller.poll()
        proctree.kill_descendants()
        os._exit(0)

    threading.Thread(target=watch, name="warmd-daemon-watch", daemon=True).start()


def run_job(frame: Frame, context: WorkerContext, spare: frozenset[tuple[int, float]],
            usercode: UserCode, limits: execute.Limits, gpu: Any = None,
            reply: Callable[[dict[str, Any], bytes, tuple], None] | None = None) -> None:
    """Run one job and send its end: to the daemon, or through ``reply`` (a session's call,
    whose modules then stay imported for the next)."""
    started = time.perf_counter()
    header = frame.header
    context.cancel_requested = False
    if gpu is not None:
        gpu.job_started()
    outcome = None
    stdin = jobstdin.OnFd0(jobstdin.split(header, frame.files)[1])  # the daemon checked it
    try:
        stdin.enter()  # before the job is current: no cancel interrupts it
        context.current_job = header["job"]
        try:
            outcome = execute.run(frame, context.cancelled, usercode, limits, keep_modules=reply is not None)
        finally:
            context.current_job = None
            stdin.restore()
    except KeyboardInterrupt:
        pass  # the cancel landed in our own bookkeeping: the job is cancelled all the same
    if outcome is None or (context.cancel_requested and outcome.state == "failed"):
        outcome = execute.Outcome("cancelled", 130, {"type": "KeyboardInterrupt",
                                                     "message": "job cancelled", "traceback": ""})
    # No job process outlives its job: kill what it left behind, escaped ones included.
    leftovers = proctree.kill_descendants(spare | interpreter_helpers()) if proctree.has_children() else 0
    # Undo what the job may have changed in how this worker is reached and cancelled. (The C
    # module's getsignal: signal.getsignal wraps its answer in an enum, 7 µs a call.)
    if _signal.getsignal(signal.SIGINT) != context.on_sigint:
        signal.signal(signal.SIGINT, context.on_sigint)
    if _signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    context.pump.restore()
    if gpu is not None:  # device sync, peak pool use, memory policy: before the done frame
        outcome.extra["gpu"] = gpu.job_finished(outcome.error)
    peak = context.rss.peak()
    outcome.extra.update(seconds=round(time.perf_counter() - started, 6), leftovers_killed=leftovers,
                         peak_rss=peak)
    end = {**outcome.header(), "job": header["job"]}
    if reply is None:
        context.pump.flush_then_send(end, outcome.payload, outcome.files)
    else:
        reply(end, outcome.payload, outcome.files)
    context.rss.settle(peak)  # after the end went out: the next job's peak is its own
