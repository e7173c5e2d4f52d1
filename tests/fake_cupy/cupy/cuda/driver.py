"""Fake cupy.cuda.driver: the error class and whether a context is current."""
from __future__ import annotations

from . import _state


class CUDADriverError(RuntimeError):
    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"CUDA_ERROR_{status}")


def ctxGetCurrent() -> int:
    return 0x1000 if _state.STATE.context else 0
