"""Run an OpenHCS plate through warmd: compile in a warm worker, fan the wells out over
the warm workers as one job group, finish the plate where it was compiled.

    with warmd.Client() as client:
        run = client.submit_call(driver.run_plate, (plate_dir,), log_level="info")
        for event in run.events():       # Progress (the run's own), ChildProgress (each well)
            ...
        summary = run.result()
        run.cancel()                     # cancels the run and every well job, in any state

``run_plate`` is itself a job. Inside it, ``warmd.Client()`` reaches the same daemon
and ``client.group(...)`` makes a group that is this job's child: one job per well, on
whichever warm workers are free (a waiting parent does not count against
``workers.count``; see warmd.toml(5), ``max_extra``). Each well reports
``warmd.progress(done, total, message, well=..., step=..., phase=...)`` per step; its
``logging`` records go to its own job stream and, with ``forward_logs``, into this
job's stream too, prefixed with the well.

OpenHCS internals are in ``openhcs_glue`` (warm, by reference); this module and
``pipeline`` are the user's code (sent by value with every run).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import warmd

import openhcs_glue

log = logging.getLogger(__name__)

# The OpenHCS progress phases reported as warmd progress (core/progress/types.py:19).
_REPORTED = {"axis_started", "step_started", "step_completed", "axis_completed", "axis_error"}


class WarmdProgress:
    """OpenHCS's progress queue (it only ever calls ``put(event_dict)``) turned into
    ``warmd.progress`` reports with structured fields: ``well``, ``step`` and ``phase``."""

    def __init__(self, steps: Sequence[str]) -> None:
        self.steps = list(steps)

    def put(self, event: dict) -> None:
        phase = event.get("phase")
        if phase not in _REPORTED:
            return
        well = event.get("axis_id") or None
        step = event.get("step_name")
        total = event.get("total") or len(self.steps) or None
        warmd.progress(event.get("completed", 0), total, f"{well} {step}: {phase}",
                       well=well, step=step, phase=phase)


def run_well(task: openhcs_glue.WellTask) -> dict[str, Any]:
    """One well, as its own warmd job (named for its well, at the run's log level):
    OpenHCS's per-lane execution on a warm worker."""
    warmd.progress(0, len(task.step_names), f"{task.well}: started", well=task.well, phase="started")
    return openhcs_glue.run_well(task, WarmdProgress(task.step_names))


def _forward_logs(wells: Sequence[tuple[str, Any]]) -> None:
    """Copy the well jobs' logging records into this job's log, prefixed with the well:
    one thread, the wells in order (a later well's records wait for the earlier wells
    to end; none is lost, each job's events are kept until read)."""
    for well, future in wells:
        for event in future.events():
            if isinstance(event, warmd.Log):
                logging.getLogger(event.name).log(event.level, "[%s] %s", well, event.message)


def run_plate(plate_dir: str, *, wells: Sequence[str] | None = None, fan_out: bool = True,
              log_level: str | None = None, forward_logs: bool = True,
              config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compile ``plate_dir`` with ``pipeline.make_pipeline()``, run its wells (each as a
    job of one group when ``fan_out``; all here, through OpenHCS's own
    ``execute_compiled_plate``, when not), then the plate-level finish. ``log_level``
    sets this job's and the wells' root logger level (default: this job's, which is
    ``log_level=`` of its submit, else the daemon's ``workers.job_log_level``)."""
    import pipeline  # the user's pipeline module: by value, fresh steps every run

    root = logging.getLogger()
    if log_level:
        root.setLevel(log_level.upper())
    level = logging.getLevelName(root.getEffectiveLevel())
    openhcs_glue.prepare_process(cpu_only=warmd.device() is None)  # no-op once warm
    timings: dict[str, float] = {}

    start = time.perf_counter()
    warmd.progress(0, 3, f"compiling {Path(plate_dir).name}", phase="compile")
    compiled = openhcs_glue.compile_plate(plate_dir, pipeline.make_pipeline(), wells=wells,
                                          pipeline_config=pipeline.pipeline_config(), config=config)
    timings["compile"] = time.perf_counter() - start
    steps = compiled.step_names
    progress = WarmdProgress(steps)

    start = time.perf_counter()
    if not fan_out:
        warmd.progress(1, 3, f"running {len(compiled.well_ids)} wells here", phase="run")
        openhcs_glue.run_plate_inline(compiled, progress_queue=progress)
        timings["wells"] = time.perf_counter() - start
        summary = {"wells": {w: "success" for w in compiled.well_ids}}
    else:
        tasks = compiled.wells()
        warmd.progress(1, 3, f"fanning out {len(tasks)} wells", phase="run", wells=len(tasks))
        results: dict[str, Any] = {}
        forwarder = None
        with warmd.Client() as client:
            # The group is this job's child: cancelling this job cancels every well.
            with client.group(name=f"openhcs {Path(plate_dir).name}") as group:
                futures = [group.submit_call(run_well, (task,), name=f"well {task.well}",
                                             log_level=level.lower()) for task in tasks]
                if forward_logs:
                    forwarder = threading.Thread(target=_forward_logs, daemon=True,
                                                 args=([(t.well, f) for t, f in zip(tasks, futures)],))
                    forwarder.start()
                for future in futures:
                    results.update(future.result())  # raises the first well's error, if any
            if forwarder is not None:
                forwarder.join(timeout=5)
        timings["wells"] = time.perf_counter() - start
        start = time.perf_counter()
        warmd.progress(2, 3, "plate-level finish", phase="finish")
        summary = compiled.finish(results, progress)
        timings["finish"] = time.perf_counter() - start
    warmd.progress(3, 3, "done", phase="done")
    return {**summary, "plate": str(compiled.plate_id), "steps": list(steps),
            "output_dir": str(openhcs_glue.output_dir(plate_dir)), "fan_out": fan_out,
            "timings": timings, "worker_pid": os.getpid()}
