"""The warmd job that runs one OpenHCS worker lane: what a pool process of OpenHCS's
execution server runs, on a warm worker instead.

A lane is a worker slot and the wells OpenHCS's compiler gave it; its wells run in
order through OpenHCS's own ``execute_worker_lane`` (core/orchestrator/
worker_execution.py:1031 in OpenHCS 0.8.6). Around it, as the pool's initializer
does for a pool process (``_configure_worker_process``, :396): one native thread,
a progress queue, and the lane's logging records in the log file the GUI looks for
(``zmq_worker_exec_<execution>_worker_<pid>.log``). The progress queue here turns
each of OpenHCS's progress events into a ``warmd.progress`` report that carries the
event whole as its detail: the endpoint gives it back to OpenHCS's server, which
checks it and sends it to the GUI as if a pool process had put it on its queue.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import warmd



class LaneProgress:
    """OpenHCS's progress queue (it only calls ``put(event_dict)``) as warmd progress."""

    def put(self, event: dict[str, Any]) -> None:
        well, step, phase = event.get("axis_id"), event.get("step_name"), event.get("phase")
        warmd.progress(event.get("completed") or 0, event.get("total"), f"{well} {step}: {phase}",
                       detail=event, well=well, step=step, phase=phase,
                       slot=event.get("worker_slot"))


@contextlib.contextmanager
def lane_log(path: str | None, level: str) -> Iterator[None]:
    """The lane's records at ``level`` and above into ``path`` too (as OpenHCS's pool
    processes write theirs), while what already listened to the root logger (warmd's
    job stream and journal) goes on getting only what it got before."""
    if not path:
        yield
        return
    root = logging.getLogger()
    before = root.level
    wanted = logging.getLevelName(level.upper())
    if not isinstance(wanted, int):
        wanted = logging.INFO
    keep = _AtLeast(before)
    listeners = list(root.handlers)
    for handler in listeners:
        handler.addFilter(keep)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(wanted)
    handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    root.addHandler(handler)
    root.setLevel(min(before, wanted) if before else wanted)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(before)
        for listener in listeners:
            listener.removeFilter(keep)


class _AtLeast(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


def run_lane(pipeline: list, lane_contexts: list, lane_context: Any, observation_mode: Any,
             log_base: str | None = None, file_level: str = "INFO") -> dict[str, Any]:
    """Run one lane's wells here, as one of OpenHCS's pool processes would; returns
    ``{well: ExecutionResult}``, as the pool's future does."""
    from openhcs.core.native_threading import configure_native_thread_count
    from openhcs.core.orchestrator.worker_execution import execute_worker_lane
    from openhcs.core.progress import set_progress_queue
    from openhcs.processing.func_registry import is_registry_initialized

    from . import warmup
    if not is_registry_initialized():  # a daemon without the warm-up hook: warm here, once
        warmup.warm()
    configure_native_thread_count(1)
    log_path = f"{log_base}_worker_{os.getpid()}.log" if log_base else None
    with lane_log(log_path, file_level):
        set_progress_queue(LaneProgress())
        try:
            return execute_worker_lane(pipeline, lane_contexts, lane_context, observation_mode,
                                       None, True)
        finally:
            set_progress_queue(None)


def probe() -> dict[str, Any]:
    """What the endpoint asks of a worker before its first run: the OpenHCS it imports
    (UnsupportedOpenHCS, raised here, if none or another), its Python, and whether its
    warm-up built the registry already."""
    import sys

    from . import compat
    version = compat.openhcs_version()
    from openhcs.processing.func_registry import is_registry_initialized
    return {"openhcs": version, "python": sys.executable, "warm": is_registry_initialized(),
            "pid": os.getpid()}
