"""The one seam in OpenHCS: the executor a compiled plate's worker lanes run on.

OpenHCS's ``execute_compiled_plate_request`` (core/orchestrator/
compiled_plate_execution.py:175 in OpenHCS 0.8.6) does everything a run needs in
its server process (viewers, plate-scoped steps, analysis consolidation, the
output plate's metadata, the last progress event) and asks one factory,
``WorkerExecutorFactory`` (core/orchestrator/worker_execution.py:305), for the
resources that run the lanes: a process pool started for this run, or threads,
or forked children. ``install`` puts ``LaneFactory`` in its place, in the
endpoint process only: each run's lanes become the jobs of one warmd group, on
warm workers, and nothing else of OpenHCS's flow changes.

While its lanes run on warmd, a run lets go of ``lock``, which every run holds
while it works in this process (compile, the plate-level finish): OpenHCS keeps
process-wide state there (its progress queue, its memory backend), so two runs
take turns in-process and overlap only while their wells run elsewhere.
"""
from __future__ import annotations

import concurrent.futures
import functools
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warmd.client.events import ChildProgress

from . import lanes

log = logging.getLogger("warmd.openhcs")


@dataclass
class Run:
    """One execution of the endpoint, as far as warmd goes: its group once its lanes run."""
    execution_id: str
    plate: str
    group: Any = None                      # warmd.JobGroup
    lanes: list = field(default_factory=list)
    cancelled: bool = False

    def going(self) -> int:
        """How many of its lanes have not ended."""
        return sum(1 for lane in self.lanes if not lane.done())


class Runs:
    """The endpoint's runs by execution id: what Stop finds to cancel."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, Run] = {}

    def begin(self, execution_id: str, plate: str) -> Run:
        with self._lock:
            run = self._runs[execution_id] = Run(execution_id, plate)
            return run

    def get(self, execution_id: str) -> Run | None:
        with self._lock:
            return self._runs.get(execution_id)

    def end(self, execution_id: str) -> None:
        with self._lock:
            self._runs.pop(execution_id, None)

    def all(self) -> list[Run]:
        with self._lock:
            return list(self._runs.values())

    def cancel(self, execution_id: str) -> None:
        """Cancel the run's group: its lanes' processes are gone when this returns."""
        run = self.get(execution_id)
        if run is None:
            return
        run.cancelled = True
        if run.group is not None:
            run.group.cancel()


@dataclass
class Backend:
    """What the lanes' factory needs of the endpoint."""
    client: Callable[[], Any]   # a connected warmd.Client (raises when there is none)
    lock: Any                   # threading.Lock: held by a run while it works in this process
    runs: Runs
    lane_log_level: str = "INFO"          # the GUI's worker log files
    job_log_level: str | None = None      # warmd's stream and journal (None: the daemon's)


def install(backend: Backend) -> Callable[[], None]:
    """Make OpenHCS's compiled-plate execution in this process ask ``LaneFactory`` for its
    lane executor. Returns the function that puts OpenHCS's own back."""
    from openhcs.core.orchestrator import compiled_plate_execution as cpe
    original = cpe.WorkerExecutorFactory

    def factory(**kwargs: Any) -> LaneFactory:
        return LaneFactory(backend, **kwargs)

    cpe.WorkerExecutorFactory = factory

    def uninstall() -> None:
        cpe.WorkerExecutorFactory = original

    return uninstall


class LaneFactory:
    """Called as OpenHCS calls its ``WorkerExecutorFactory``: the lanes of one run as the
    jobs of one warmd group, whatever the run's worker count or start method said (the
    compiled worker assignments, from ``num_workers``, still decide the lanes)."""

    def __init__(self, backend: Backend, *, log_file_base: str | None, progress_queue: Any,
                 progress_context: Any, cancellation: Any) -> None:
        self.backend = backend
        self.log_file_base = log_file_base
        self.progress_queue = progress_queue
        self.progress_context = progress_context
        self.cancellation = cancellation

    def create(self, *, runtime_environment: Any, actual_max_workers: int) -> Any:
        import multiprocessing
        execution_id = self.progress_context.execution_id
        run = self.backend.runs.get(execution_id) or self.backend.runs.begin(
            execution_id, Path(str(self.progress_context.plate_id)).name)
        client = self.backend.client()
        gpu = client.status().capacity.get("mode") == "gpu"
        run.group = client.group(name=f"openhcs {run.plate} {execution_id[:8]}")
        if run.cancelled or self.cancellation.is_requested:
            # Stop came while the group was made: ``Runs.cancel`` looks at the group after
            # marking the run, this after setting it, so one of the two cancels it.
            run.group.cancel()
            self.cancellation.raise_if_requested("before its lanes started")
        return _resources_class()(
            multiprocessing_context=multiprocessing.get_context("spawn"), use_multiprocessing=True,
            _executor=run.group, cancellation=self.cancellation, run=run, backend=self.backend,
            progress_queue=self.progress_queue, log_file_base=self.log_file_base, gpu=gpu)


