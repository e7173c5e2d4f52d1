"""A stand-in for cupy in CPU-only test runs. It is not cupy.

It models what warmd's GPU code relies on -- device count and properties
under CUDA_VISIBLE_DEVICES, device selection and synchronisation, the default
memory pool's accounting (used / total / limit / free_all_blocks), the
allocator switch, the pinned pool and CUDA's error types -- so the daemon's
GPU paths (pinning, warm-up steps, per-job pool figures, memory policies,
recycling after a CUDA error) run end to end without a GPU. Test knobs
(environment): FAKE_CUPY_DEVICES, FAKE_CUPY_MEMORY (see cuda/runtime.py) and
FAKE_CUPY_BROKEN (kernels compute wrong results). Arrays hold their
data in numpy and take their size from the fake pool through the current
allocator, as cupy's do. Tests put its directory first on PYTHONPATH.
"""
from __future__ import annotations

import os as _os

import numpy as _np

from . import cuda

__version__ = "0.0+fake"

int32, int64, float32, float64, uint8, bool_ = (_np.int32, _np.int64, _np.float32, _np.float64,
                                               _np.uint8, _np.bool_)


def get_default_memory_pool() -> cuda.MemoryPool:
    return cuda.memory.default_pool()


def get_default_pinned_memory_pool() -> cuda.PinnedMemoryPool:
    return cuda.memory.default_pinned_pool()


class ndarray:
    """Device array stand-in: numpy data plus a block from the fake pool."""

    def __init__(self, host: _np.ndarray, data: "cuda.MemoryPointer | None" = None) -> None:
        self._host = host
        self.data = cuda.alloc(host.nbytes) if data is None else data

    def __getitem__(self, key) -> "ndarray":
        return ndarray(self._host[key], self.data)  # a view: shares its base's block

    shape = property(lambda self: self._host.shape)
    dtype = property(lambda self: self._host.dtype)
    nbytes = property(lambda self: self._host.nbytes)
    size = property(lambda self: self._host.size)

    def get(self) -> _np.ndarray:
        return self._host.copy()

    def sum(self, *args, **kwargs) -> "ndarray":
        total = self._host.sum(*args, **kwargs)
        if _os.environ.get("FAKE_CUPY_BROKEN"):  # test knob: a device that computes wrong results
            total = total + 1
        return ndarray(_np.asarray(total))

    def __int__(self) -> int:
        return int(self._host)

    def __float__(self) -> float:
        return float(self._host)

    def _op(self, other, fn) -> "ndarray":
        other = other._host if isinstance(other, ndarray) else other
        return ndarray(_np.asarray(fn(self._host, other)))

    def __add__(self, other):
        return self._op(other, _np.add)

    def __mul__(self, other):
        return self._op(other, _np.multiply)

    def __sub__(self, other):
        return self._op(other, _np.subtract)

    __radd__, __rmul__ = __add__, __mul__


def empty(shape, dtype=float64) -> ndarray:
    return ndarray(_np.empty(shape, dtype))


def zeros(shape, dtype=float64) -> ndarray:
    return ndarray(_np.zeros(shape, dtype))


def ones(shape, dtype=float64) -> ndarray:
    return ndarray(_np.ones(shape, dtype))


def arange(*args, dtype=None) -> ndarray:
    return ndarray(_np.arange(*args, dtype=dtype))


def asarray(a, dtype=None) -> ndarray:
    return a if isinstance(a, ndarray) and dtype is None else ndarray(_np.asarray(a, dtype))


def abs(a) -> ndarray:  # noqa: A001 - cupy's name
    return ndarray(_np.abs(a._host))


def asnumpy(a) -> _np.ndarray:
    return a.get() if isinstance(a, ndarray) else _np.asarray(a)
