"""Helpers for tests and benchmarks: ``LocalDaemon``, a daemon on a private socket that
is a child of the calling process (see ``warmd.localdaemon``)."""
from __future__ import annotations

from .localdaemon import LocalDaemon

__all__ = ["LocalDaemon"]
