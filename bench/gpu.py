"""GPU: a small image filter in a cold process against the same job on a warm worker,
and the GPU's memory before, during and after jobs.

Needs an NVIDIA GPU and cupy (``pip install -e '.[gpu]'``, or '.[cuda13]'):

    .venv/bin/python bench/gpu.py --out bench/results/gpu.json

Cold: a fresh interpreter imports numpy and cupy, creates the CUDA context,
imports cupyx.scipy.ndimage and filters one image (Gaussian, then Sobel); its
first filter loads or compiles the kernels. Warm: the same function submitted
to a warmd worker whose warm-up did all that once (through a hook that filters
a tiny image), through one long-lived client and through a new client per job
(what a shell command or a GUI "Run" button pays). Memory: device use
(memGetInfo: every process on the card) and cupy's pool (in use / held) at the
start of a job, during it and after warmd's per-job hygiene, under the "keep"
and "free" policies.

This process never imports cupy, so it holds no context that would distort the
memory figures. The whole run stays within --budget seconds (default 270): a
phase that would start past it is skipped and says so. Without a GPU it prints
why and writes {"skipped": reason}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warmd.testing import LocalDaemon

if TYPE_CHECKING:
    from warmd.client.info import Status

BENCH = Path(__file__).resolve().parent
MiB = 1024**2


# ---------------------------------------------------------------- the job (cold process and worker)

def filter_job(size: int, sigma: float, seed: int = 0) -> dict[str, Any]:
    """Gaussian then Sobel on a size x size float32 image; timings and memory figures."""
    import time

    import cupy
    import cupyx.scipy.ndimage as ndi
    import numpy

    start = time.perf_counter()
    runtime, pool = cupy.cuda.runtime, cupy.get_default_memory_pool()
    free_before, total = runtime.memGetInfo()
    used_before, held_before = pool.used_bytes(), pool.total_bytes()
    host = numpy.random.default_rng(seed).random((size, size), dtype=numpy.float32)
    image = cupy.asarray(host)
    smooth = ndi.gaussian_filter(image, sigma)
    edges = ndi.sobel(smooth, axis=0)
    value = float(cupy.abs(edges).sum())  # float() copies the result back: the kernels are done
    free_during, _ = runtime.memGetInfo()
    used_during, held_during = pool.used_bytes(), pool.total_bytes()
    del image, smooth, edges
    return {"seconds": time.perf_counter() - start, "value": value, "pid": os.getpid(),
            "device_total": int(total), "device_free_before": int(free_before),
            "device_free_during": int(free_during), "pool_used_before": int(used_before),
            "pool_held_before": int(held_before), "pool_used_during": int(used_during),
            "pool_held_during": int(held_during)}


def warm_filter() -> None:
    """Warm-up hook (``gpu:warm_filter``): load every kernel the job uses, on a tiny image."""
    filter_job(64, 2.0)


_COLD = r"""
import json, sys, time
wall0, t0 = time.time(), time.perf_counter()
marks = {}
import numpy
marks["import numpy"] = time.perf_counter()
import cupy
marks["import cupy"] = time.perf_counter()
cupy.cuda.runtime.memGetInfo()
marks["create context"] = time.perf_counter()
import cupyx.scipy.ndimage
marks["import cupyx.scipy.ndimage"] = time.perf_counter()
sys.path.insert(0, sys.argv[1])
from gpu import filter_job
first = filter_job(int(sys.argv[2]), float(sys.argv[3]))
marks["first filter"] = time.perf_counter()
first_result_wall = time.time()
second = filter_job(int(sys.argv[2]), float(sys.argv[3]))
marks["second filter"] = time.perf_counter()
steps, last = {}, t0
for name, t in marks.items():
    steps[name] = t - last
    last = t
print(json.dumps({"steps": steps, "first_result_wall": first_result_wall, "first": first,
                  "second": second, "cupy": cupy.__version__}))
