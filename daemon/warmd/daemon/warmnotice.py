"""What a job waiting for a warm worker is told: which warm-up step is running and for how long.

A warm-up can take minutes (imports, a registry build, a CUDA context). A client
whose job waits behind it hears, as events in the job's stream, each step as it
starts and every few seconds in between, so a hang looks like one; a warm-up
that ends within a second goes unmentioned.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from .pool import WorkerProcess, WorkerState

INTERVAL = 5.0  # seconds between notices while nothing changes
AFTER = 1.0     # a warm-up shorter than this is not worth a word


def waiting_notice(workers: Iterable[WorkerProcess], now: float | None = None) -> dict[str, Any] | None:
    """The event fields for jobs that can only wait for warm-up, or None when a warm
    worker exists (they wait in the queue, not on warm-up) or none is warming."""
    workers = list(workers)
    if any(w.state in (WorkerState.IDLE, WorkerState.BUSY) for w in workers):
        return None
    warming = [w for w in workers if w.state == WorkerState.STARTING]
    if not warming:
        return None
    now = time.monotonic() if now is None else now
    first = min(warming, key=lambda w: w.spawned)
    return {"kind": "warmup", "step": first.warmup_step or "starting the interpreter",
            "seconds": round(now - first.spawned, 1), "worker_pid": first.pid,
            "warming": len(warming)}
