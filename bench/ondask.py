"""warmd.dask against plain Dask on the same LocalCluster: what a job costs on top of a
Dask task, and what warm-up saves.

    bench/.venv/bin/python bench/ondask.py [--rounds 5] [--calls 200]

A LocalCluster of 2 worker processes with 1 thread each (processes=True). In one
interleaved run, for each of warmd.dask (a warmd daemon beside each Dask worker, one
warm worker each) and plain ``distributed.Client.submit``/``map``:

- round trip: ``submit(noop).result()``, ``--calls`` times per round, the two
  systems alternating call by call; the median and p90, and warmd.dask's overhead
  over Dask's;
- fan-out: 64 jobs of 50 ms (a sleep) mapped over the 2 workers: the wall time and
  its efficiency (ideal 1.6 s over measured);
- the plate: 8 wells of bench/platejob.py (scipy.ndimage and scikit-image), one job
  per well, mapped: on a fresh cluster (plain Dask: its first map imports scipy and
  scikit-image in each worker; warmd.dask: the warm-up hook ``platejob:warm`` did that
  before, and the time it took is reported too) and warm (later rounds).

The last line is the headline:

    dask: warmd.dask adds X ms per job; a fresh cluster's first plate Y s vs Z s
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common

common.setup_environment()
import jobs  # noqa: E402
import platejob  # noqa: E402

WORKERS, FAN, FAN_SECONDS, WELLS = 2, 64, 0.05, 8
CONFIG = '[warmup]\nhooks = ["platejob:warm"]\n'


def out(line: str = "") -> None:
    print(line, flush=True)


def cluster():
    import distributed
    saved = dict(os.environ)
    made = distributed.LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                                    dashboard_address=":0", silence_logs=logging.ERROR)
    # distributed sets *_NUM_THREADS and MALLOC_TRIM_THRESHOLD_ here for its workers.
    os.environ.clear()
    os.environ.update(saved)
    return made


class Plain:
    name = "dask"

    def __init__(self, cl) -> None:
        import distributed
        self.client = distributed.Client(cl)

    def call(self, fn, *args):
        return self.client.submit(fn, *args, pure=False).result()

    def map(self, fn, *iterables):
        return self.client.gather(self.client.map(fn, *iterables, pure=False))

    def close(self) -> None:
        self.client.close()


class OnWarmd:
    name = "warmd.dask"

    def __init__(self, cl, config: Path) -> None:
        import warmd.dask
        start = time.perf_counter()
        self.client = warmd.dask.Client(cl, config=config)
        self.warmup = self.wait_warm()
        self.ready_seconds = time.perf_counter() - start

    def wait_warm(self, timeout: float = 300) -> float:
        """Until every worker's daemon has its warm worker idle; the longest warm-up."""
        deadline = time.monotonic() + timeout
        while True:
            daemons = self.client.daemons()
            states = [w["state"] for d in daemons.values() for w in d["workers"]]
            if len(states) >= WORKERS and all(s == "idle" for s in states):
                return max(w["warmup_seconds"] or 0 for d in daemons.values() for w in d["workers"])
            if time.monotonic() > deadline:
                raise TimeoutError(f"warmd.dask workers still warming: {states}")
            time.sleep(0.1)

    def call(self, fn, *args):
        return self.client.submit(fn, *args).result()

    def map(self, fn, *iterables):
        return list(self.client.map(fn, *iterables))

    def close(self) -> None:
        self.client.close()


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def fresh_plate(config: Path) -> dict[str, float]:
    """One fresh cluster per system: its first plate (and warmd.dask's warm-up)."""
    found = {}
    for make in (lambda cl: Plain(cl), lambda cl: OnWarmd(cl, config)):
        with cluster() as cl:
            system = make(cl)
            try:
                found[f"{system.name} first plate"] = timed(system.map, platejob.well, range(WELLS))
                if isinstance(system, OnWarmd):
                    found["warmd.dask warm-up"] = system.warmup
                    found["warmd.dask client ready"] = system.ready_seconds
            finally:
                system.close()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="wdb-dask-"))
    config = root / "warmd.toml"
    config.write_text(CONFIG)
    out(f"LocalCluster {WORKERS} workers x 1 thread; {args.rounds} rounds; {os.cpu_count()} CPUs")

    firsts: dict[str, list[float]] = {}
    for r in range(max(1, args.rounds // 2)):
        for name, value in fresh_plate(config).items():
            firsts.setdefault(name, []).append(value)
        out(f"  fresh clusters, round {r + 1}")

    trips: dict[str, list[float]] = {"dask": [], "warmd.dask": []}
    fans: dict[str, list[float]] = {"dask": [], "warmd.dask": []}
    plates: dict[str, list[float]] = {"dask": [], "warmd.dask": []}
    with cluster() as cl:
        systems = [Plain(cl), OnWarmd(cl, config)]
        try:
            for system in systems:  # not counted: first calls, imports
                system.map(platejob.well, range(WELLS))
                system.map(jobs.busy_wait, range(4), [0.0] * 4)
            for r in range(args.rounds):
                for _ in range(args.calls):  # call by call, so that noise hits both alike
                    for system in systems:
                        trips[system.name].append(timed(system.call, jobs.noop))
                for system in (systems if r % 2 == 0 else systems[::-1]):
                    fans[system.name].append(timed(system.map, jobs.busy_wait, range(FAN), [FAN_SECONDS] * FAN))
                    plates[system.name].append(timed(system.map, platejob.well, range(WELLS)))
                out(f"  round {r + 1}/{args.rounds}")
        finally:
            for system in systems:
                system.close()

    ideal = FAN * FAN_SECONDS / WORKERS
    out()
    out(f"{'':28s} {'dask':>12s} {'warmd.dask':>12s}")
    med = {n: statistics.median(v) * 1000 for n, v in trips.items()}
    p90 = {n: common.pct(v, 90) * 1000 for n, v in trips.items()}
    out(f"{'round trip, median':28s} {med['dask']:10.2f}ms {med['warmd.dask']:10.2f}ms")
    out(f"{'round trip, p90':28s} {p90['dask']:10.2f}ms {p90['warmd.dask']:10.2f}ms")
    fan = {n: statistics.median(v) for n, v in fans.items()}
    out(f"{'fan-out 64 x 50 ms':28s} {fan['dask']:11.2f}s {fan['warmd.dask']:11.2f}s"
        f"   efficiency {ideal / fan['dask']:.2f} / {ideal / fan['warmd.dask']:.2f}")
    plate = {n: statistics.median(v) for n, v in plates.items()}
    out(f"{'plate (8 wells), warm':28s} {plate['dask']:11.2f}s {plate['warmd.dask']:11.2f}s")
    first = {n: statistics.median(v) for n, v in firsts.items()}
    out(f"{'plate, fresh cluster':28s} {first['dask first plate']:11.2f}s {first['warmd.dask first plate']:11.2f}s"
        f"   (warmd.dask warm-up before it: {first['warmd.dask warm-up']:.2f} s; client ready "
        f"{first['warmd.dask client ready']:.2f} s)")
    out()
    out(f"dask: warmd.dask adds {med['warmd.dask'] - med['dask']:.2f} ms per job "
        f"({med['warmd.dask'] / med['dask']:.2f}x a Dask task's round trip); a fresh cluster's first "
        f"plate {first['warmd.dask first plate']:.2f} s vs {first['dask first plate']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
