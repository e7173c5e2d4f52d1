"""warmd warm-up hook for OpenHCS: ``[warmup] hooks = ["hook:warm"]`` in warmd.toml.

Once per worker, before its first job: import OpenHCS's orchestrator and build its
function registry (about 2 s of imports and 5-6 s of registry on a 2-core machine
with OpenHCS's disk cache, 30 s on the very first run without it), and register a
``warmd.on_code_change`` callback that drops what OpenHCS caches about functions,
so that an edited pipeline module is never run stale, nor its old functions kept.

``openhcs_glue`` is imported here, so it is warm: it is listed in ``[warmup]
import`` too, which makes clients send it by reference (restart the workers after
editing it). ``driver.py`` and ``pipeline.py`` are not: clients send them by value,
so an edit takes effect on the next run.
"""
from __future__ import annotations

import logging
import os
import time

import warmd

import openhcs_glue

log = logging.getLogger(__name__)
warmup_seconds: dict[str, float] = {}
code_changes: list[tuple[frozenset[str], dict[str, int]]] = []  # what each callback cleared


def warm() -> None:
    """Import OpenHCS and build its function registry in this worker."""
    warmup_seconds.update(openhcs_glue.prepare_process(cpu_only=warmd.device() is None))
    register = getattr(warmd, "on_code_change", None)  # newer warmd; older ones skip this
    if register is not None:
        register(code_changed)


def warm_with_plate() -> None:
    """``warm`` and then one run of the example pipeline on a one-well, one-site plate, so
    that the compiler's and the steps' own first-use costs are paid here, not by the
    first real run. (Costs about a second more of warm-up.)"""
    import shutil
    import sys
    import tempfile
    warm()
    start = time.perf_counter()
    import pipeline  # the example's pipeline module, on the daemon's PYTHONPATH
    root = tempfile.mkdtemp(prefix="openhcs-warm-")
    try:
        plate = pipeline.make_plate(os.path.join(root, "plate"), wells=1, grid=(1, 1), tile=64)
        compiled = openhcs_glue.compile_plate(plate, pipeline.make_pipeline(),
                                              pipeline_config=pipeline.pipeline_config())
        openhcs_glue.run_plate_inline(compiled)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        # A module still imported at the end of warm-up counts as warm and is never replaced:
        # let jobs load the client's pipeline.py instead (it travels by value).
        sys.modules.pop("pipeline", None)
    warmup_seconds["plate"] = time.perf_counter() - start


def code_changed(names: frozenset[str]) -> None:
    """Called by warmd before a job whose user modules changed since this worker's last job."""
    held = openhcs_glue.clear_function_caches(names)
    code_changes.append((frozenset(names), held))
    del code_changes[:-10]
    log.info("modules %s changed: cleared OpenHCS function caches %s", sorted(names), held)
