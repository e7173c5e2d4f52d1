"""warmd: keep Python GPU pipelines warm.

Public API::

    import warmd
    with warmd.Client() as client:            # starts a daemon if none answers
        future = client.submit(fn, *args)     # a concurrent.futures.Future
        future.result()
        results = list(client.map(fn, items)) # the jobs of a map form one group
        with client.group(name="plate") as run:   # submit, map, cancel(), progress, wait()
            compiled = run.submit(compile_plate)
            wells = run.map(process_well, [warmd.ref(compiled)] * n, range(n))

    warmd.progress(done, total, message, well="B03")  # inside a job; no-op elsewhere
    warmd.ref(job)                            # a job's result, as another job's argument
    stack = warmd.empty((n, 2048, 2048), "uint16")  # numpy arrays in a memfd: sent uncopied
    warmd.cancelled(), warmd.device(), warmd.xp()
    warmd.on_code_change(callback)            # in a worker: called when user modules changed

The asyncio client lives in ``warmd.aio``. Importing warmd imports neither
numpy nor cupy.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (ClientClosed, ConfigError, DaemonUnavailable, FrameTooLarge, JobExit, JobLost, JobTimedOut, RemoteError,
                     RequestFailed, ResultElsewhere, SessionClosed, UnknownJob, UnsafePath, VersionMismatch,
                     WarmdError)
from .runtime import cancelled, device, job_id, on_code_change, progress, xp

if TYPE_CHECKING:
    from .client.events import ChildProgress, Finished, Gap, Log, Output, Progress, StateChange, Warming
    from .client.group import GroupProgress, JobGroup
    from .client.outcome import JobCancelled
    from .client.refs import ResultRef, ref
    from .client.future import JobFuture
    from .client.sync import Client
    from .inplace import buffer, empty, zeros

__all__ = ["Client", "JobFuture", "JobGroup", "GroupProgress", "ref", "ResultRef", "JobCancelled", "JobExit", "JobLost", "JobTimedOut", "RemoteError",
           "RequestFailed", "ClientClosed", "SessionClosed", "ResultElsewhere", "ConfigError", "UnknownJob", "UnsafePath", "VersionMismatch", "DaemonUnavailable", "WarmdError",
           "FrameTooLarge", "empty", "zeros", "buffer",
           "Output", "Log", "Progress", "ChildProgress", "StateChange", "Warming", "Gap", "Finished",
           "progress", "cancelled", "device", "xp", "job_id", "on_code_change", "__version__"]

_LAZY = {"Client": "client.sync", "JobFuture": "client.future", "JobCancelled": "client.outcome",
         "JobGroup": "client.group", "GroupProgress": "client.group", "ref": "client.refs",
         "ResultRef": "client.refs", "ChildProgress": "client.events",
         "Output": "client.events", "Log": "client.events", "Progress": "client.events",
         "StateChange": "client.events", "Warming": "client.events", "Gap": "client.events", "Finished": "client.events",
         "empty": "inplace", "zeros": "inplace", "buffer": "inplace"}


def __getattr__(name: str) -> Any:
    # Clients load on first use, so a worker importing warmd for progress() stays light.
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'warmd' has no attribute {name!r}")
