"""The daemon's memory while a job prints a lot: nobody attached, a reader that keeps up,
a client that never reads, and the replay budget raised to hold everything (what every
job cost before the budget existed).

    python bench/memory.py [--gib N]

Reports the daemon's peak RSS above its idle baseline (VmHWM, reset before each
case) and the rate the output crossed the daemon. Memory, not speed, is the point:
the rates are as noisy as the machine.
"""
from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path

from warmd.client import jobspec
from warmd.client.events import Gap, Output
from warmd.protocol import encode, hello
from warmd.testing import LocalDaemon

MiB = 1 << 20


def printer(gib: int) -> str:
    return (f"import os\nchunk = b'x' * (1 << 20)\nfor _ in range({gib * 1024}):\n"
            "    os.write(1, chunk)\n")


def measure(config: str, gib: int, reader: str) -> tuple[float, float, str]:
    """(peak RSS growth in MiB, GiB/s, what the follower got) for one job printing ``gib`` GiB."""
    root = Path(tempfile.mkdtemp(prefix="wdmem-", dir="/tmp"))
    with LocalDaemon(root, "[workers]\ncount = 2\n" + config, remove_root=True) as d:
        with d.client() as client:
            client.submit(len, [1]).result(timeout=60)
            base = d.rss()
            d.reset_peak_rss()
            start = time.perf_counter()
            got = "-"
            if reader == "follows":
                future = client.run_code(printer(gib))
                events = list(future.events())
                live = sum(len(e.data) for e in events if isinstance(e, Output))
                missed = sum(e.missed_bytes or 0 for e in events if isinstance(e, Gap))
                got = f"{live / MiB:.0f} MiB live, {missed / MiB:.0f} MiB in gaps"
            else:
                job_id = client.submit_job(jobspec.code(printer(gib), []), attach=False).job_id
                slow = None
                if reader == "never reads":
                    slow = socket.socket(socket.AF_UNIX)
                    slow.connect(str(d.socket))
                    slow.sendall(encode(hello("slow", os.getpid()))
                                 + encode({"t": "attach", "req": 1, "job": job_id}))
                assert client.wait(job_id).state == "succeeded"
                if slow is not None:
                    slow.close()
            seconds = time.perf_counter() - start
            return (d.peak_rss() - base) / MiB, gib / seconds, got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=int, default=1, help="GiB the job prints (default 1)")
    args = parser.parse_args()
    cases = [("nobody attached", "", "nobody"),
             ("a client follows and reads", "", "follows"),
             ("a client attaches and never reads", "", "never reads"),
             ("nobody attached, replay budget 4 GiB", '[daemon]\nreplay_max_bytes = "4GiB"\n',
              "nobody")]
    print(f"{'case':40} {'peak RSS above idle':>20} {'output rate':>12}  follower got")
    for label, config, reader in cases:
        grew, rate, got = measure(config, args.gib, reader)
        print(f"{label:40} {grew:>16.1f} MiB {rate:>8.2f} GiB/s  {got}", flush=True)


if __name__ == "__main__":
    main()
