"""Every OpenHCS internal this example touches, kept in one module.

Written against openhcs 0.8.6 (``OPENHCS_VERSION``). OpenHCS has no public API for
"compile a plate here, run its wells somewhere else, finish the plate here": its own
``PipelineOrchestrator.execute_compiled_plate`` plans worker lanes, starts a process
pool (spawn: fresh interpreters each run) and runs the plate-level finish, all in
one call. This module takes that call apart, in the same order, so that the wells
can run as warmd jobs on warm workers instead:

======================  =========================================================
here                    OpenHCS 0.8.6 (site-packages/openhcs/...)
======================  =========================================================
``compile_plate``       ``PipelineOrchestrator.initialize``/``compile_pipelines``
                        (core/orchestrator/orchestrator.py:407, :635)
``CompiledPlate.wells`` ``CompiledContextLanePlanner.plan`` with one lane per well
                        (core/orchestrator/worker_lanes.py:150), transport
                        contexts normalised as ``PooledWorkerExecutorResources``
                        does for its process pool (core/orchestrator/
                        worker_execution.py:123, :640)
``run_well``            ``execute_worker_lane``, what each pool process runs
                        (core/orchestrator/worker_execution.py:1031), after the
                        pool initializer's thread limit (``_configure_worker_process``,
                        :396)
``CompiledPlate.finish`` the tail of ``execute_compiled_plate_request``
                        (core/orchestrator/compiled_plate_execution.py:175-290):
                        merge runtime records, ``execute_plate_scoped_steps``
                        (:432), ``consolidate_analysis_outputs``,
                        ``OpenHCSMetadataWriter.finalize_completed_plate``
``run_plate_inline``    the public path: ``execute_compiled_plate``
                        (core/orchestrator/orchestrator.py:668), for comparison
``clear_function_caches`` the caches that hold function references
                        (warmd.openhcs.caches)
======================  =========================================================

The warmd side is ``driver.py``; only ``clear_function_caches`` is warmd-openhcs's own.
"""
from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

OPENHCS_VERSION = "0.8.6"

log = logging.getLogger(__name__)


def check_version() -> str:
    """The installed OpenHCS version; a warning when it is not the one this was written for."""
    import openhcs
    if openhcs.__version__ != OPENHCS_VERSION:
        warnings.warn(f"openhcs_glue was written against openhcs {OPENHCS_VERSION}; "
                      f"openhcs {openhcs.__version__} is installed: the internals it uses may "
                      "have moved", RuntimeWarning, stacklevel=2)
    return openhcs.__version__


# --- warm-up ---------------------------------------------------------------------------

def prepare_process(cpu_only: bool = False) -> dict[str, float]:
    """Import the orchestrator and build the function registry, once per process: what
    OpenHCS's execution server does before its first request (runtime/
    zmq_execution_server.py:484-505). ``cpu_only`` sets ``OPENHCS_CPU_ONLY`` (unless
    already set). Returns the seconds each step took (next to nothing once done)."""
    if cpu_only:
        os.environ.setdefault("OPENHCS_CPU_ONLY", "true")
    steps: dict[str, float] = {}
    start = time.perf_counter()
    import openhcs.core.orchestrator.orchestrator  # noqa: F401  (about 2 s of imports)
    import openhcs.core.orchestrator.compiled_plate_execution  # noqa: F401
    import openhcs.core.orchestrator.worker_execution  # noqa: F401
    steps["import"] = time.perf_counter() - start
    start = time.perf_counter()
    from openhcs.processing.func_registry import initialize_registry
    initialize_registry()  # 6 s with its disk cache, 30 s without (~/.local/share/openhcs/cache)
    steps["registry"] = time.perf_counter() - start
    check_version()
    return steps


def registry_ready() -> bool:
    from openhcs.processing.func_registry import is_registry_initialized
    return is_registry_initialized()


# --- caches that hold function references ----------------------------------------------

def clear_function_caches(names: Iterable[str] = ()) -> dict[str, int]:
    """Drop what OpenHCS caches per process about callables (and, of its registry's resolved
    references, those of the modules ``names``), so that a warm process neither runs nor
    keeps an old version of a user module's functions: warmd-openhcs's own
    (``warmd.openhcs.caches``, which lists the caches with their file:line). Returns how
    many entries each cache held."""
    from warmd.openhcs.caches import clear_function_caches as clear
    return clear(names)


# --- compile ---------------------------------------------------------------------------

