"""The plate pipeline on a Dask cluster through warmd.dask: one job per well.

    .venv/bin/python examples/plate/on_dask.py [--workers 2] [--wells 8] [--address tcp://...]

Without ``--address`` it starts a LocalCluster of ``--workers`` processes (one thread
each). Every Dask worker gets a warmd daemon with this directory's warmd.toml, whose
warm-up hook runs the pipeline once on a tiny plate; each well's job prints its
progress, and the last line of each run says where the wells ran.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pipeline  # noqa: E402
import warmd  # noqa: E402


def well(plate_seed: int, w: int, size: int = 256) -> dict:
    """One well: the pipeline's analysis of its image, and the worker that ran it."""
    xp, ndi = warmd.xp(), pipeline.ndimage()
    img = xp.asarray(pipeline.synthetic_plate(1, size, seed=plate_seed + w)[0])
    warmd.progress(1, 1, f"well {w} analysed", well=w)
    return {**pipeline.analyse_well(img, xp, ndi), "well": w, "worker_pid": os.getpid()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--wells", type=int, default=8)
    parser.add_argument("--address", help="a Dask scheduler's address (default: a LocalCluster)")
    args = parser.parse_args()

    import distributed
    import warmd.dask

    cluster = args.address or distributed.LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True,
        dashboard_address=":0", silence_logs=logging.ERROR)
    with warmd.dask.Client(cluster, config=HERE / "warmd.toml", pythonpath=[HERE]) as client:
        for label in ("first", "second"):
            start = time.perf_counter()
            with client.group(name=f"plate, {label} run") as run:
                jobs = [run.submit(well, 0, w) for w in range(args.wells)]
            results = [job.result() for job in jobs]
            wall = time.perf_counter() - start
            where = Counter(r["worker_pid"] for r in results)
            nuclei = sum(r["nuclei"] for r in results)
            print(f"{label} run: {len(results)} wells, {nuclei} nuclei in {wall:.2f} s; "
                  f"wells per warm worker {dict(where)}")
    if not args.address:
        cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
