"""What a running job can ask of its worker: progress, cancellation, device.

Outside a worker every function is a harmless no-op, so pipeline code can call
them unconditionally. The worker entry point installs its ``JobContext`` here
once at start-up; this is the one process-wide binding warmd keeps, because a
job's code has no other way to reach the worker that runs it.
"""
from __future__ import annotations

import json
from types import ModuleType
from typing import Any, Callable, Protocol

from .protocol import MAX_PROGRESS_FIELDS


class JobContext(Protocol):
    def progress(self, done: float, total: float | None, message: str,
                 fields: dict[str, Any] | None = None) -> None: ...
    def cancelled(self) -> bool: ...
    def device(self) -> int | None: ...
    def job_id(self) -> str | None: ...
    def on_code_change(self, callback: Callable[[frozenset[str]], None]) -> None: ...


class _Binding:
    __slots__ = ("context",)

    def __init__(self) -> None:
        self.context: JobContext | None = None


_binding = _Binding()


def install(context: JobContext) -> None:
    """Called by the worker entry point, once."""
    _binding.context = context


def progress(done: float, total: float | None = None, message: str = "", **fields: Any) -> None:
    """Report progress to every client following the current job, and to those following its
    parent or group (no-op outside a worker). ``fields`` are a few JSON values that say where
    the job is (``well="B03", step=2``); they reach clients, status and the journal."""
    ctx = _binding.context
    if ctx is None:
        return
    if fields:
        if len(fields) > MAX_PROGRESS_FIELDS:
            raise ValueError(f"progress takes at most {MAX_PROGRESS_FIELDS} fields, not {len(fields)}")
        for key, value in fields.items():
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise TypeError(f"progress field {key}={value!r}: use a str, int, float, bool or None")
        json.dumps(fields, allow_nan=False)  # ValueError for NaN, before it is sent
    ctx.progress(done, total, message, fields or None)


def cancelled() -> bool:
    """True once a cancel of the current job was requested (for code that polls)."""
    ctx = _binding.context
    return ctx.cancelled() if ctx is not None else False


def device() -> int | None:
    """The GPU index this worker is pinned to (as the daemon numbers them), or None in CPU mode."""
    ctx = _binding.context
    return ctx.device() if ctx is not None else None


def job_id() -> str | None:
    """The id of the job running now, or None outside a job."""
    ctx = _binding.context
    return ctx.job_id() if ctx is not None else None


def on_code_change(callback: Callable[[frozenset[str]], None]) -> Callable[[frozenset[str]], None]:
    """Have ``callback(names)`` called in this worker before a job whose user modules (those
    a client sends by value) changed since the worker last ran them: ``names`` are the
    modules whose source changed. An application that caches the functions of user code
    (compiled pipelines, registries) drops those entries there; a warm-up hook registers
    it. An exception in it fails that job. No-op outside a worker; returns ``callback``,
    so it can decorate."""
    ctx = _binding.context
    if ctx is not None:
        ctx.on_code_change(callback)
    return callback


def xp() -> ModuleType:
    """The array module for this worker: cupy on a GPU worker, numpy otherwise."""
    if device() is not None:
        import cupy
        return cupy
    import numpy
    return numpy
