"""``warmd.dask.Client``: warmd's jobs on a Dask cluster, with ``warmd.Client``'s verbs."""
from __future__ import annotations

import concurrent.futures
import os
import re
import threading
import tomllib
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import distributed
from distributed.scheduler import KilledWorker

from .. import paths
from ..client import jobspec
from ..config import Config, load
from ..errors import UnknownJob
from .carry import CarriedEnd, CarriedJob
from .jobs import DaskGroup, DaskJob
from .workerside import KEY_PREFIX, RerunMarks, WarmWorkers, cancel_here, daemon_here, run_job

SCATTER_BYTES = 1 << 20   # a job larger than this goes to a worker directly, not through the scheduler


class Client(concurrent.futures.Executor):
    """Submit calls, scripts and code to warm workers beside each worker of a Dask cluster.

    ``address_or_cluster``: what ``distributed.Client`` takes (a scheduler address, a
    cluster object such as ``LocalCluster`` or ``SLURMCluster``), or a
    ``distributed.Client`` to use (then left open by ``close()``); other keyword
    arguments go to ``distributed.Client``. ``config``: the warmd.toml whose ``[warmup]``
    (and ``[workers]``, ``[cancel]``, ...) every worker's daemon runs, default as the
    daemon finds its own; ``workers.count`` is each Dask worker's thread count, and
    ``workers.spares`` is 0 unless the file sets it. ``pythonpath``: directories, on the
    workers, where the warm-up hooks' modules are. ``reruns``: when a Dask worker dies
    mid-job, Dask starts the task again elsewhere; by default warmd ends such a job
    ``JobLost`` instead of running it twice; with ``reruns=True`` it runs again and the
    job's events say so (``warmd.client.events.Rerun``).
    """

    def __init__(self, address_or_cluster: Any = None, *, config: str | os.PathLike | None = None,
                 pythonpath: Iterable[str | os.PathLike] = (), reruns: bool = False,
                 **dask_options: Any) -> None:
        text, settings, spares_set = read_config(config)
        if isinstance(address_or_cluster, distributed.Client):
            self.dask, self._owns = address_or_cluster, False
        else:
            self.dask, self._owns = distributed.Client(address_or_cluster, **dask_options), True
        plugin = WarmWorkers(text, tuple(str(p) for p in pythonpath), None if spares_set else 0)
        self.plugin = plugin.name
        self._modules = jobspec.UserModules()
        self._modules.warm_packages = frozenset(settings.warm_packages)
        self._lock = threading.Lock()
        self._jobs: dict[str, DaskJob] = {}
        self._topic = f"warmd-events-{uuid.uuid4().hex}"
        self._closed = False
        self.reruns = reruns
        try:
            self.dask.register_plugin(plugin, name=plugin.name)
            self.dask.register_plugin(RerunMarks())
            self.dask.subscribe_topic(self._topic, self._on_event)
        except BaseException:
            if self._owns:
                self.dask.close()
            raise

    # ---------------------------------------------------------------- submitting
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> DaskJob:
        """Run ``fn(*args, **kwargs)`` on a warm worker of some Dask worker."""
        return self._call(fn, args, kwargs, {})

    def submit_call(self, fn: Callable[..., Any], args: tuple = (), kwargs: dict | None = None,
                    **options: Any) -> DaskJob:
        """``submit`` with the job's options: ``device``, ``name``, ``timeout``, ``priority``
        (Dask's priority of its task too), ``log_level``, ``env``, ``env_update``, as
        ``warmd.Client.submit_call`` takes them (``stdin`` cannot leave this machine)."""
        return self._call(fn, args, kwargs, options)

    def run_script(self, path: str, argv: list[str] | None = None, **options: Any) -> DaskJob:
        """Run a script, as ``python path argv...``: ``path`` must be where the workers see it."""
        return self._submit(self._options(CarriedJob.of(jobspec.script(path, argv or [])), options))

    def run_module(self, module: str, argv: list[str] | None = None, **options: Any) -> DaskJob:
        """Run a module, as ``python -m module argv...``, importable on the workers."""
        return self._submit(self._options(CarriedJob.of(jobspec.module(module, argv or [])), options))

    def run_code(self, code: str, argv: list[str] | None = None, **options: Any) -> DaskJob:
        """Run a code string, as ``python -c code argv...``."""
        return self._submit(self._options(CarriedJob.of(jobspec.code(code, argv or [])), options))

    def group(self, name: str = "group") -> DaskGroup:
        """A new group: jobs that run, are cancelled and report progress as one."""
        return DaskGroup(self, f"warmd-group-{_slug(name)}-{uuid.uuid4().hex}", str(name))

    def map(self, fn: Callable[..., Any], *iterables: Any, timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """Executor.map over the warm workers: the jobs form one group (one cancel);
        results in order, raising at the first failing item."""
        group = self.group(name=f"map {jobspec.call_name(fn)}")
        try:
            return group.map(fn, *iterables, timeout=timeout)
        finally:
            group.close()

    def cancel(self, job: DaskJob | str, mode: str = "interrupt") -> str:
        """Cancel a job (a ``DaskJob``, or the key of one this client has running), as
        ``warmd.Client.cancel``: ``mode`` "interrupt" (then escalate), "terminate" or
        "kill"; returns once its processes are gone, "cancelled", or "finished" if it
        had ended first."""
        if mode not in ("interrupt", "terminate", "kill"):
            raise ValueError(f"mode must be interrupt, terminate or kill, not {mode!r}")
        found = job if isinstance(job, DaskJob) else self._jobs.get(str(job))
        if found is None:
            raise UnknownJob("unknown_job", f"no job {job} is running from this client: "
                             "a warmd.dask client knows only the jobs it submitted")
        if not found.done():
            self._cancel([found], mode)
            concurrent.futures.wait([found])
        return "cancelled" if found.cancelled() else "finished"

    # ---------------------------------------------------------------- the workers' daemons
    def daemons(self) -> dict[str, dict[str, Any]]:
        """Each Dask worker's warmd daemon: its pid, socket, log file and warm workers, by
        worker address."""
        return self.dask.run(daemon_here, self.plugin)

    def stop_daemons(self) -> None:
        """Stop the daemons this client's configuration started (every client sharing it
        loses them too); workers that join later start none."""
        self.dask.unregister_worker_plugin(self.plugin)

    # ---------------------------------------------------------------- closing
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            pending = [job for job in self._jobs.values() if not job.done()]
        if cancel_futures and pending:
            self._cancel(pending, "interrupt")
        if wait:
            concurrent.futures.wait(pending)
        self.close()

    def close(self) -> None:
        """Stop listening for events; close the Dask client if this one made it. The
        workers' daemons stay, warm, for the next client (see ``stop_daemons``)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.dask.unsubscribe_topic(self._topic)
        finally:
            if self._owns:
                self.dask.close()

    def __exit__(self, *exc: object) -> bool:
        self.close()
        return False

    # ---------------------------------------------------------------- inside
    def _call(self, fn: Callable[..., Any], args: tuple, kwargs: dict | None, options: dict[str, Any],
              group: DaskGroup | None = None) -> DaskJob:
        job = CarriedJob.call(fn, args, kwargs or {}, self._modules)
        return self._submit(self._options(job, options), group)

    @staticmethod
    def _options(job: CarriedJob, options: dict[str, Any]) -> CarriedJob:
        options = dict(options)
        job.device = options.pop("device", None)
        return job.with_options(jobspec.JobOptions(**options))

    def _submit(self, spec: CarriedJob, group: DaskGroup | None = None) -> DaskJob:
        if self._closed:
            raise RuntimeError("this warmd.dask.Client is closed")
        key = f"{KEY_PREFIX}{_slug(spec.name)}-{uuid.uuid4().hex}"
        job = DaskJob(self, key, spec.name, group)
        with self._lock:
            self._jobs[key] = job
        carried: Any = spec
        if len(spec.payload) + sum(b.nbytes for b in spec.buffers) > SCATTER_BYTES:
            carried = self.dask.scatter(spec, hash=False)
        job.dask_future = self.dask.submit(run_job, carried, self.plugin, self._topic, self.reruns,
                                           key=key, pure=False,
                                           priority=spec.fields.get("priority", 0))
        job.dask_future.add_done_callback(lambda future: self._settle(job, future))
        return job

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        message = event[1]
        job = self._jobs.get(message.get("key", ""))
        if job is not None:
            job._event(message.get("events", []))

    def _settle(self, job: DaskJob, future: Any) -> None:
        """On Dask's callback thread, once the job's task is done, erred or cancelled."""
        try:
            if future.cancelled():
                job._ended(CarriedEnd.refused("cancelled", f"job {job.key} was cancelled",
                                              "JobCancelled", ""))
            else:
                job._ended(future.result())
        except KilledWorker as exc:
            job._ended(CarriedEnd.refused("lost", f"job {job.key} was lost: the Dask workers "
                                          f"running it died ({exc})", "JobLost", ""))
        except BaseException as exc:
            job._ended(None, exc)
        finally:
            with self._lock:
                self._jobs.pop(job.key, None)

    def _cancel(self, jobs: list[DaskJob], mode: str) -> None:
        """Cancel ``jobs`` wherever they are: on every worker (running ones end once their
        processes are gone; the others are refused if they start there), then in Dask."""
        keys = [job.key for job in jobs]
        outcomes = self.dask.run(cancel_here, keys, self.plugin, mode, on_error="return")
        reached = {key for per in outcomes.values() if isinstance(per, dict)
                   for key, said in per.items() if said in ("cancelled", "finished")}
        # A task that ended meanwhile keeps its end: only the others are Dask's to forget.
        rest = [job.dask_future for job in jobs if job.key not in reached and not job.dask_future.done()]
        if rest:
            self.dask.cancel(rest)


def read_config(config: str | os.PathLike | None) -> tuple[str, Config, bool]:
    """The configuration's text (validated here, so a mistake shows before any worker
    sees it), its settings, and whether it sets ``workers.spares``."""
    path = Path(config) if config else paths.config_file()
    required = bool(config or os.environ.get("WARMD_CONFIG"))
    settings = load(path, required=required)
    text = path.read_text() if settings.source != "defaults" else ""
    return text, settings, "spares" in tomllib.loads(text).get("workers", {})


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", name)[:40] or "job"
