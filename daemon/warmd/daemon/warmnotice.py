"""What a job waiting for a warm worker is told: which warm-up step is running and for how long.

A warm-up can take minutes (imports, a registry build, a CUDA context). A client
whose job waits behind it hears, as events in the job's stream, each step as it
starts and every few seconds in between, so a hang looks like one; a warm-up
that ends within a second goes unmentioned.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, Callable

from .pool import WorkerProcess, WorkerState

INTERVAL = 5.0  # seconds between notices while nothing changes
AFTER = 1.0     # a warm-up shorter than this is not worth a word


def waiting_notice(workers: Iterable[WorkerProcess], now: float | None = None) -> dict[str, Any] | None:
    """The event fields for jobs that can only wait for warm-up, or None when a warm
    worker exists (they wait in the queue, not on warm-up) or none is warming."""
    workers = list(workers)
    if any(w.state in (WorkerState.IDLE, WorkerState.BUSY, WorkerState.HELD) for w in workers):
        return None
    warming = [w for w in workers if w.state == WorkerState.STARTING]
    if not warming:
        return None
    now = time.monotonic() if now is None else now
    first = min(warming, key=lambda w: w.spawned)
    return {"kind": "warmup", "step": first.warmup_step or "starting the interpreter",
            "seconds": round(now - first.spawned, 1), "worker_pid": first.pid,
            "warming": len(warming)}


class WarmupNotices:
    """Sends the notices to queued jobs: when a step starts, when a job joins the queue, and
    on a timer while jobs can only wait for warm-up."""

    def __init__(self, queue: Iterable[Any], workers: dict[int, WorkerProcess],
                 job_event: Callable[[Any, dict[str, Any]], None],
                 call_later: Callable[..., asyncio.TimerHandle]) -> None:
        self.queue = queue
        self.workers = workers
        self.job_event = job_event
        self.call_later = call_later
        self.stopped = False
        self._timer: asyncio.TimerHandle | None = None

    def _notice(self) -> dict[str, Any] | None:
        return None if self.stopped or not self.queue else waiting_notice(self.workers.values())

    def update(self) -> None:
        """A warm-up step started, or the timer fired: tell every queued job, re-arm."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        notice = self._notice()
        if notice is None:
            return
        if notice["seconds"] >= AFTER:
            for job in self.queue:
                self.job_event(job, notice)
            delay = INTERVAL
        else:
            delay = AFTER - notice["seconds"]
        self._timer = self.call_later(delay, self.update)

    def queued(self, job: Any) -> None:
        """``job`` joined the queue: tell it now; the others hear at the next tick."""
        if self._timer is None:
            self.update()
        elif (notice := self._notice()) is not None and notice["seconds"] >= AFTER:
            self.job_event(job, notice)
