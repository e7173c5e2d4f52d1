"""warmd on a Dask cluster: the same jobs, warm-up and events, beyond one machine.

    import warmd.dask
    with warmd.dask.Client(cluster_or_address, config="warmd.toml") as client:
        job = client.submit(fn, *args)          # a concurrent.futures.Future, as warmd.Client's
        for event in job.events(): ...          # stdout/stderr, logging, progress, in order
        job.result()
        job.cancel()                            # its processes die; the worker stays warm
        with client.group(name="plate") as run:
            wells = run.map(process_well, range(96))

Each Dask worker gets a warmd daemon of its own (a worker plugin), with as many warm
workers as the Dask worker has threads, warmed by the configuration's ``[warmup]``.
A job is a Dask task that runs it on that daemon: Dask schedules, warmd runs. Events
travel through Dask's own event machinery (``Worker.log_event``, the client's topic).
See docs/dask.md for how this differs from a local daemon. Needs ``warmd[dask]``.
"""
from __future__ import annotations

try:
    import distributed  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("warmd.dask needs Dask's distributed scheduler: pip install 'warmd[dask]' "
                      "(or 'distributed')") from exc

from .client import Client
from .jobs import DaskGroup, DaskJob
from .workerside import WarmWorkers

__all__ = ["Client", "DaskJob", "DaskGroup", "WarmWorkers"]
