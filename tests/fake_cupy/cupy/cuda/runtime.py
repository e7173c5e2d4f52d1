"""Fake cupy.cuda.runtime: devices from FAKE_CUPY_DEVICES, honouring CUDA_VISIBLE_DEVICES.

Test knobs (environment): FAKE_CUPY_DEVICES (physical devices, default 1),
FAKE_CUPY_MEMORY (bytes per device, default 16 GiB).
"""
from __future__ import annotations

import os

from . import _state

_MESSAGES = {100: ("cudaErrorNoDevice", "no CUDA-capable device is detected"),
             700: ("cudaErrorIllegalAddress", "an illegal memory access was encountered"),
             2: ("cudaErrorMemoryAllocation", "out of memory")}


class CUDARuntimeError(RuntimeError):
    def __init__(self, status: int) -> None:
        self.status = status
        name, text = _MESSAGES.get(status, ("cudaErrorUnknown", "unknown error"))
        super().__init__(f"{name}: {text}")


def physical_devices() -> list[int]:
    """What CUDA would show: the listed entries up to the first invalid one."""
    count = int(os.environ.get("FAKE_CUPY_DEVICES", "1"))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(count))
    out = []
    for item in visible.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) >= count:
            break
        out.append(int(item))
    return out


def device_memory() -> int:
    return int(os.environ.get("FAKE_CUPY_MEMORY", str(16 * 1024**3)))


def check() -> None:
    """Every call on a poisoned context fails with the sticky error, as CUDA's do."""
    if _state.STATE.poisoned:
        raise CUDARuntimeError(700)


def getDeviceCount() -> int:
    n = len(physical_devices())
    if n == 0:
        raise CUDARuntimeError(100)
    return n


def getDeviceProperties(index: int) -> dict:
    phys = physical_devices()[index]
    return {"name": f"Fake GPU {phys}".encode(), "totalGlobalMem": device_memory(),
            "uuid": bytes([phys]) * 16, "pciBusID": phys}


def getDevice() -> int:
    return _state.STATE.current_device


def memGetInfo() -> tuple[int, int]:
    check()
    _state.STATE.context = True
    from . import memory
    return device_memory() - memory.default_pool().total_bytes(), device_memory()


def runtimeGetVersion() -> int:
    return 12040


def deviceSynchronize() -> None:
    check()


def _fake_poison() -> None:
    """Test hook: behave as after an illegal memory access (a sticky error)."""
    _state.STATE.poisoned = True
