"""Processes that belong to the worker's interpreter rather than to a job.

After each job the worker kills whatever the job left running. Some processes a
job starts lazily are not the job's, though: multiprocessing's resource tracker
and forkserver (and loky's own resource tracker) serve every later job of the
interpreter, which keeps their pids in module state and expects them alive. Killed,
the next job relaunches them with a warning ("resource_tracker: process died
unexpectedly") and loses track of resources the last one registered. So the sweep
spares them; what they forked for a job is still the job's and still dies.
"""
from __future__ import annotations

import sys

import psutil

# (module, attribute holding the helper's singleton, attribute of it holding the pid)
_HELPERS = (
    ("multiprocessing.resource_tracker", "_resource_tracker", "_pid"),
    ("multiprocessing.forkserver", "_forkserver", "_forkserver_pid"),
    ("joblib.externals.loky.backend.resource_tracker", "_resource_tracker", "_pid"),
    ("loky.backend.resource_tracker", "_resource_tracker", "_pid"),
)


def interpreter_helpers() -> frozenset[tuple[int, float]]:
    """(pid, create time) of the helper processes this interpreter has started and uses."""
    found = set()
    for module_name, singleton, pid_attr in _HELPERS:
        module = sys.modules.get(module_name)
        pid = getattr(getattr(module, singleton, None), pid_attr, None)
        if not isinstance(pid, int):
            continue
        try:
            proc = psutil.Process(pid)
            if proc.ppid() == psutil.Process().pid:  # ours, not a pid recycled since
                found.add((pid, proc.create_time()))
        except psutil.Error:
            continue
    return frozenset(found)
