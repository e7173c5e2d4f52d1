"""8. Large arrays: a numpy array in as an argument and the same array out as the result.

    bench/.venv/bin/python bench/run.py --only arrays        # as a section of make bench
    bench/.venv/bin/python bench/arrays.py [--sizes 1,64,1024] [--rounds 3]

The job is ``echo(a): return a``. For each size (MiB), the figure is the array's
size over the round trip's wall (bytes counted once, not once each way: a 1 GiB
array back in 1 s is 1 GiB/s), median of interleaved rounds after one uncounted
run per peer, for:

- warmd: a plain numpy array (np.ones, made once); the client copies it into a
  memfd on each submit, the worker maps it and returns it as the same file;
- warmd, warmd.empty: the array allocated with ``warmd.empty`` and filled before
  the timed part, a fresh one each round (once sent, a memfd array is sealed and
  writing to it copies privately); nothing is copied either way;
- a ProcessPoolExecutor held open (spawn, one worker);
- multiprocessing.shared_memory by hand (the array copied into a block, the
  worker copies it into a second block it returns by name, the client copies
  that out and frees both);
- Ray, when it is installed (``ray.init(num_cpus=1)`` once, outside timing; a
  remote task with the array as argument, then ``ray.get`` of its result);
- the floor: the two memcpy a copying round trip needs, in process.

Only ``submit(...).result()`` (or the peer's equivalent) is timed; freeing the
result is not, for any peer. Results that arrive mapped (warmd, Ray) fault their
pages in on first touch; ``touch_ms`` records, untimed, what reading one byte of
each page of the result costs. warmd's client closes a result's memfd only when
the next frame arrives, so after each warmd call an untimed no-op job lets it go
(``release_ms``: that no-op's wall, most of it freeing the memfd's pages).

The daemon's RSS growth is taken around each warmd call (peak over the call,
VmHWM, above VmRSS before it; the largest over the size's runs, uncounted run
included). The daemon forwards the memfds' descriptors without mapping them, so
array data should not show in it at all.
"""
from __future__ import annotations

import argparse
import gc
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
PAGE = 4096
# max_frame stays at its default: array data travels in memfds, outside the frame,
# bounded by buffers.max_bytes (half of RAM by default). result_max_bytes counts the
# memfds a retained result holds; result_max_jobs = 1 keeps at most the latest result
# for late readers, so results of earlier rounds never pile up (a 1 GiB result is over
# the default 256 MiB and is dropped as soon as it has been sent).
CONFIG = "[daemon]\nresult_max_jobs = 1\n[workers]\ncount = 1\nspares = 0\n"

PPE = "ProcessPoolExecutor"
WARMD = "warmd"
WARMD_EMPTY = "warmd, warmd.empty"
RAY = "Ray: remote task + get"
FLOOR = "floor: two memcpy"

# The targets (checked, never asserted, by main(); run.py checks the first three).
GIB_PER_S = 1.0        # warmd, 1 GiB round trip
VS_POOL = 5.0          # warmd ÷ ProcessPoolExecutor at 1 GiB
EMPTY_GIB_PER_S = 3.0  # warmd.empty, 1 GiB round trip
RSS_MIB = 16.0         # daemon RSS growth during the 1 GiB transfer


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


def _start_ray(log: Callable[[str], None]) -> tuple[Any, Any] | None:
    """ray and a remote echo, or None when Ray is not installed or does not start."""
    try:
        import ray
    except ImportError:
        log("  arrays: Ray not installed, its rows are absent")
        return None
    try:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - any failure to start means no Ray rows
        log(f"  arrays: Ray did not start ({type(exc).__name__}: {exc}), its rows are absent")
        return None

    def ray_echo(a):  # defined here so that Ray pickles it by value
        return a

    return ray, ray.remote(ray_echo)


def _touch(out: Any) -> float:
    """Read one byte of every page of ``out`` (untimed by the caller's clock); seconds."""
    flat = np.asarray(out).reshape(-1).view(np.uint8)
    t = time.perf_counter()
    total = int(flat[::PAGE].sum(dtype=np.int64))
    took = time.perf_counter() - t
    assert total == len(flat[::PAGE]), "the result is not the array sent"  # every byte is 1
    return took


def _row(peer: str, mib: float, walls: list[float], touches: list[float], **extra: Any) -> dict:
    wall = statistics.median(walls)
    nbytes = mib * 2**20
    return {"section": "arrays", "metric": f"{mib:g} MiB round trip", "peer": peer,
            "value": nbytes / wall / MB, "unit": "MB/s", "gib_s": nbytes / wall / 2**30,
            "bytes_counted": "once", "wall_ms": wall * 1000, "min_ms": min(walls) * 1000,
            "touch_ms": statistics.median(touches) * 1000, "n": len(walls), "mib": mib, **extra}