@functools.cache
def _resources_class() -> type:
    """OpenHCS's pooled-executor resources with warmd's lane runner (defined on first use,
    so that importing this module does not import OpenHCS)."""
    from openhcs.core.orchestrator.worker_execution import (PooledWorkerExecutorResources,
                                                            PooledWorkerLaneRunner)

    class WarmdLaneRunner(PooledWorkerLaneRunner):
        """OpenHCS's pooled runner (its result collection, lane errors and cancellation
        checks), whose lanes are submitted as jobs of the run's group. It waits for them
        away from this process (other runs may compile meanwhile) until all have ended or
        one failed, and collects them back in it, where a lane's error is reported on this
        run's progress queue."""

        def __init__(self, resources: Any) -> None:
            super().__init__(resources.executor, cancellation=resources.cancellation,
                             release_axis_resources=True)
            self.resources = resources

        def run(self, pipeline_definition: list, execution_plan: Any,
                parent_contexts: Mapping[str, Any]) -> dict:
            futures = self._submit_lanes(pipeline_definition, execution_plan)
            with _away(self.resources.backend.lock, self.resources.progress_queue):
                concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
            return self._collect_results(futures, pipeline_definition, execution_plan,
                                         parent_contexts)

        def _submit_lanes(self, pipeline_definition: list, execution_plan: Any) -> dict:
            from openhcs.core.function_step_transport import FunctionStepTransportAuthority
            pipeline = FunctionStepTransportAuthority.normalize_pipeline(pipeline_definition)
            resources, backend = self.resources, self.resources.backend
            futures = {}
            for slot, lane_contexts in execution_plan.assignments.lane_axis_contexts.items():
                if not lane_contexts:
                    continue
                wells = list(execution_plan.assignments.owned_wells(slot))
                future = resources.executor.submit_call(
                    lanes.run_lane,
                    (pipeline, lane_contexts, execution_plan.lane_context(slot),
                     execution_plan.runtime_observation_mode, resources.log_file_base,
                     backend.lane_log_level),
                    name=_lane_name(resources.run.plate, slot, wells),
                    device=lane_device(lane_contexts) if resources.gpu else None,
                    **({"log_level": backend.job_log_level} if backend.job_log_level else {}))
                resources.run.lanes.append(future)
                futures[future] = (slot, wells)
            return futures

    @dataclass(frozen=True, slots=True)
    class WarmdLaneResources(PooledWorkerExecutorResources):
        run: Run = None
        backend: Backend = None
        progress_queue: Any = None
        log_file_base: str | None = None
        gpu: bool = False  # warmd's workers are pinned to devices: a lane goes to its GPU's

        def run_worker_lanes(self, *, pipeline_definition: list, worker_lane_execution_plan: Any,
                             parent_contexts: Mapping[str, Any]) -> dict:
            relay = threading.Thread(target=_relay, args=(self.executor, self.progress_queue),
                                     name=f"progress {self.run.execution_id[:8]}", daemon=True)
            relay.start()
            try:
                return WarmdLaneRunner(self).run(pipeline_definition, worker_lane_execution_plan,
                                                 parent_contexts)
            except BaseException:
                self.executor.cancel()  # a lane failed, or Stop: the rest of the run ends here
                raise
            finally:
                self.executor.close()  # the group ends once its lanes have, and the relay with it
                relay.join(timeout=30)

        def shutdown_executor(self) -> None:
            self.executor.wait()

    return WarmdLaneResources


@contextmanager
def _away(lock: Any, progress_queue: Any) -> Iterator[None]:
    """Let other runs work in this process while this one's lanes run elsewhere; back in
    it, this run's progress queue is OpenHCS's process-wide one again."""
    from openhcs.core.progress import set_progress_queue
    lock.release()
    try:
        yield
    finally:
        lock.acquire()
        set_progress_queue(progress_queue)


def _relay(group: Any, progress_queue: Any) -> None:
    """Each lane's OpenHCS progress events, carried as the detail of its warmd progress
    reports, onto the run's progress queue, where OpenHCS's server takes them as it takes
    a pool process's (checking each worker's claim, adding the topology, publishing)."""
    for event in group.events():
        detail = event.detail if isinstance(event, ChildProgress) else None
        if not isinstance(detail, dict):
            continue
        if "cut" in detail and len(detail) == 1:
            log.warning("a lane's progress event did not reach the GUI: %s", detail["cut"])
            continue
        progress_queue.put(detail)


def _lane_name(plate: str, slot: str, wells: list[str]) -> str:
    shown = ", ".join(wells[:4]) + (f" +{len(wells) - 4}" if len(wells) > 4 else "")
    return f"{plate} {slot} ({shown})"


def lane_device(lane_contexts: list) -> int | None:
    """The one GPU a lane's compiled steps were given, if they were given one."""
    devices = {binding.device_id
               for _, contexts in lane_contexts for _, context in contexts
               for plan in context.step_plans.values()
               for binding in plan.device_assignment.bindings}
    return devices.pop() if len(devices) == 1 else None


def submit_probe(client: Any) -> Any:
    """A job that says what OpenHCS a worker has (``lanes.probe``)."""
    return client.submit_call(lanes.probe, name="openhcs probe")

