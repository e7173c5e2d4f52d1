"""The fake device's process-wide state (real cupy keeps the same per process: one context)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _DeviceState:
    current_device: int = 0
    context: bool = False     # created by the first call that needs the device
    poisoned: bool = False    # a sticky error: every later call fails


STATE = _DeviceState()
