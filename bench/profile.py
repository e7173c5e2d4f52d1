"""Profile warmd's dispatch path: a client submits no-op calls in a loop while py-spy
samples the client, the daemon and the busy worker. Writes collapsed stacks and a
summary of the hottest frames per process to bench/results/profile-<time>/.

    bench/.venv/bin/python bench/profile.py [--seconds 8] [--rate 1000] [--pipelined]
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

common.setup_environment()

import jobs  # noqa: E402
from common import Daemon  # noqa: E402


def summarise(path: Path, top: int = 25) -> str:
    own, incl, total = collections.Counter(), collections.Counter(), 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    out = [f"{path.name}: {total} samples", "  self:"]
    out += [f"  {v * 100 / total:5.1f}%  {k}" for k, v in own.most_common(top)]
    out += ["  inclusive:"] + [f"  {v * 100 / total:5.1f}%  {k}" for k, v in incl.most_common(top)]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--rate", type=int, default=1000)
    p.add_argument("--pipelined", action="store_true", help="map batches instead of one call at a time")
    args = p.parse_args()
    py_spy = Path(sys.executable).with_name("py-spy")
    out = common.BENCH / "results" / f"profile-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True)
    with Daemon("[workers]\ncount = 1\nspares = 1\n", "profile") as daemon:
        daemon.wait_warm(2)
        with daemon.client() as client:
            worker = client.submit(os.getpid).result()
            stop = threading.Event()
            count = [0]

            def load() -> None:
                while not stop.is_set():
                    if args.pipelined:
                        list(client.map(jobs.noop, range(200)))
                        count[0] += 200
                    else:
                        client.submit(jobs.noop).result()
                        count[0] += 1

            thread = threading.Thread(target=load)
            thread.start()
            time.sleep(1)
            spies = [subprocess.Popen([str(py_spy), "record", "-r", str(args.rate), "-d", str(int(args.seconds)),
                                       "-p", str(pid), "-f", "raw", "-o", str(out / f"{name}.txt")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for name, pid in (("client", os.getpid()), ("daemon", daemon.pid), ("worker", worker))]
            start, n0 = time.monotonic(), count[0]
            for s in spies:
                s.wait()
            rate = (count[0] - n0) / (time.monotonic() - start)
            stop.set()
            thread.join()
    report = [f"calls/s while sampled (slowed by the sampler): {rate:.0f}"]
    report += [summarise(f) for f in sorted(out.glob("*.txt"))]
    (out / "summary.txt").write_text("\n\n".join(report) + "\n")
    print("\n\n".join(report))
    print(f"\n{out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