def global_config(**values: Any):
    """A ``GlobalPipelineConfig`` (core/config.py:155), made the process's global config
    context as OpenHCS's own runners do (objectstate ``ensure_global_config_context``)."""
    from objectstate.lazy_factory import ensure_global_config_context
    from openhcs.core.config import GlobalPipelineConfig
    config = GlobalPipelineConfig(**values)
    ensure_global_config_context(GlobalPipelineConfig, config)
    return config


class _DiscardQueue:
    """A progress queue that drops events (OpenHCS insists on one being set)."""

    def put(self, event: dict) -> None:
        pass


@dataclass(frozen=True)
class WellTask:
    """One well's share of a compiled plate, as one pool process of OpenHCS would get it:
    picklable, and enough to run the well anywhere OpenHCS is importable."""
    well: str
    pipeline: list                  # FunctionStep definitions, normalised for transport
    lane_contexts: list             # [(well, [(context_key, frozen ProcessingContext)])]
    lane_context: Any               # WorkerLaneExecutionContext
    observation_mode: Any           # RuntimeObservationMode
    step_names: tuple[str, ...] = ()


@dataclass
class CompiledPlate:
    """A plate compiled in this process; ``wells()`` are the tasks to fan out and
    ``finish(results)`` is the plate-level end, which must run in this process too."""
    orchestrator: Any
    bundle: Any
    execution_id: str
    plate_id: str
    step_names: tuple[str, ...]
    compile_seconds: float
    _tasks: list[WellTask] | None = field(default=None, repr=False)

    @property
    def well_ids(self) -> tuple[str, ...]:
        return tuple(self.bundle.axis_ids)

    @property
    def observation_mode(self):
        from openhcs.core.orchestrator.execution_result import RuntimeObservationMode
        return RuntimeObservationMode.from_parent_requirement(
            self.bundle.requires_parent_runtime_observation)

    def wells(self) -> list[WellTask]:
        """One task per well (OpenHCS would put several wells in each of ``num_workers``
        lanes; warmd's group is the scheduler here, so each well is a lane of its own)."""
        if self._tasks is None:
            from openhcs.core.debug import NoOpDebugExecutionPolicy
            from openhcs.core.function_step_transport import FunctionStepTransportAuthority
            from openhcs.core.orchestrator.worker_lanes import (CompiledContextLanePlanner,
                                                                WorkerLaneExecutionPlan)
            contexts = FunctionStepTransportAuthority.normalize_contexts(
                dict(self.bundle.transport_contexts))
            assignments = {f"well_{w}": [w] for w in self.well_ids}
            plan = CompiledContextLanePlanner(
                actual_max_workers=len(assignments), fork_inherited_execution=False,
            ).plan(contexts, assignments)
            lanes = WorkerLaneExecutionPlan(
                execution_id=self.execution_id, plate_id=self.plate_id,
                debug_execution_policy=NoOpDebugExecutionPolicy(), assignments=plan,
                runtime_observation_mode=self.observation_mode)
            pipeline = FunctionStepTransportAuthority.normalize_pipeline(
                list(self.bundle.pipeline_definition))
            self._tasks = [WellTask(well=slot.removeprefix("well_"), pipeline=pipeline,
                                    lane_contexts=lane, lane_context=lanes.lane_context(slot),
                                    observation_mode=self.observation_mode,
                                    step_names=self.step_names)
                           for slot, lane in plan.active_lane_items()]
        return self._tasks

    def finish(self, results: dict[str, Any], progress_queue: Any = None) -> dict[str, Any]:
        """The plate-level end of ``execute_compiled_plate_request``: the wells' runtime
        records merged into this process's contexts, plate-scoped steps, analysis
        consolidation, the output plate's metadata. Raises if a well failed."""
        from openhcs.core.orchestrator.analysis_consolidation import consolidate_analysis_outputs
        from openhcs.core.orchestrator.compiled_plate_execution import execute_plate_scoped_steps
        from openhcs.core.progress import ProgressExecutionContext, set_progress_queue
        from openhcs.core.steps.function_outputs import OpenHCSMetadataWriter
        start = time.perf_counter()
        failed = {w: r.error_message for w, r in results.items() if not r.is_success()}
        if failed:
            raise RuntimeError(f"OpenHCS wells failed: {failed}")
        contexts = dict(self.bundle.runtime_contexts)
        if self.observation_mode.collects_records:
            for result in results.values():
                result.runtime_observation.merge_into(contexts)
        queue = progress_queue or _DiscardQueue()
        set_progress_queue(queue)
        try:
            identity = ProgressExecutionContext(execution_id=self.execution_id,
                                                plate_id=self.plate_id)
            observation = execute_plate_scoped_steps(contexts, progress_queue=queue,
                                                     progress_context=identity)
            consolidate_analysis_outputs(contexts, results, plate_runtime_observation=observation)
            OpenHCSMetadataWriter.finalize_completed_plate(contexts)
        finally:
            set_progress_queue(None)
        return {"wells": {w: "success" for w in results}, "finish_seconds": time.perf_counter() - start}


