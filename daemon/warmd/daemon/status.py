"""The daemon's state as data (warmctl status --json) and as one human line (STATUS=)."""
from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any, Protocol

from .._version import __version__
from ..config import Config
from .jobs import JobTable
from .listener import Listener
from .placement import Placement
from .pool import WorkerProcess, WorkerState


class Host(Protocol):
    """What a status report reads from the supervisor."""
    started_by: str
    listener: Listener
    started: float
    python: str
    config: Config
    stopping: str | None
    placement: Placement
    workers: dict[int, WorkerProcess]
    jobs: JobTable
    warmup_error: str | None
    retry_at: float
    extra_workers: Counter


def build(sup: Host) -> dict[str, Any]:
    return {
        "daemon": {"pid": os.getpid(), "version": __version__, "started_by": sup.started_by,
                   "socket": str(sup.listener.path) if sup.listener.path else None,
                   "uptime": round(time.time() - sup.started, 3), "python": sup.python,
                   "config": sup.config.source, "stopping": sup.stopping},
        "capacity": {"workers": sup.placement.capacity,
                     "spares": sup.placement.target - sup.placement.capacity,
                     "mode": "gpu" if sup.placement.gpu else "cpu",
                     "extra": sum(sup.extra_workers.values()),  # kept warm for sessions, waiting parents
                     "max_extra": sup.config["workers"]["max_extra"]},
        "devices": [d.to_json() for d in sup.placement.devices],
        "workers": [w.describe() for w in sorted(sup.workers.values(), key=lambda w: w.slot)],
        "jobs": sup.jobs.counts(),
        "warmup_error": sup.warmup_error,
        "warmup_retry_in": retry_in(sup),
        "summary": summary_line(sup),
    }


def retry_in(sup: Host) -> float | None:
    """Seconds until the pool tries warm-up again after failures (None when not backing off)."""
    if not sup.warmup_error:
        return None
    return round(max(0.0, sup.retry_at - time.monotonic()), 1)


def summary_line(sup: Host) -> str:
    """e.g. '2 workers warm (GPU0, GPU1), 1 spare, 1 running, 3 queued, 41 done'."""
    states = [w.state for w in sup.workers.values()]
    warm = sum(1 for s in states if s in (WorkerState.IDLE, WorkerState.BUSY, WorkerState.HELD))
    warming = states.count(WorkerState.STARTING)
    working = min(warm, sup.placement.capacity)
    extra = min(sum(sup.extra_workers.values()), warm - working)
    spares = warm - working - extra
    counts = sup.jobs.counts()
    parts = [f"{working} worker{'s' if working != 1 else ''} warm ({sup.placement.describe()})",
             f"{spares} spare{'s' if spares != 1 else ''}"]
    held = states.count(WorkerState.HELD)
    if held:
        parts.append(f"{held} held by session{'s' if held != 1 else ''}")
    if extra > held:
        parts.append(f"{extra - held} extra for waiting parents")
    if warming:
        parts.append(f"{warming} warming")
    parts += [f"{counts['running']} running", f"{counts['queued']} queued", f"{counts['done']} done"]
    if sup.warmup_error:
        wait = retry_in(sup)
        parts.append(f"warm-up failing: {sup.warmup_error}"
                     + (f"; retrying in {wait:.0f} s" if wait else ""))
    return ", ".join(parts)
