"""Worker entry point: warm up once, then run jobs the daemon sends, one at a time.

Started by the daemon as a fresh interpreter leading its own process group,
with one end of a socketpair on ``--fd``. Cancel reaches the worker as signals
to its group: SIGINT interrupts the running job (and is ignored between jobs),
SIGTERM and SIGKILL end the worker.
"""
from __future__ import annotations

import argparse
import logging
import os
import secrets
import select
import signal
import socket
import threading
import time
from typing import Any

from .. import proctree, runtime
from ..channel import Channel
from ..protocol import DEFAULT_MAX_PAYLOAD
from . import execute
from .capture import OutputPump
from .usercode import UserCode, warm_modules
from .warmup import WarmupFailed, run_steps

EXIT_WARMUP_FAILED = 3  # reserved: the daemon backs off instead of respawning at once


class WorkerContext:
    """The worker side of warmd.runtime: what the running job can ask for."""

    def __init__(self, pump: OutputPump, device: int | None) -> None:
        self.pump = pump
        self._device = device
        self.current_job: str | None = None
        self.cancel_requested = False

    # runtime.JobContext
    def progress(self, done: float, total: float | None, message: str) -> None:
        if self.current_job is not None:
            self.pump.flush_then_send({"t": "progress", "done": done, "total": total,
                                       "message": str(message)})

    def cancelled(self) -> bool:
        return self.cancel_requested

    def device(self) -> int | None:
        return self._device

    def job_id(self) -> str | None:
        return self.current_job

    def on_sigint(self, signum: int, frame: Any) -> None:
        # Only a running job is interrupted; a SIGINT racing the job's end is dropped.
        if self.current_job is not None and not self.cancel_requested:
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
    context = WorkerContext(pump, device)
    runtime.install(context)

    started = time.perf_counter()
    try:
        # A GPU worker readies its device first, so hooks compile kernels on it, under its limit.
        gpu = _start_gpu(device, setup.header) if device is not None else None
        steps = (gpu.steps if gpu else []) + run_steps(list(setup.get("imports", [])),
                                                       list(setup.get("hooks", [])))
    except WarmupFailed as exc:
        pump.flush_then_send({"t": "warmup_failed", "step": exc.step, "error": exc.error,
                              "traceback": exc.traceback})
        return EXIT_WARMUP_FAILED
    root = logging.getLogger()
    root.addHandler(JobLogHandler(context))
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    spare = proctree.snapshot_identities()  # helpers started by warm-up stay warm
    usercode = UserCode(warm_modules())
    pump.flush_then_send({"t": "ready", "pid": os.getpid(), "token": secrets.token_hex(8),
                          "steps": steps, "seconds": round(time.perf_counter() - started, 6),
                          **({"gpu": gpu.ready_info()} if gpu is not None else {})})
    signal.signal(signal.SIGINT, context.on_sigint)

    while True:
        frame = channel.recv()
        if frame is None or frame.type == "exit":
            return 0
        if frame.type == "source":
            usercode.add_source(frame.header, frame.payload)
        elif frame.type == "run":
            run_job(frame.header, frame.payload, context, spare, usercode,
                    int(setup.get("max_frame") or DEFAULT_MAX_PAYLOAD), gpu=gpu)


def _start_gpu(device: int, options: dict[str, Any]) -> Any:
    # Imported here: only a worker pinned to a device loads cupy.
    from ..gpu.worker import warm_up
    return warm_up(device, options)


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


def run_job(header: dict[str, Any], payload: bytes, context: WorkerContext,
            spare: frozenset[tuple[int, float]], usercode: UserCode, max_result: int,
            gpu: Any = None) -> None:
    started = time.perf_counter()
    context.cancel_requested = False
    if gpu is not None:
        gpu.job_started()
    outcome = None
    try:
        context.current_job = header["job"]
        try:
            outcome = execute.run(header, payload, context.cancelled, usercode, max_result)
        finally:
            context.current_job = None
    except KeyboardInterrupt:
        pass  # the cancel landed in our own bookkeeping: the job is cancelled all the same
    if outcome is None or (context.cancel_requested and outcome.state == "failed"):
        outcome = execute.Outcome("cancelled", 130, {"type": "KeyboardInterrupt",
                                                     "message": "job cancelled", "traceback": ""})
    # No job process outlives its job: kill what it left behind, escaped ones included.
    leftovers = proctree.kill_descendants(spare) if proctree.has_children() else 0
    # Undo what the job may have changed in how this worker is reached and cancelled.
    signal.signal(signal.SIGINT, context.on_sigint)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    context.pump.restore()
    if gpu is not None:  # device sync, peak pool use, memory policy: before the done frame
        outcome.extra["gpu"] = gpu.job_finished(outcome.error)
    outcome.extra.update(seconds=round(time.perf_counter() - started, 6), leftovers_killed=leftovers)
    context.pump.flush_then_send(outcome.header(), outcome.payload)
