"""What a running job can ask of its worker: progress, cancellation, device.

Outside a worker every function is a harmless no-op, so pipeline code can call
them unconditionally. The worker entry point installs its ``JobContext`` here
once at start-up; this is the one process-wide binding warmd keeps, because a
job's code has no other way to reach the worker that runs it.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, Protocol

from . import progressreport


class JobContext(Protocol):
    def progress(self, done: float, total: float | None, message: str,
                 fields: dict[str, Any] | None = None, detail: bytes = b"") -> None: ...
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


def progress(done: float, total: float | None = None, message: str = "", /, *,
             detail: Any = None, **fields: Any) -> None:
    """Report progress to every client following the current job, and to those following its
    parent or group (no-op outside a worker). ``fields`` are a few JSON scalars that say where
    the job is (``well="B03", step=2``; any name but ``detail``, ``total`` included); they
    reach clients, status and the journal. ``detail`` is any JSON-able record (an
    application's own progress event) that followers get whole, beside the report.

    A report never fails the job: past 16 fields the rest are left out (the message says
    so), other values go as their text, long text is cut, and a detail that cannot be sent
    (over 1 MiB) arrives as a note saying why."""
    ctx = _binding.context
    if ctx is None:
        return
    kept, cut = progressreport.fields(fields)
    ctx.progress(progressreport.number(done, 0), progressreport.number(total, None),
                 progressreport.message(message, cut), kept or None,
                 progressreport.encode_detail(detail) if detail is not None else b"")


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