def arrays(cfg: dict, log: Callable[[str], None]) -> list[dict]:
    sizes, rounds = cfg["array_sizes_mib"], cfg["array_rounds"]
    rows: list[dict] = []
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    pool.submit(int).result()
    ray_peer = _start_ray(log) if cfg.get("array_ray", True) else None
    root = Path(tempfile.mkdtemp(prefix="wdb-arrays-", dir="/tmp"))
    try:
        import warmd
        with LocalDaemon(root, CONFIG, ("--log-level", "warning"),
                         pythonpath=(Path(__file__).resolve().parent,), remove_root=True) as daemon:
            with daemon.client() as client:
                client.submit(int).result()
                for mib in sizes:
                    n = int(mib * 2**20)
                    arr = np.ones(n, dtype=np.uint8)
                    fresh: list[np.ndarray] = []

                    def prepare_empty() -> None:
                        # Outside the timed part: a new memfd array, written before it is sent.
                        fresh.clear()
                        gc.collect()
                        a = warmd.empty(n, np.uint8)
                        a.fill(1)
                        fresh.append(a)

                    runs: dict[str, tuple[Callable[[], None] | None, Callable[[], Any]]] = {
                        WARMD: (None, lambda: client.submit(echo, arr).result()),
                        WARMD_EMPTY: (prepare_empty, lambda: client.submit(echo, fresh[0]).result()),
                        PPE: (None, lambda: pool.submit(echo, arr).result()),
                        "shared_memory by hand": (None, lambda: _shm_round_trip(pool, arr))}
                    if ray_peer is not None:
                        ray, remote_echo = ray_peer
                        runs[RAY] = (None, lambda: ray.get(remote_echo.remote(arr)))
                    runs[FLOOR] = (None, lambda: _memcpy(arr))
                    walls: dict[str, list[float]] = {name: [] for name in runs}
                    touches: dict[str, list[float]] = {name: [] for name in runs}
                    rss: dict[str, float] = {WARMD: 0.0, WARMD_EMPTY: 0.0}
                    releases: dict[str, list[float]] = {WARMD: [], WARMD_EMPTY: []}
                    for counted in [False] + [True] * rounds:  # the first, uncounted: imports, first faults
                        for name, (prepare, run) in runs.items():
                            if prepare is not None:
                                prepare()
                            if name in rss:
                                daemon.reset_peak_rss()
                                base = daemon.rss()
                            t = time.perf_counter()
                            out = run()
                            wall = time.perf_counter() - t
                            if name in rss:
                                rss[name] = max(rss[name], (daemon.peak_rss() - base) / 2**20)
                            assert out.nbytes == n, name
                            touch = _touch(out)
                            del out
                            if name in rss:
                                # The client's reader lets go of a result's memfd only when the
                                # next frame comes: an untimed no-op, so that freeing this result
                                # (as the other peers' `del out`) is not charged to the next call.
                                t = time.perf_counter()
                                client.submit(int).result()
                                if counted:
                                    releases[name].append(time.perf_counter() - t)
                            if counted:
                                walls[name].append(wall)
                                touches[name].append(touch)
                    fresh.clear()
                    del arr
                    gc.collect()
                    size_rows = [_row(name, mib, walls[name], touches[name],
                                      **({"daemon_rss_mib": rss[name],
                                          "release_ms": statistics.median(releases[name]) * 1000}
                                         if name in rss else {}))
                                 for name in runs]
                    pool_row = next(r for r in size_rows if r["peer"] == PPE)
                    for r in size_rows:
                        r["vs_pool"] = r["value"] / pool_row["value"]
                    rows += size_rows
                    log(f"  arrays {mib:g} MiB done")
    finally:
        pool.shutdown()
        if ray_peer is not None:
            ray_peer[0].shutdown()
    return rows


def targets(rows: list[dict]) -> list[str]:
    """The section's targets against one run's rows, as run.py prints them."""
    def get(peer: str) -> dict | None:
        return next((r for r in rows if r["peer"] == peer and r["mib"] == 1024), None)

    w, e, p = get(WARMD), get(WARMD_EMPTY), get(PPE)
    out = []
    mark = lambda ok: "MET " if ok else "MISS"  # noqa: E731
    if w:
        out.append(f"- [{mark(w['gib_s'] >= GIB_PER_S)}] warmd, 1 GiB round trip at least {GIB_PER_S:g} GiB/s: "
                   f"{w['gib_s']:.2f} GiB/s")
        if p:
            out.append(f"- [{mark(w['vs_pool'] >= VS_POOL)}] warmd, 1 GiB round trip at least {VS_POOL:g}x "
                       f"ProcessPoolExecutor: {w['vs_pool']:.2f}x")
    if e:
        out.append(f"- [{mark(e['gib_s'] >= EMPTY_GIB_PER_S)}] warmd.empty, 1 GiB round trip at least "
                   f"{EMPTY_GIB_PER_S:g} GiB/s: {e['gib_s']:.2f} GiB/s")
    for r in (w, e):
        if r:
            out.append(f"- [{mark(r['daemon_rss_mib'] < RSS_MIB)}] {r['peer']}: daemon RSS growth under "
                       f"{RSS_MIB:g} MiB during the 1 GiB transfer: {r['daemon_rss_mib']:.1f} MiB")
    return out or ["- (no 1024 MiB rows)"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1,64,1024", help="array sizes in MiB, comma-separated")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-ray", action="store_true", help="leave Ray out even when it is installed")
    args = p.parse_args()
    rows = arrays({"array_sizes_mib": [float(s) for s in args.sizes.split(",")],
                   "array_rounds": args.rounds, "array_ray": not args.no_ray},
                  lambda m: print(m, file=sys.stderr, flush=True))
    print("GiB/s = array size ÷ round-trip wall (bytes counted once); median of "
          f"{args.rounds} interleaved rounds\n")
    print("| MiB | peer | GiB/s | ÷ PPE | wall ms (min) | reading the result once, ms | release ms "
          "| daemon RSS +MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        rss = f"{r['daemon_rss_mib']:.1f}" if "daemon_rss_mib" in r else "-"
        release = f"{r['release_ms']:.1f}" if "release_ms" in r else "-"
        print(f"| {r['mib']:g} | {r['peer']} | {r['gib_s']:.2f} | {r['vs_pool']:.2f}x | "
              f"{r['wall_ms']:,.1f} ({r['min_ms']:,.1f}) | {r['touch_ms']:.1f} | {release} | {rss} |")
    print()
    print("\n".join(targets(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
