"""Shared pieces: a hand-started warmd daemon, statistics, the machine's description."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from warmd.testing import LocalDaemon

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PLATE = REPO / "examples" / "plate"


def runtime_base() -> str:
    """Where daemons' socket directories go: a tmpfs when there is one, as $XDG_RUNTIME_DIR
    (/run/user/UID) is under systemd. The daemon keeps its ledger of running jobs beside
    the socket, and on a disk file system every job start and end costs a file replace."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return "/tmp"


def pythonpath() -> str:
    """bench/ and the example on the path of every process a peer starts."""
    return os.pathsep.join(filter(None, [str(BENCH), str(PLATE), os.environ.get("PYTHONPATH")]))


def setup_environment() -> None:
    os.environ["PYTHONPATH"] = pythonpath()
    for p in (str(PLATE), str(BENCH)):
        if p not in sys.path:
            sys.path.insert(0, p)


class Daemon(LocalDaemon):
    """A warmd daemon started by hand on a private socket, as the test suite does."""

    def __init__(self, config: str, name: str = "bench") -> None:
        root = Path(tempfile.mkdtemp(prefix=f"wdb-{name}-", dir=runtime_base()))
        super().__init__(root, config, ("--log-level", "warning"), pythonpath=(BENCH, PLATE),
                         remove_root=True)

    def wait_warm(self, workers: int, timeout: float = 120.0) -> list[int]:
        """Block until ``workers`` workers are idle; return their pids."""
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while True:
                status = client.status()
                if isinstance(status, dict):  # a warmd from before the typed Status (bench/ab.py BEFORE)
                    ws = [(w["pid"], w["state"]) for w in status["workers"]]
                else:
                    ws = [(w.pid, w.state) for w in status.workers]
                idle = [pid for pid, state in ws if state == "idle"]
                if len(idle) >= workers and len(ws) == len(idle):
                    return idle
                if time.monotonic() > deadline:
                    raise RuntimeError(f"workers not warm after {timeout} s: {ws}\n{self.log_text()}")
                time.sleep(0.02)


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * (len(s) - 1))))
    return s[k]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": pct(values, 50), "p99": pct(values, 99),
            "mean": statistics.fmean(values) if values else float("nan"),
            "min": min(values) if values else float("nan")}


def machine() -> dict[str, str]:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                      if line.startswith("Model name")), "?")
    except OSError:
        model = "?"
    return {"cpu": model, "cpus": str(os.cpu_count()), "kernel": platform.release(),
            "runtime_dir": runtime_base(),
            "python": platform.python_version(),
            "memory_gib": f"{psutil.virtual_memory().total / 2**30:.1f}"}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("warmd", "cloudpickle", "psutil", "numpy", "scipy", "scikit-image", "dask",
                 "distributed", "warmpool", "py-spy", "pyinstrument"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "MISSING"
    return out
