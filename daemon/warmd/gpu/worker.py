"""GPU warm-up and memory hygiene between jobs, inside a worker pinned to one device.

Imported only by a worker the daemon started for a device: CUDA_VISIBLE_DEVICES
shows that worker exactly one GPU, which is therefore device 0 here, whatever
the daemon calls it (``device``).

Warm-up, each step timed for ``warmctl status``: import cupy, create the
device's context, cap the memory pool (workers.gpu_memory_limit), run a first
kernel. The configured imports and hooks run afterwards, on this
device and under the cap, so hooks can compile the pipeline's kernels.

After each job, before its ``done`` frame: wait for the device (a poisoned
context reports itself here), record the job's pool high-water mark (see
``memory.PeakTracker``), apply workers.gpu_memory_policy ("keep" the cached
blocks, "free" them, or "recycle" the worker) and ask for a recycle when the
pool passes workers.gpu_recycle_bytes or the job hit a CUDA error. The result
is the ``gpu`` dict of the done frame; a ``recycle`` reason in it makes the
daemon replace the worker (Placement.recycle_reason).
"""
from __future__ import annotations

import importlib
import os
from typing import Any, Callable

from ..worker.warmup import timed
from .errors import cuda_error_in
from .memory import PeakTracker

# The first kernel computes sum(0..255): a device that returns anything else is broken.
_KERNEL_N = 256
_KERNEL_SUM = _KERNEL_N * (_KERNEL_N - 1) // 2


