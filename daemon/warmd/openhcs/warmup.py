"""The warm-up hook for warmd's workers: ``hooks = ["warmd.openhcs.warmup:warm"]``.

Once per worker, before its first job: import what a worker lane runs and build
OpenHCS's function registry (about 6 s from OpenHCS's disk cache on two CPUs,
30 s without it), and have warmd call ``code_changed`` before a job whose user
modules were edited, so a warm worker never runs an old step function.
"""
from __future__ import annotations

import logging
import os
import time

import warmd

from . import caches, compat

log = logging.getLogger(__name__)


def warm() -> dict[str, float]:
    """Import OpenHCS's lane runner and build its function registry in this worker. A
    worker pinned to no GPU runs OpenHCS in CPU mode (``OPENHCS_CPU_ONLY``, unless set).
    Returns the seconds each step took (next to nothing when already done)."""
    if warmd.device() is None:
        os.environ.setdefault("OPENHCS_CPU_ONLY", "true")
    compat.openhcs_version()
    steps: dict[str, float] = {}
    start = time.perf_counter()
    import openhcs.core.orchestrator.worker_execution  # noqa: F401  (seconds of imports)
    steps["import"] = time.perf_counter() - start
    start = time.perf_counter()
    from openhcs.processing.func_registry import initialize_registry, is_registry_initialized
    if not is_registry_initialized():
        initialize_registry()
    steps["registry"] = time.perf_counter() - start
    warmd.on_code_change(code_changed)
    return steps


def code_changed(names: frozenset[str]) -> None:
    """warmd calls this before a job whose user modules changed since this worker's last."""
    held = caches.clear_function_caches(names)
    log.info("modules %s changed: dropped OpenHCS's cached functions %s", sorted(names), held)
