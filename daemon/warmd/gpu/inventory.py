"""Learn the GPUs without touching CUDA in the daemon: ask a short-lived probe process.

The daemon must stay free of CUDA state (workers are fresh interpreters, and a
CUDA context in the daemon would pin memory on every card), so a throw-away
interpreter imports cupy and reports what it sees. The probe inherits the
daemon's CUDA_VISIBLE_DEVICES, so it numbers the devices as CUDA does for us:
device ``i`` is entry ``i`` of that list, and a worker is pinned to it by
giving it that entry alone.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys

from ..daemon.placement import Device
from ..errors import ConfigError

log = logging.getLogger("warmd")

_PROBE = r"""
import json, sys
try:
    import cupy
    n = cupy.cuda.runtime.getDeviceCount()
except Exception as exc:
    print(json.dumps({"devices": [], "why": f"{type(exc).__name__}: {exc}"})); sys.exit(0)
out = []
for i in range(n):
    p = cupy.cuda.runtime.getDeviceProperties(i)
    uuid = p.get("uuid", b"")
    uuid = uuid.hex() if isinstance(uuid, (bytes, bytearray)) else str(uuid)
    name = p["name"].decode() if isinstance(p["name"], bytes) else str(p["name"])
    out.append({"index": i, "name": name, "memory": int(p["totalGlobalMem"]), "uuid": uuid})
print(json.dumps({"devices": out}))
"""


def probe(timeout: float = 60.0) -> tuple[list[dict], str]:
    """Devices visible under the current CUDA_VISIBLE_DEVICES, and why none when empty."""
    try:
        # find_spec locates cupy without importing it: no cupy, no probe process at all.
        if importlib.util.find_spec("cupy") is None:
            return [], "cupy is not installed (pip install 'warmd[gpu]')"
    except (ImportError, ValueError):
        return [], "cupy is not importable"
    try:
        # -P: a "cupy" directory in the daemon's working directory must not shadow the real one.
        out = subprocess.run([sys.executable, "-P", "-c", _PROBE], capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
        data = json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        return [], f"GPU probe failed: {exc}"
    return data.get("devices", []), data.get("why", "")


def plan_devices(setting: str | tuple[int, ...]) -> list[Device]:
    """Resolve workers.devices ("all", "none" or indices) against what the probe sees."""
    if setting == "none":
        return []  # CPU mode by choice: no probe, cupy need not even be installed
    found, why = probe()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",")] if visible else [str(d["index"]) for d in found]
    devices = [Device(i, ids[i] if i < len(ids) else str(d["index"]), d.get("name", ""),
                      d.get("memory", 0), d.get("uuid", "")) for i, d in enumerate(found)]
    if setting == "all":
        if not devices:
            log.info("no GPU workers, running in CPU mode: %s", why or "no GPU visible")
        return devices
    for index in setting:
        if index >= len(devices):
            seen = ", ".join(f"{d.index} ({d.name})" for d in devices) or "none"
            raise ConfigError(
                f"workers.devices: device {index} requested, but {len(devices)} device(s) are "
                f"visible (visible: {seen}" + (f"; {why}" if why else "")
                + (f"; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "")
                + '). Use indices among the visible devices, "all" or "none"')
    return [devices[i] for i in setting]
