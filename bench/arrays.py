"""8. Large arrays: a numpy array in as an argument and the same array out as the result.

    bench/.venv/bin/python bench/run.py --only arrays        # as a section of make bench
    .venv/bin/python bench/arrays.py [--sizes 1,64,1024] [--rounds 3]

For each size (MiB), MB/s of array bytes moved both ways (2 x size / wall), median
of interleaved rounds, for: warmd (in-band frames), a ProcessPoolExecutor held
open, multiprocessing.shared_memory by hand (the array copied into a block, the
worker copies it into a second block it returns by name), and the memcpy floor
(the two copies alone). The daemon's peak RSS above its start is taken during
warmd's runs of each size; results it retains for late readers
(daemon.result_max_bytes) count in it.
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any, Callable

import numpy as np

from warmd.testing import LocalDaemon

MB = 10**6
CONFIG = '[daemon]\nmax_frame = "2GiB"\nresult_max_bytes = "2GiB"\n[workers]\ncount = 1\nspares = 0\n'


def echo(a: np.ndarray) -> np.ndarray:
    return a


def shm_echo(name: str, nbytes: int) -> str:
    """The worker's half of the by-hand version: map the block, copy it into a new one."""
    src = shared_memory.SharedMemory(name)
    out = shared_memory.SharedMemory(create=True, size=nbytes)
    np.frombuffer(out.buf, np.uint8)[:] = np.frombuffer(src.buf, np.uint8)
    src.close()
    out.close()
    return out.name


def _shm_round_trip(pool: ProcessPoolExecutor, arr: np.ndarray) -> np.ndarray:
    block = shared_memory.SharedMemory(create=True, size=arr.nbytes)
    np.frombuffer(block.buf, np.uint8)[:] = arr
    name = pool.submit(shm_echo, block.name, arr.nbytes).result()
    block.close()
    block.unlink()
    back = shared_memory.SharedMemory(name)
    result = np.frombuffer(back.buf, np.uint8).copy()  # a plain array the caller owns
    back.close()
    back.unlink()
    return result


def _memcpy(arr: np.ndarray) -> np.ndarray:
    middle = np.empty_like(arr)
    np.copyto(middle, arr)
    out = np.empty_like(arr)
    np.copyto(out, middle)
    return out


def _row(peer: str, mib: float, walls: list[float], **extra: Any) -> dict:
    return {"section": "arrays", "metric": f"{mib:g} MiB round trip", "peer": peer,
            "value": 2 * mib * 2**20 / statistics.median(walls) / MB, "unit": "MB/s",
            "wall_ms": statistics.median(walls) * 1000, "n": len(walls), "mib": mib, **extra}


def arrays(cfg: dict, log: Callable[[str], None]) -> list[dict]:
    sizes, rounds = cfg["array_sizes_mib"], cfg["array_rounds"]
    rows: list[dict] = []
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    pool.submit(int).result()
    root = Path(tempfile.mkdtemp(prefix="wdb-arrays-", dir="/tmp"))
    try:
        with LocalDaemon(root, CONFIG, ("--log-level", "warning"),
                         pythonpath=(Path(__file__).resolve().parent,), remove_root=True) as daemon:
            with daemon.client() as client:
                client.submit(int).result()
                for mib in sizes:
                    arr = np.ones(int(mib * 2**20), dtype=np.uint8)
                    runs: dict[str, Callable[[], Any]] = {
                        "warmd": lambda: client.submit(echo, arr).result(),
                        "ProcessPoolExecutor": lambda: pool.submit(echo, arr).result(),
                        "shared_memory by hand": lambda: _shm_round_trip(pool, arr),
                        "floor: two memcpy": lambda: _memcpy(arr)}
                    walls: dict[str, list[float]] = {name: [] for name in runs}
                    daemon.reset_peak_rss()
                    base = daemon.rss()
                    for run in runs.values():  # once each, not counted: imports, first faults
                        run()
                    for _ in range(rounds):
                        for name, run in runs.items():
                            t = time.perf_counter()
                            out = run()
                            walls[name].append(time.perf_counter() - t)
                            assert out.nbytes == arr.nbytes, name
                            del out
                    peak = (daemon.peak_rss() - base) / 2**20
                    for name, values in walls.items():
                        extra = {"daemon_rss_mib": peak} if name == "warmd" else {}
                        rows.append(_row(name, mib, values, **extra))
                    log(f"  arrays {mib:g} MiB done")
    finally:
        pool.shutdown()
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1,64,1024", help="array sizes in MiB, comma-separated")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    rows = arrays({"array_sizes_mib": [float(s) for s in args.sizes.split(",")],
                   "array_rounds": args.rounds}, lambda m: print(m, file=sys.stderr))
    print("| MiB | peer | round trip MB/s | wall ms | daemon peak RSS +MiB |")
    print("|---|---|---|---|---|")
    for r in rows:
        rss = f"{r['daemon_rss_mib']:.0f}" if "daemon_rss_mib" in r else "-"
        print(f"| {r['mib']:g} | {r['peer']} | {r['value']:.0f} | {r['wall_ms']:.0f} | {rss} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
