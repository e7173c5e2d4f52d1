"""Worker processes as an explicit state machine, and how they are started.

    STARTING --ready--> IDLE --run--> BUSY --done--> IDLE
        |                |  ^
        |           hold |  | released
        |                v  |
        |                HELD (a session's: its calls run there)
        |                 |             |
   warmup_failed        exit          dies / cancelled by kill
        v                 v             v
      FAILED           STOPPING ----> EXITED
"""
from __future__ import annotations

import enum
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from .jobs import Job


class WorkerState(enum.Enum):
    STARTING = "warming"
    IDLE = "idle"
    BUSY = "busy"
    HELD = "held"
    STOPPING = "stopping"
    FAILED = "failed"
    EXITED = "exited"


LIVE = frozenset({WorkerState.STARTING, WorkerState.IDLE, WorkerState.BUSY, WorkerState.HELD})

# Variables that belong to the daemon's own service manager, not to user code.
_PRIVATE_ENV = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC",
                "WATCHDOG_PID")


@dataclass(eq=False)
class WorkerProcess:
    slot: int
    device: int | None
    popen: subprocess.Popen
    sock: socket.socket
    state: WorkerState = WorkerState.STARTING
    token: str | None = None
    warmup_steps: list[dict[str, Any]] = field(default_factory=list)
    warmup_seconds: float | None = None
    jobs_run: int = 0
    job: Job | None = None
    error: str | None = None
    exit_description: str | None = None
    reaped: bool = False
    connection: Any = None
    extra: dict[str, Any] = field(default_factory=dict)  # what warm-up reported beyond timings
    modules: dict[str, str] = field(default_factory=dict)  # module name -> source digest it holds
    cancel_fd: int | None = None   # write end of the pipe that names jobs to cancel (see supervisor)
    held: Job | None = None        # sent to run after ``job``; still queued as far as clients know
    skipping: set[str] = field(default_factory=set)  # held jobs cancelled before they started
    session: Any = None            # the session holding it (daemon.sessions.Session)
    spawned: float = field(default_factory=time.monotonic)
    warmup_step: str | None = None  # the warm-up step running now, as the worker last said
    observer: Any = None            # called with the worker after each move (the watch stream)
    process: psutil.Process | None = None  # for its RSS; made once (the pid is ours until reaped)

    def move(self, state: WorkerState) -> None:
        """The one way a worker changes state, so that watchers hear of every change."""
        self.state = state
        if self.observer is not None:
            self.observer(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def pgid(self) -> int:
        return self.popen.pid  # each worker leads its own process group

    def rss(self) -> int | None:
        if self.reaped:
            return None
        try:
            if self.process is None:
                self.process = psutil.Process(self.pid)
            return self.process.memory_info().rss
        except psutil.Error:
            return None

    def describe(self) -> dict[str, Any]:
        return {"slot": self.slot, "pid": self.pid, "pgid": self.pgid, "state": self.state.value,
                "device": self.device, "token": self.token, "jobs_run": self.jobs_run,
                "job": self.job.id if self.job else None, "held": self.held.id if self.held else None,
                "session": self.session.job.id if self.session else None,
                "progress": self.job.progress if self.job else None,
                "warmup_seconds": self.warmup_seconds,
                "warmup_step": self.warmup_step if self.state == WorkerState.STARTING else None,
                "warmup_steps": self.warmup_steps, "rss": self.rss(), "error": self.error,
                **self.extra}


def spawn(slot: int, device_env: str | None, device: int | None) -> WorkerProcess:
    """Start a fresh interpreter as a worker, leading its own process group.

    Never forked from the daemon: CUDA state does not survive fork, and a fresh
    interpreter has none of the daemon's sockets or signal handlers.
    """
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    cancel_read, cancel_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}
    if device_env is not None:
        env["CUDA_VISIBLE_DEVICES"] = device_env
    try:
        popen = subprocess.Popen(
            [sys.executable, "-m", "warmd.worker", "--fd", str(child.fileno()),
             "--cancel-fd", str(cancel_read)],
            pass_fds=(child.fileno(), cancel_read), process_group=0, stdin=subprocess.DEVNULL, env=env)
    except BaseException:
        os.close(cancel_write)
        raise
    finally:
        child.close()
        os.close(cancel_read)
    parent.setblocking(False)
    return WorkerProcess(slot, device, popen, parent, cancel_fd=cancel_write)
