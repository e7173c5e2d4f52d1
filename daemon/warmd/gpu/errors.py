"""Whether a job failed with an error from CUDA itself, after which its context may be poisoned.

A sticky CUDA error (an illegal address, a launch failure) leaves the
process's context unusable, and even a non-sticky one can leave a library
handle (cuBLAS, cuFFT) in a bad state, so the worker that saw one is replaced.

The worker only has the job's error as data (its type's qualified name and its
formatted traceback), so the check reads those: the type itself, then every
exception named in the traceback's chain ("raise PipelineError(...) from
cuda_error" still counts). Names are resolved to classes through
``sys.modules`` where possible, so subclasses count too; nothing is imported
for the check (importing cupy.cuda.cufft would load cuFFT).
"""
from __future__ import annotations

import re
import sys
from typing import Any

# The error classes cupy raises for a failed CUDA runtime/driver or library call.
CUDA_ERROR_NAMES = frozenset({"CUDARuntimeError", "CUDADriverError", "CUBLASError", "CuFFTError",
                              "CuFftError", "CUSOLVERError", "CuSparseError", "CURANDError"})
_PACKAGES = frozenset({"cupy", "cupy_backends", "cupyx"})

# An exception line of a formatted traceback: "pkg.module.Class: message" or "pkg.module.Class".
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::\s|:$|$)", re.MULTILINE)


def cuda_error_in(error: dict[str, Any] | None) -> str | None:
    """The name of the CUDA error a job's error is, or was caused by; None if there is none."""
    if not error:
        return None
    names = [str(error.get("type") or "")]
    names += _EXCEPTION_LINE.findall(str(error.get("traceback") or ""))
    for name in names:
        if name and is_cuda_error(name):
            return name
    return None


def is_cuda_error(qualified_name: str) -> bool:
    """Whether ``module.Class`` names one of cupy's CUDA error classes or a subclass of one."""
    cls = _resolve(qualified_name)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        return any(_is_cupy_cuda_error(c.__module__, c.__name__) for c in cls.__mro__)
    module, _, name = qualified_name.rpartition(".")
    return _is_cupy_cuda_error(module, name)


def _is_cupy_cuda_error(module: str, name: str) -> bool:
    return name in CUDA_ERROR_NAMES and module.split(".")[0] in _PACKAGES


def _resolve(qualified_name: str) -> Any:
    """The object ``a.b.C`` names, if its module is already imported; else None."""
    parts = qualified_name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is None:
            continue
        target: Any = module
        for attr in parts[cut:]:
            target = getattr(target, attr, None)
            if target is None:
                return None
        return target
    return None
