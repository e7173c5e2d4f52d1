"""Daemons whose workers see fake GPUs (tests/fake_cupy), and waiting for warm workers."""
from __future__ import annotations

import os
import time
from pathlib import Path

from warmd.client.info import Status

FAKE_CUPY = Path(__file__).resolve().parent / "fake_cupy"


def fake_gpu_daemon(make_daemon, config: str = "", devices: int = 1, memory: int | None = None,
                    **env: str):
    d = make_daemon(config, start=False)
    d.env["PYTHONPATH"] = os.pathsep.join([str(FAKE_CUPY), d.env["PYTHONPATH"]])
    d.env["FAKE_CUPY_DEVICES"] = str(devices)
    if memory is not None:
        d.env["FAKE_CUPY_MEMORY"] = str(memory)
    d.env.pop("CUDA_VISIBLE_DEVICES", None)
    d.env.update(env)
    return d.start()


def wait_warm(client, count: int, timeout: float = 60) -> Status:
    deadline = time.monotonic() + timeout
    while True:
        status = client.status()
        warm = [w for w in status.workers if w.state in ("idle", "busy")]
        if len(warm) >= count and not any(w.state == "warming" for w in status.workers):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"workers did not warm: {status}")
        time.sleep(0.05)
