"""Where array data should leave the pickle: buffers.min_bytes.

    bench/.venv/bin/python bench/threshold.py [--sizes 64,256,1024,4096] [--calls 200]

For each array size (KiB), the round trip of the same array in and out (median
µs over ``--calls`` calls, rounds interleaved) with the buffer in the pickle
(``min_bytes`` above the size) and in a memfd (``min_bytes`` of 1 byte), against
two daemons started side by side. The default, 1 MiB, is where the memfd stops
costing more than the copy into the pickle.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import common
from common import Daemon

CONFIG = "[workers]\ncount = 1\nspares = 0\n[daemon]\nresult_max_jobs = 1\n[buffers]\nmin_bytes = {}\n"


def echo(a):
    return a


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="64,256,512,1024,2048,4096", help="array sizes in KiB")
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    common.setup_environment()
    sizes = [int(s) * 1024 for s in args.sizes.split(",")]
    with Daemon(CONFIG.format(2**40), "in-pickle") as inband, Daemon(CONFIG.format(1), "memfd") as memfd:
        with inband.client() as a, memfd.client() as b:
            clients = {"in the pickle": a, "in a memfd": b}
            print("| KiB | in the pickle µs | in a memfd µs | memfd ÷ pickle |")
            print("|---|---|---|---|")
            for size in sizes:
                array = np.ones(size, dtype=np.uint8)
                times: dict[str, list[float]] = {name: [] for name in clients}
                for _ in range(args.rounds):
                    for name, client in clients.items():
                        client.submit(echo, array).result()  # warm
                        for _ in range(args.calls // args.rounds):
                            t = time.perf_counter()
                            client.submit(echo, array).result()
                            times[name].append(time.perf_counter() - t)
                inb, mfd = (statistics.median(times[n]) * 1e6 for n in clients)
                print(f"| {size // 1024} | {inb:.0f} | {mfd:.0f} | {mfd / inb:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