"""


# ---------------------------------------------------------------- measuring

class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def cold_runs(runs: int, size: int, sigma: float, visible: str, budget: Budget) -> list[dict[str, Any]]:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=visible)
    out = []
    for _ in range(runs):
        if budget.left() < 60:
            break
        spawned = time.time()
        proc = subprocess.run([sys.executable, "-c", _COLD, str(BENCH), str(size), str(sigma)],
                              capture_output=True, text=True, env=env, timeout=min(180, budget.left()))
        exited = time.time()
        if proc.returncode != 0:
            raise RuntimeError(f"cold run failed:\n{proc.stderr[-4000:]}")
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        data["spawn_to_first_result"] = data.pop("first_result_wall") - spawned
        data["process_wall"] = exited - spawned
        out.append(data)
    return out


class Daemon(LocalDaemon):
    """A private warmd daemon for the bench, on its own socket; stopped with SIGTERM."""

    def __init__(self, config: str) -> None:
        root = Path(tempfile.mkdtemp(prefix="wdgpu-", dir="/tmp"))
        super().__init__(root, config, ("--log-level", "warning"), pythonpath=(BENCH,),
                         remove_root=True)


def wait_warm(client: Any, timeout: float) -> Status:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.status()
        if status.warmup_error:
            raise RuntimeError(f"warm-up failed: {status.warmup_error}")
        if status.workers and all(w.state == "idle" for w in status.workers):
            return status
        time.sleep(0.1)
    raise RuntimeError("the worker did not warm up in time")


def warm_runs(policy: str, device: int, runs: int, size: int, sigma: float,
              budget: Budget) -> dict[str, Any]:
    import warmd

    config = (f'[workers]\nspares = 0\ndevices = [{device}]\ngpu_memory_policy = "{policy}"\n'
              '[warmup]\nimport = ["numpy", "cupy", "cupyx.scipy.ndimage"]\nhooks = ["gpu:warm_filter"]\n')
    daemon = Daemon(config).start()
    try:
        with warmd.Client(daemon.socket, autostart=False) as client:
            status = wait_warm(client, min(300, budget.left()))
            worker = status.workers[0]
            one_client, jobs = [], []
            for _ in range(runs):
                if budget.left() < 20:
                    break
                start = time.perf_counter()
                future = client.submit(filter_job, size, sigma)
                result = future.result(timeout=120)
                one_client.append(time.perf_counter() - start)
                jobs.append({"job": result, "gpu": future.finished.info.get("gpu", {})})
        new_client = []
        for _ in range(max(1, runs // 2)):
            if budget.left() < 20:
                break
            start = time.perf_counter()
            with warmd.Client(daemon.socket, autostart=False) as client:
                client.submit(filter_job, size, sigma).result(timeout=120)
            new_client.append(time.perf_counter() - start)
    finally:
        daemon.stop()
    return {"policy": policy, "warmup_seconds": worker.warmup_seconds,
            "warmup_steps": worker.warmup_steps, "worker_gpu": worker.extra.get("gpu", {}),
            "one_client": one_client, "new_client": new_client, "jobs": jobs}


# ---------------------------------------------------------------- reporting

def stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def fmt_time(seconds: float) -> str:
    return f"{seconds * 1e3:9.1f} ms" if seconds < 1 else f"{seconds:9.2f} s "


def print_report(result: dict[str, Any]) -> None:
    dev = result["device"]
    print(f"\nGPU bench: GPU{dev['index']} {dev['name']} ({dev['memory'] / 1024**3:.1f} GiB), "
          f"image {result['size']}x{result['size']} float32, Gaussian (sigma {result['sigma']}) + Sobel\n")
    rows: list[tuple[str, dict[str, float] | None]] = []
    cold = result["cold"]
    rows.append(("cold: spawn -> first result", stats([r["spawn_to_first_result"] for r in cold])))
    for step in (cold[0]["steps"] if cold else {}):
        rows.append((f"  {step}", stats([r["steps"][step] for r in cold])))
    for run in result["warm"]:
        p = run["policy"]
        rows.append((f"warm ({p}): one client, round trip", stats(run["one_client"])))
        rows.append((f"warm ({p}): new client per job", stats(run["new_client"])))
        rows.append((f"warm ({p}): filter inside the job", stats([j["job"]["seconds"] for j in run["jobs"]])))
    print(f"{'':42}{'median':>12}{'min':>12}{'max':>12}{'runs':>6}")
    for label, s in rows:
        if s is None:
            print(f"{label:42}{'skipped':>12}")
        else:
            print(f"{label:42}{fmt_time(s['median']):>12}{fmt_time(s['min']):>12}{fmt_time(s['max']):>12}"
                  f"{s['runs']:>6}")
    if result.get("speedup"):
        print(f"\ncold spawn -> first result / warm round trip (medians): {result['speedup']:.0f}x")
    for run in result["warm"]:
        steps = ", ".join(f"{s['step']} {s['seconds'] * 1e3:.0f} ms" for s in run["warmup_steps"])
        print(f"warm-up paid once ({run['policy']}): {run['warmup_seconds']:.2f} s ({steps})")
    print(f"\n{'GPU memory, MiB':42}{'device used':>12}{'pool used':>12}{'pool held':>12}")
    for label, m in result["memory"]:
        print(f"{label:42}" + "".join(f"{'-' if m.get(k) is None else format(m[k] / MiB, '.1f'):>12}"
                                      for k in ("device_used", "pool_used", "pool_held")))
    for note in result["notes"]:
        print(f"note: {note}")


def memory_rows(result: dict[str, Any]) -> list[tuple[str, dict[str, int | None]]]:
    rows = []
    for run in result["warm"]:
        if not run["jobs"]:
            continue
        first, last = run["jobs"][0], run["jobs"][-1]
        job, total = first["job"], first["job"]["device_total"]
        rows.append((f"{run['policy']}: warm worker, before its first job",
                     {"device_used": total - job["device_free_before"], "pool_used": job["pool_used_before"],
                      "pool_held": job["pool_held_before"]}))
        rows.append((f"{run['policy']}: during a job",
                     {"device_used": total - job["device_free_during"], "pool_used": job["pool_used_during"],
                      "pool_held": job["pool_held_during"]}))
        gpu = last["gpu"]
        free_after = gpu.get("device_free_bytes")
        rows.append((f"{run['policy']}: after a job (warmd's hygiene done)",
                     {"device_used": None if free_after is None else total - free_after,
                      "pool_used": gpu.get("used_bytes_after"), "pool_held": gpu.get("pool_bytes_after")}))
        rows.append((f"{run['policy']}: job's pool peak (warmd's figure)",
                     {"device_used": None, "pool_used": gpu.get("peak_bytes"), "pool_held": None}))
    for r in result["cold"][:1]:
        job = r["first"]
        rows.append(("cold process: during its first job",
                     {"device_used": job["device_total"] - job["device_free_during"],
                      "pool_used": job["pool_used_during"], "pool_held": job["pool_held_during"]}))
    return rows


def visible_id(device: int) -> str:
    """What CUDA_VISIBLE_DEVICES must say to show the daemon's device ``device`` alone."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [v.strip() for v in visible.split(",")][device] if visible else str(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="GPU: cold process vs warm warmd worker, and GPU memory around jobs")
    p.add_argument("--out", required=True, metavar="PATH", help="write the results here as JSON")
    p.add_argument("--device", type=int, default=0, metavar="N", help="GPU index as warmd numbers them")
    p.add_argument("--size", type=int, default=1024, help="image side in pixels (default 1024)")
    p.add_argument("--sigma", type=float, default=2.0)
    p.add_argument("--cold-runs", type=int, default=3)
    p.add_argument("--runs", type=int, default=20, help="warm jobs per policy")
    p.add_argument("--budget", type=float, default=270.0, metavar="SECONDS",
                   help="stop starting new phases after this long (default 270)")
    args = p.parse_args(argv)
    budget = Budget(args.budget)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    from warmd.gpu.inventory import probe
    found, why = probe()
    if args.device >= len(found):
        reason = f"no GPU {args.device} visible to cupy: {why or f'{len(found)} device(s) found'}"
        print(f"gpu bench skipped: {reason}")
        out.write_text(json.dumps({"skipped": reason}, indent=2) + "\n")
        return 0
    result: dict[str, Any] = {"device": found[args.device], "size": args.size, "sigma": args.sigma,
                              "machine": {"host": platform.node(), "python": platform.python_version(),
                                          "cpus": os.cpu_count()},
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "notes": []}
    # Cold first, with no daemon running: its figures see an otherwise idle card.
    result["cold"] = cold_runs(args.cold_runs, args.size, args.sigma, visible_id(args.device), budget)
    if result["cold"]:
        result["cupy"] = result["cold"][0]["cupy"]
        result["notes"].append("the first cold run may include compiling kernels into cupy's "
                               "on-disk cache; later cold runs load them from it")
    result["warm"] = []
    for policy in ("keep", "free"):
        if budget.left() < 60:
            result["notes"].append(f"warm runs with policy {policy} skipped: out of time budget")
            continue
        result["warm"].append(warm_runs(policy, args.device, args.runs, args.size, args.sigma, budget))
    cold_med = stats([r["spawn_to_first_result"] for r in result["cold"]])
    warm_med = stats(result["warm"][0]["one_client"]) if result["warm"] else None
    if cold_med and warm_med:
        result["speedup"] = cold_med["median"] / warm_med["median"]
    result["memory"] = memory_rows(result)
    result["notes"].append("device used = total - free from cudaMemGetInfo: every process on the card")
    result["seconds"] = round(args.budget - budget.left(), 1)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_report(result)
    print(f"\nwrote {out} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
