"""Large numpy arrays through warmd's in-band frames, against a ProcessPoolExecutor held open.

    .venv/bin/python bench/arrays.py [--sizes 1,64,200] [--rounds 5]

For each size (MiB): an argument in (the job returns its length), a result out (the
job makes the array), and a round trip (the same array in and out), median of the
rounds, in MB/s of array bytes moved; and the daemon's peak RSS above its start
during the size's runs. Results are retained by the daemon (daemon.result_max_bytes),
which the RSS figure includes.
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from warmd.testing import LocalDaemon

MB = 10**6


def make(n: int) -> "np.ndarray":
    return np.ones(n, dtype=np.uint8)


def echo(a: np.ndarray) -> np.ndarray:
    return a


def size_of(a: np.ndarray) -> int:
    return a.nbytes


def _rates(run, arr: np.ndarray, rounds: int) -> tuple[float, float, float]:
    n = arr.nbytes
    ins, outs, trips = [], [], []
    for _ in range(rounds):
        t = time.perf_counter(); run(size_of, arr); ins.append(time.perf_counter() - t)
        t = time.perf_counter(); run(make, n); outs.append(time.perf_counter() - t)
        t = time.perf_counter(); run(echo, arr); trips.append(time.perf_counter() - t)
    med = statistics.median
    return n / med(ins) / MB, n / med(outs) / MB, 2 * n / med(trips) / MB


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1,64,200", help="array sizes in MiB, comma-separated")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    sizes = [int(float(s) * 2**20) for s in args.sizes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="wdb-arrays-", dir="/tmp"))
    config = '[daemon]\nmax_frame = "1GiB"\n[workers]\ncount = 1\nspares = 0\n'
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    pool.submit(int).result()
    with LocalDaemon(root, config, ("--log-level", "warning"),
                     pythonpath=(Path(__file__).resolve().parent,), remove_root=True) as daemon:
        with daemon.client() as client:
            client.submit(int).result()
            print("| MiB | peer | argument MB/s | result MB/s | round trip MB/s | daemon peak RSS +MiB |")
            print("|---|---|---|---|---|---|")
            for n in sizes:
                arr = np.ones(n, dtype=np.uint8)
                daemon.reset_peak_rss()
                base = daemon.rss()
                w = _rates(lambda fn, a: client.submit(fn, a).result(), arr, args.rounds)
                peak = (daemon.peak_rss() - base) / 2**20
                ppe = _rates(lambda fn, a: pool.submit(fn, a).result(), arr, args.rounds)
                print(f"| {n / 2**20:g} | warmd | {w[0]:.0f} | {w[1]:.0f} | {w[2]:.0f} | {peak:.0f} |")
                print(f"| {n / 2**20:g} | ProcessPoolExecutor | {ppe[0]:.0f} | {ppe[1]:.0f} | {ppe[2]:.0f} | - |")
                sys.stdout.flush()
    pool.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
