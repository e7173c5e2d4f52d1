"""Learn the GPUs without touching CUDA in the daemon: ask a short-lived probe process."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from ..daemon.placement import Device
from ..errors import ConfigError

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
        import importlib.util
        if importlib.util.find_spec("cupy") is None:
            return [], "cupy is not installed (pip install 'warmd[gpu]')"
    except (ImportError, ValueError):
        return [], "cupy is not importable"
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
        data = json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        return [], f"GPU probe failed: {exc}"
    return data.get("devices", []), data.get("why", "")


def plan_devices(setting: str | tuple[int, ...]) -> list[Device]:
    """Resolve workers.devices ("all", "none" or indices) against what the probe sees."""
    if setting == "none":
        return []
    found, why = probe()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",")] if visible else [str(d["index"]) for d in found]
    devices = [Device(i, ids[i] if i < len(ids) else str(d["index"]), d.get("name", ""),
                      d.get("memory", 0), d.get("uuid", "")) for i, d in enumerate(found)]
    if setting == "all":
        return devices
    for index in setting:
        if index >= len(devices):
            raise ConfigError(f"workers.devices: device {index} requested, but "
                              f"{len(devices)} device(s) are visible" + (f" ({why})" if why else ""))
    return [devices[i] for i in setting]