class GpuWorker:
    """The cupy side of one worker: warm-up steps, then ``job_started``/``job_finished`` per job."""

    def __init__(self, device: int, options: dict[str, Any],
                 on_step: Callable[[str], None] = lambda label: None) -> None:
        self.device = device
        self.on_step = on_step
        self.limit = options.get("gpu_memory_limit") or 0
        self.policy = str(options.get("gpu_memory_policy") or "keep")
        self.recycle_bytes = int(options.get("gpu_recycle_bytes") or 0)
        self.steps: list[dict[str, Any]] = []
        self.cupy: Any = None
        self.pool: Any = None
        self.pinned_pool: Any = None
        self.tracker: PeakTracker | None = None
        self.properties: dict[str, Any] = {}
        self.memory = 0
        self.used_before = 0
        self.pool_before = 0
        self.start_error: str | None = None

    # ---------------------------------------------------------------- warm-up

    def warm_up(self) -> list[dict[str, Any]]:
        """Run the GPU steps; raise WarmupFailed naming the one that broke."""
        self.cupy = self._step("gpu import cupy", lambda: importlib.import_module("cupy"))
        self._step("gpu create context", self._create_context)
        self._step("gpu memory limit", self._set_limit)
        self._step("gpu first kernel", self._first_kernel)
        self.tracker = PeakTracker(self.cupy.cuda, self.pool)
        self.tracker.start()
        return self.steps

    def _create_context(self) -> None:
        cuda = self.cupy.cuda
        count = cuda.runtime.getDeviceCount()
        if count < 1:
            raise RuntimeError(f"no GPU is visible to this worker (CUDA_VISIBLE_DEVICES="
                               f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
        # Since CUDA 12 selecting the device creates its primary context (on older
        # runtimes memGetInfo, the first call that needs the device, does).
        cuda.Device(0).use()
        self.properties = cuda.runtime.getDeviceProperties(0)
        free, total = cuda.runtime.memGetInfo()
        self.memory = int(total)

    def _set_limit(self) -> None:
        self.pool = self.cupy.get_default_memory_pool()
        self.pinned_pool = self.cupy.get_default_pinned_memory_pool()
        if isinstance(self.limit, float):
            self.pool.set_limit(fraction=self.limit)
        elif self.limit:
            self.pool.set_limit(size=int(self.limit))

    def _first_kernel(self) -> None:
        cupy = self.cupy
        values = cupy.arange(_KERNEL_N, dtype=cupy.int32)
        got = int(values.sum())  # int() copies the result back: the kernel ran to completion
        del values
        cupy.cuda.Device(0).synchronize()
        if got != _KERNEL_SUM:
            raise RuntimeError(f"the device computed {got} for a sum that is {_KERNEL_SUM}")

    def _step(self, label: str, fn: Callable[[], Any]) -> Any:
        hint = " (install the GPU extra: pip install 'warmd[gpu]')" if label == "gpu import cupy" else ""
        value, step = timed(label, fn, self.on_step, hint)
        self.steps.append(step)
        return value

    def ready_info(self) -> dict[str, Any]:
        """What ``warmctl status`` shows for this worker's GPU, sent in the ``ready`` frame."""
        name = self.properties.get("name", b"")
        info: dict[str, Any] = {
            "device": self.device, "name": name.decode() if isinstance(name, bytes) else str(name),
            "memory": self.memory, "policy": self.policy, "recycle_bytes": self.recycle_bytes,
            "cupy": getattr(self.cupy, "__version__", "")}
        if self.limit:
            info["memory_limit_setting"] = self.limit  # as configured: a fraction or bytes
        # Informative only: a figure that cannot be read is left out rather than failing warm-up.
        for key, read in (("memory_limit", lambda: self.pool.get_limit()),
                          ("pool_bytes", lambda: self.pool.total_bytes()),
                          ("cuda_runtime", lambda: self.cupy.cuda.runtime.runtimeGetVersion())):
            try:
                info[key] = int(read())
            except Exception:
                pass
        return info

    # ---------------------------------------------------------------- per job

    def job_started(self) -> None:
        """Reset the high-water mark and note the pool before the job. Never raises."""
        assert self.tracker is not None, "warm_up() first"
        self.start_error = None
        try:
            self.used_before = self.tracker.start()
            self.pool_before = int(self.pool.total_bytes())
        except Exception as exc:  # the job still runs; the worker is replaced after it
            self.start_error = f"{type(exc).__name__}: {exc}"

    def job_finished(self, error: dict[str, Any] | None) -> dict[str, Any]:
        """Synchronise, measure, apply the policy; the done frame's ``gpu`` dict.

        Never raises: if the checks themselves fail, the worker asks to be recycled.
        """
        report: dict[str, Any] = {"device": self.device, "policy": self.policy}
        try:
            self._finish(error, report)
        except Exception as exc:
            report.update(action="recycle",
                          recycle=f"the GPU check after the job failed ({type(exc).__name__}: {exc})")
        return report

    def _finish(self, error: dict[str, Any] | None, report: dict[str, Any]) -> None:
        assert self.tracker is not None
        reasons: list[str] = []
        device_error = self._synchronize()
        peak, intact = self.tracker.stop()
        used, pool_bytes = int(self.pool.used_bytes()), int(self.pool.total_bytes())
        report.update(peak_bytes=peak, peak_tracked=intact, used_bytes_before=self.used_before,
                      used_bytes_after=used, pool_bytes_before=self.pool_before)
        if device_error:
            report["device_error"] = device_error
            reasons.append(f"synchronising the device after the job failed ({device_error}); "
                           "its CUDA context may be unusable")
        if self.start_error:
            reasons.append(f"the GPU check before the job failed ({self.start_error})")
        cuda_error = cuda_error_in(error)
        if cuda_error:
            report["cuda_error"] = cuda_error
            reasons.append(f"the job raised {cuda_error}; its CUDA context may be unusable")

        action = "kept"
        if self.policy == "recycle":
            reasons.insert(0, 'workers.gpu_memory_policy = "recycle"')
        elif self.policy == "free" and not device_error:
            # A poisoned context fails these calls too; the worker goes anyway then.
            self.pool.free_all_blocks()
            self.pinned_pool.free_all_blocks()
            action = "freed"
        pool_after = int(self.pool.total_bytes())
        report.update(pool_bytes_after=pool_after, freed_bytes=max(0, pool_bytes - pool_after))
        if not device_error:
            free, _total = self.cupy.cuda.runtime.memGetInfo()
            report["device_free_bytes"] = int(free)

        limit = self.recycle_bytes
        if limit and not reasons:
            cached = pool_after - used  # held by the pool but not in use: fragmentation, stale cache
            if peak > limit:
                reasons.append(f"the job's GPU pool peak of {peak} bytes passed "
                               f"workers.gpu_recycle_bytes ({limit})")
            elif pool_after > limit:
                reasons.append(f"the GPU pool holds {pool_after} bytes ({cached} of them cached, "
                               f"not in use), over workers.gpu_recycle_bytes ({limit})")
        if reasons:
            report["recycle"] = "; ".join(reasons)
            action = "recycle"
        report["action"] = action

    def _synchronize(self) -> str | None:
        """Wait for the job's queued work; the error text if the device fails."""
        try:
            self.cupy.cuda.Device(0).synchronize()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None


def warm_up(device: int, options: dict[str, Any],
            on_step: Callable[[str], None] = lambda label: None) -> GpuWorker:
    """Start GPU support for a worker pinned to ``device``; raises WarmupFailed."""
    gpu = GpuWorker(device, options, on_step)
    gpu.warm_up()
    return gpu
