"""7. Fan-out: 64 jobs of 50 ms over 2 workers, from a front end and from a parent job.

Efficiency is the ideal wall time (jobs x seconds / workers) over the measured one.
Peers, in interleaved rounds: warmd (Client.map from the front end; a parent job that
maps its children), a ProcessPoolExecutor created for each run (the legacy pattern)
and one held open, and a dask LocalCluster held open.
"""
from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

import jobs
import peers
from common import Daemon, summary

CONFIG = "[workers]\ncount = 2\nspares = 0\n"
JOBS, SECONDS, WORKERS = 64, 0.05, 2


def _runs(daemon: Daemon, log: Callable[[str], None]) -> tuple[dict[str, Callable[[], list]], list]:
    client = daemon.client()
    items, waits = list(range(JOBS)), [SECONDS] * JOBS
    spawn = multiprocessing.get_context("spawn")
    held = ProcessPoolExecutor(WORKERS, mp_context=spawn)
    held.submit(int).result()

    def per_run() -> list:
        with ProcessPoolExecutor(WORKERS, mp_context=spawn) as pool:
            return list(pool.map(jobs.busy_wait, items, waits))

    runs = {"warmd: map from a front end": lambda: list(client.map(jobs.busy_wait, items, waits)),
            "warmd: map from a parent job": lambda: client.submit(jobs.fan_out, JOBS, SECONDS).result(),
            "ProcessPoolExecutor per run": per_run,
            "ProcessPoolExecutor held open": lambda: list(held.map(jobs.busy_wait, items, waits))}
    closers = [client.close, lambda: held.shutdown(wait=True)]
    try:
        dask = peers.DaskPeer(workers=WORKERS)
        runs["dask LocalCluster held open"] = lambda: dask.client.gather(
            dask.client.map(jobs.busy_wait, items, waits, pure=False))
        closers.append(dask.close)
    except Exception as exc:  # a missing peer is reported loudly, the rest still run
        log(f"!!! PEER MISSING: dask could not start: {type(exc).__name__}: {exc}")
    return runs, closers


def fanout(cfg, log) -> list[dict]:
    rounds = cfg["fanout_rounds"]
    ideal = JOBS * SECONDS / WORKERS
    with Daemon(CONFIG, "fanout") as daemon:
        daemon.wait_warm(WORKERS)
        runs, closers = _runs(daemon, log)
        walls: dict[str, list[float]] = {name: [] for name in runs}
        try:
            for name, run in runs.items():  # a first run each, not counted: imports, extras
                assert run() == list(range(JOBS)), name
            for r in range(rounds):
                for name, run in runs.items():
                    t = time.perf_counter()
                    out = run()
                    walls[name].append(time.perf_counter() - t)
                    assert out == list(range(JOBS)), name
                log(f"  fan-out round {r + 1}/{rounds}")
        finally:
            for close in closers:
                close()
    rows = []
    for name, values in walls.items():
        s = summary(values)
        rows.append({"section": "fanout", "metric": f"{JOBS} x {SECONDS * 1000:.0f} ms over {WORKERS} workers",
                     "peer": name, "value": ideal / s["p50"], "unit": "efficiency",
                     "wall_ms": s["p50"] * 1000, "min_ms": min(values) * 1000, "n": s["n"],
                     "ideal_ms": ideal * 1000})
    return rows
