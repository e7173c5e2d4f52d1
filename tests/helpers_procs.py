"""Checks on processes, for the tests (not job code)."""
from __future__ import annotations

from collections.abc import Iterable

import psutil


def gone(pids: Iterable[int]) -> bool:
    """Whether every one of ``pids`` has exited (a zombie waiting to be reaped counts)."""
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True
