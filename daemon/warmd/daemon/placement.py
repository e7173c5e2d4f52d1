"""Which workers to run where: CPU slots, or workers pinned one per GPU.

The daemon never touches CUDA itself; it learns devices from a probe process
(see ``warmd.gpu.inventory``) and pins each worker with CUDA_VISIBLE_DEVICES before
its interpreter starts.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Device:
    index: int          # as the daemon numbers them (position among the visible devices)
    visible_id: str     # what CUDA_VISIBLE_DEVICES must say to show this one device
    name: str = ""
    memory: int = 0
    uuid: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "memory": self.memory, "uuid": self.uuid}


@dataclass
class Placement:
    workers: int                 # CPU mode: jobs that may run at once
    spares: int                  # warm idle workers kept beyond that (per device on GPUs)
    devices: list[Device] = field(default_factory=list)
    workers_per_device: int = 1
    gpu_options: dict[str, Any] = field(default_factory=dict)

    @property
    def gpu(self) -> bool:
        return bool(self.devices)

    @property
    def capacity(self) -> int:
        return len(self.devices) * self.workers_per_device if self.gpu else self.workers

    @property
    def target(self) -> int:
        return self.capacity + (len(self.devices) * self.spares if self.gpu else self.spares)

    def wanted(self) -> Counter:
        if not self.gpu:
            return Counter({None: self.workers + self.spares})
        return Counter({d.index: self.workers_per_device + self.spares for d in self.devices})

    def missing(self, live_devices: list[int | None], extra: Counter | None = None) -> list[int | None]:
        """Devices (None in CPU mode) that need one more worker each, one entry per worker,
        taking the devices in turn (each device's first worker before any device's second:
        the pool may start only the first few); ``extra`` asks for workers beyond the
        placement's (see ``scheduler``)."""
        need = (self.wanted() + (extra or Counter())) - Counter(live_devices)
        order = sorted(need.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))
        return [device for rank in range(max(need.values(), default=0))
                for device, n in order if n > rank]

    def visible_devices(self, device: int | None) -> str | None:
        if device is None:
            return "" if self.gpu else None
        return next(d.visible_id for d in self.devices if d.index == device)

    def label(self, device: int | None) -> str:
        return f" on GPU{device}" if device is not None else ""

    def accepts(self, worker_device: int | None, job_device: int | None, busy: list) -> bool:
        if job_device is not None and job_device != worker_device:
            return False
        if worker_device is None:
            return True
        return sum(1 for w in busy if w.device == worker_device) < self.workers_per_device

    def check_request(self, device: Any) -> str | None:
        if device is None:
            return None
        if isinstance(device, bool) or not isinstance(device, int):
            return f"device must be an integer index, not {device!r}"
        if not self.gpu:
            return f"device {device} requested, but this daemon runs in CPU mode (no GPU workers)"
        if device not in {d.index for d in self.devices}:
            known = ", ".join(str(d.index) for d in self.devices)
            return f"device {device} requested, but this daemon runs workers on device(s) {known}"
        return None

    def warmup_options(self) -> dict[str, Any]:
        return dict(self.gpu_options) if self.gpu else {}

    def recycle_reason(self, done: dict[str, Any]) -> str | None:
        """A GPU worker's own verdict after a job (policy, pool size, CUDA error), if any."""
        gpu = done.get("gpu")
        reason = gpu.get("recycle") if isinstance(gpu, dict) else None
        return str(reason) if reason else None

    def describe(self) -> str:
        if not self.gpu:
            return "CPU"
        return ", ".join(f"GPU{d.index}" for d in self.devices)