def compile_plate(plate_dir: str | os.PathLike, steps: Sequence[Any], *,
                  wells: Sequence[str] | None = None, pipeline_config: Any = None,
                  config: dict[str, Any] | None = None,
                  progress_queue: Any = None) -> CompiledPlate:
    """Initialise an orchestrator on ``plate_dir`` and compile ``steps`` (fresh
    ``FunctionStep`` objects: compiling consumes them) for ``wells`` (all by default).
    ``config`` holds ``GlobalPipelineConfig`` fields."""
    from openhcs.constants import MULTIPROCESSING_AXIS
    from openhcs.core.config import PipelineConfig
    from openhcs.core.orchestrator.orchestrator import PipelineOrchestrator
    from openhcs.core.progress import set_progress_queue
    from polystore.base import reset_memory_backend

    start = time.perf_counter()
    reset_memory_backend()
    global_config(**(config or {}))
    plate = Path(plate_dir).resolve()
    orchestrator = PipelineOrchestrator(plate, pipeline_config=pipeline_config or PipelineConfig())
    orchestrator.initialize()
    selected = list(wells) if wells else list(orchestrator.get_component_keys(MULTIPROCESSING_AXIS))
    set_progress_queue(progress_queue or _DiscardQueue())
    try:
        bundle = orchestrator.compile_pipelines(pipeline_definition=list(steps), well_filter=selected)
    finally:
        set_progress_queue(None)
    execution_id = f"warmd::{plate.name}::{time.time_ns()}"
    return CompiledPlate(orchestrator=orchestrator, bundle=bundle, execution_id=execution_id,
                         plate_id=str(plate), step_names=tuple(s.name for s in steps),
                         compile_seconds=time.perf_counter() - start)


# --- run -------------------------------------------------------------------------------

def run_well(task: WellTask, progress_queue: Any = None) -> dict[str, Any]:
    """Run one well in this process, as a pool process of OpenHCS would: one native
    thread, the well's steps in order, its memory backend released after it. Returns
    ``{well: ExecutionResult}`` (picklable: the pool sends it back the same way)."""
    from openhcs.core.native_threading import configure_native_thread_count
    from openhcs.core.orchestrator.worker_execution import execute_worker_lane
    from openhcs.core.progress import set_progress_queue
    configure_native_thread_count(1)
    set_progress_queue(progress_queue or _DiscardQueue())
    try:
        return execute_worker_lane(task.pipeline, task.lane_contexts, task.lane_context,
                                   task.observation_mode, None, True)
    finally:
        set_progress_queue(None)


def run_plate_inline(compiled: CompiledPlate, progress_queue: Any = None,
                     max_workers: int | None = 1) -> dict[str, Any]:
    """The whole plate through OpenHCS's public ``execute_compiled_plate``: with one
    worker, every well in this process (no pool)."""
    start = time.perf_counter()
    results = compiled.orchestrator.execute_compiled_plate(
        execution_bundle=compiled.bundle, max_workers=max_workers,
        progress_queue=progress_queue or _DiscardQueue(),
        progress_context={"execution_id": compiled.execution_id, "plate_id": compiled.plate_id})
    failed = {w: r.error_message for w, r in results.items() if not r.is_success()}
    if failed:
        raise RuntimeError(f"OpenHCS wells failed: {failed}")
    return {"wells": {w: "success" for w in results}, "run_seconds": time.perf_counter() - start}


def output_dir(plate_dir: str | os.PathLike) -> Path:
    """Where OpenHCS writes a plate's outputs with the default path planning
    (``<plate>_openhcs`` beside the plate)."""
    plate = Path(plate_dir).resolve()
    from openhcs.core.config import PathPlanningConfig
    return plate.parent / f"{plate.name}{PathPlanningConfig().output_dir_suffix}"


def make_progress_queue(callback: Callable[[dict], None]):
    """An object OpenHCS accepts as its progress queue (it only calls ``put(event)``,
    core/progress/__init__.py:187) that hands each event dict to ``callback``."""
    class _CallbackQueue:
        def put(self, event: dict) -> None:
            callback(event)
    return _CallbackQueue()
