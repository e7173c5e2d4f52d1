"""Jobs for the real-GPU tests. They run in workers (this module travels by value), so
importing it must stay cheap and side-effect free: no probe, no cupy at import time."""
from __future__ import annotations

import os

import warmd

def pinned_device():
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(0)
    uuid = props.get("uuid", b"")
    return {"device": warmd.device(), "count": cupy.cuda.runtime.getDeviceCount(),
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "xp": warmd.xp().__name__,
            "uuid": uuid.hex() if isinstance(uuid, (bytes, bytearray)) else str(uuid)}


def first_kernel():
    """Whether a CUDA context was current when the job began, and its time to a first kernel."""
    import time

    import cupy
    start = time.perf_counter()
    had_context = cupy.cuda.driver.ctxGetCurrent() != 0
    value = float((cupy.arange(1 << 20, dtype=cupy.float32) * 2).sum())  # float(): waits for it
    return {"had_context": had_context, "first_kernel_seconds": time.perf_counter() - start,
            "value": value, "pid": os.getpid()}


def allocate(nbytes):
    import cupy
    block = cupy.ones(nbytes, dtype=cupy.uint8)
    checksum = int(block[:1024].sum())
    del block
    return checksum


def illegal_address():
    """A kernel that writes through a null pointer: a sticky error that poisons the context."""
    import cupy
    kernel = cupy.RawKernel(r'extern "C" __global__ void poke(int* p) { p[threadIdx.x] = 1; }', "poke")
    kernel((1,), (32,), (cupy.uint64(0),))
    cupy.cuda.Device().synchronize()


def invalid_device():
    """A CUDA runtime error that is not sticky: the worker is still recycled, to be safe."""
    import cupy
    cupy.cuda.runtime.setDevice(cupy.cuda.runtime.getDeviceCount() + 7)


def device_result(n):
    """A result held in device memory."""
    import cupy
    return cupy.arange(n, dtype=cupy.float32) * 2
