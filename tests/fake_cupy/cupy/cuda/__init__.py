"""Fake cupy.cuda: devices, the memory pools and allocator, and CUDA's error types."""
from __future__ import annotations

from . import _state, driver, memory, runtime
from .memory import (MemoryPointer, MemoryPool, OutOfMemoryError, PinnedMemoryPool, alloc,
                     get_allocator, set_allocator)


class Device:
    def __init__(self, device: int | None = None) -> None:
        self.id = _state.STATE.current_device if device is None else int(device)
        if not 0 <= self.id < len(runtime.physical_devices()):
            raise runtime.CUDARuntimeError(101)

    def use(self) -> None:
        _state.STATE.current_device = self.id

    def synchronize(self) -> None:
        runtime.check()

    def __enter__(self) -> "Device":
        self.use()
        return self

    def __exit__(self, *exc) -> None:
        pass


__all__ = ["Device", "MemoryPointer", "MemoryPool", "OutOfMemoryError", "PinnedMemoryPool", "alloc",
           "driver", "get_allocator", "memory", "runtime", "set_allocator"]
