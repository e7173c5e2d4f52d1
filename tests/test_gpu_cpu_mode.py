"""GPU support without a GPU: CPU mode for real, and the GPU paths against a fake cupy.

CPU mode is what this machine (and CI) really runs: no cupy, or workers.devices
= "none". The GPU code paths (pinning, warm-up steps, per-job pool figures,
memory policies, recycling) run against tests/fake_cupy, a stand-in that
counts bytes like cupy's pool; what only a real device can show is in
tests/gpu/.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import warmd
from warmd.errors import RequestFailed

from helpers_fakegpu import FAKE_CUPY, fake_gpu_daemon, wait_warm

TESTS = Path(__file__).resolve().parent
PLATE = TESTS.parent / "examples" / "plate"
MiB = 1024**2

CPU = '[workers]\ndevices = "none"\n'  # CPU mode even where cupy is installed


# ---------------------------------------------------------------- jobs (run in workers)

def where_am_i():
    import os
    xp = warmd.xp()
    return {"device": warmd.device(), "xp": xp.__name__, "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "pid": os.getpid()}


def physical_device():
    import cupy
    return {"device": warmd.device(), "pci": cupy.cuda.runtime.getDeviceProperties(0)["pciBusID"],
            "count": cupy.cuda.runtime.getDeviceCount(), "pid": os.getpid(),
            "context_at_start": cupy.cuda.driver.ctxGetCurrent() != 0}


def allocate(nbytes, keep=False):
    """Hold ``nbytes`` of device memory during the job; with ``keep``, after it too (a leak)."""
    import cupy
    block = cupy.empty(nbytes, dtype=cupy.uint8)
    if keep:
        LEAKED.append(block)
    return os.getpid()


LEAKED: list = []  # a job that appends here leaks on purpose: the module stays loaded in the worker


def raise_cuda_error(wrapped=False):
    import cupy
    error = cupy.cuda.runtime.CUDARuntimeError(700)
    if wrapped:
        raise RuntimeError("the well could not be analysed") from error
    raise error


def poison_then_succeed():
    import cupy
    cupy.cuda.runtime._fake_poison()  # as after an illegal address in an asynchronous kernel
    return os.getpid()


def plain_failure():
    raise ValueError("not a CUDA problem")


# ---------------------------------------------------------------- helpers

def start_daemon_expecting_failure(tmp_path: Path, config: str, env: dict | None = None):
    cfg = tmp_path / "warmd.toml"
    cfg.write_text(config)
    return subprocess.run([sys.executable, "-m", "warmd", "--config", str(cfg), "--socket",
                           str(tmp_path / "s.sock")], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def fake_env(devices: int = 1, memory: int | None = None) -> dict:
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(FAKE_CUPY), os.environ.get("PYTHONPATH")])),
           "FAKE_CUPY_DEVICES": str(devices)}
    if memory is not None:
        env["FAKE_CUPY_MEMORY"] = str(memory)
    return env


# ---------------------------------------------------------------- CPU mode, for real

def test_plate_pipeline_gives_the_same_numbers_on_a_worker_as_in_process(make_daemon, monkeypatch):
    monkeypatch.syspath_prepend(str(PLATE))
    import pipeline
    d = make_daemon(CPU)
    local = pipeline.run(wells=3, size=96, seed=4)
    with d.client() as client:
        remote = client.submit(pipeline.run, wells=3, size=96, seed=4).result(timeout=60)
        seen = client.submit(where_am_i).result(timeout=30)
    assert remote["wells"] == local["wells"]
    assert any(w["nuclei"] for w in remote["wells"])
    assert remote["device"] is None and local["device"] is None
    assert seen["device"] is None and seen["xp"] == "numpy"


def test_outside_a_worker_xp_is_numpy_and_device_is_none():
    assert warmd.xp().__name__ == "numpy" and warmd.device() is None
    code = "import sys, warmd, warmd.gpu, warmd.gpu.inventory, warmd.daemon.main, warmd.worker.main; " \
           "warmd.xp(); print('cupy' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=fake_env())  # even with a cupy importable, importing warmd loads none
    assert r.stdout.strip() == "False", r.stderr


def test_cpu_status_reports_zero_devices(make_daemon):
    d = make_daemon(CPU)
    with d.client() as client:
        status = wait_warm(client, 1)
        done = client.submit(where_am_i)
        done.result(timeout=30)
        info = done.finished.info
    assert status.devices == [] and status.capacity["mode"] == "cpu"
    assert "(CPU)" in status.summary
    assert all(w.device is None and "gpu" not in w.extra for w in status.workers)
    assert not any(s["step"].startswith("gpu") for w in status.workers for s in w.warmup_steps)
    assert info["device"] is None and "gpu" not in info
    r = d.warmctl("status", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["devices"] == []
    text = d.warmctl("status").stdout
    assert "(CPU)" in text and "devices:" not in text


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="cupy is installed here")
def test_without_cupy_all_means_cpu_mode_and_no_probe_runs(monkeypatch, make_daemon):
    from warmd.gpu import inventory

    def no_subprocess(*args, **kwargs):
        raise AssertionError("the GPU probe started a process although cupy is absent")

    monkeypatch.setattr(inventory.subprocess, "run", no_subprocess)
    assert inventory.probe() == ([], "cupy is not installed (pip install 'warmd[gpu]')")
    assert inventory.plan_devices("all") == []
    d = make_daemon("")  # the default, workers.devices = "all"
    with d.client() as client:
        assert wait_warm(client, 1).devices == []
    assert "running in CPU mode: cupy is not installed" in d.log_text()


def test_devices_none_skips_the_probe(monkeypatch):
    from warmd.gpu import inventory
    monkeypatch.setattr(inventory, "probe", lambda *a, **k: pytest.fail("probe ran for devices = none"))
    assert inventory.plan_devices("none") == []


def test_asking_a_cpu_daemon_for_a_device_is_a_clear_error(make_daemon):
    d = make_daemon(CPU)
    r = d.warmctl("submit", "--device", "0", "-c", "print('never')")
    assert r.returncode != 0
    assert "warmctl: device 0 requested, but this daemon runs in CPU mode" in r.stderr
    assert "Traceback" not in r.stderr
    with d.client() as client:
        with pytest.raises(RequestFailed, match="CPU mode"):
            client.submit_call(where_am_i, device=0).result(timeout=30)
        with pytest.raises(RequestFailed, match="CPU mode"):
            client.run_code("pass", device=1).result(timeout=30)
    with d.client(device=0) as pinned:  # the Client-wide default goes the same way
        with pytest.raises(RequestFailed, match="CPU mode"):
            pinned.submit(where_am_i).result(timeout=30)
    with d.client() as client:
        assert client.submit(where_am_i).result(timeout=30)["device"] is None  # still serving


def test_warmctl_exec_on_a_device_of_a_cpu_daemon_is_a_clear_error(make_daemon):
    d = make_daemon(CPU)
    r = d.warmctl("exec", "--device", "0", "-c", "print('never')")
    assert r.returncode != 0 and "never" not in r.stdout
    assert "warmctl: device 0 requested, but this daemon runs in CPU mode" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("setting, expected", [
    ("gpu_memory_limit = 1.5", "workers.gpu_memory_limit: a fraction must lie in (0, 1]"),
    ('gpu_memory_limit = "-3"', "workers.gpu_memory_limit"),
    ('gpu_memory_limit = "1.5"', 'workers.gpu_memory_limit: expected a size such as'),
    ("gpu_memory_limit = -3", "workers.gpu_memory_limit"),
    ("gpu_memory_limit = 1", "workers.gpu_memory_limit: 1 bytes is too small"),
    ('gpu_memory_policy = "sometimes"', "workers.gpu_memory_policy"),
    ('gpu_recycle_bytes = "lots"', "workers.gpu_recycle_bytes"),
    ("workers_per_device = 0", "workers.workers_per_device"),
    ("devices = [0]", "workers.devices: device 0 requested, but 0 device(s) are visible"),
])
def test_bad_gpu_settings_stop_the_daemon_with_a_message_naming_the_key(tmp_path, setting, expected):
    env = {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    if "devices = [0]" in setting and importlib.util.find_spec("cupy") is not None:
        pytest.skip("a real cupy is installed: device 0 may exist")
    r = start_daemon_expecting_failure(tmp_path, f"[workers]\n{setting}\n", env)
    assert r.returncode == 78, r.stderr
    assert expected in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("setting, expected", [
    ("devices = [3]", "workers.devices: device 3 requested, but 1 device(s) are visible"),
    ("devices = [0, 1]", "workers.devices: device 1 requested, but 1 device(s) are visible"),
    ('gpu_memory_limit = "2GiB"', "workers.gpu_memory_limit: 2147483648 bytes is more than GPU0"),
])
def test_settings_that_do_not_fit_the_devices_found_stop_the_daemon(tmp_path, setting, expected):
    r = start_daemon_expecting_failure(tmp_path, f"[workers]\n{setting}\n", fake_env(1, 1024**3))
    assert r.returncode == 78, r.stderr
    assert expected in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_cuda_visible_devices_narrows_what_the_daemon_sees(tmp_path):
    env = {**fake_env(4), "CUDA_VISIBLE_DEVICES": "2"}
    r = start_daemon_expecting_failure(tmp_path, "[workers]\ndevices = [1]\n", env)
    assert r.returncode == 78 and "1 device(s) are visible" in r.stderr
    assert "CUDA_VISIBLE_DEVICES='2'" in r.stderr


# ---------------------------------------------------------------- GPU paths, fake cupy

def test_workers_are_pinned_one_per_device_and_status_shows_them(make_daemon):
    d = fake_gpu_daemon(make_daemon, "[workers]\nspares = 0\n", devices=2)
    with d.client() as client:
        status = wait_warm(client, 2)
        on1 = client.submit_call(physical_device, device=1).result(timeout=30)
        on0 = client.submit_call(physical_device, device=0).result(timeout=30)
        anywhere = client.submit(where_am_i).result(timeout=30)
    assert [x["index"] for x in status.devices] == [0, 1]
    assert status.capacity["mode"] == "gpu" and "(GPU0, GPU1)" in status.summary
    assert sorted(w.device for w in status.workers) == [0, 1]
    for w in status.workers:
        steps = [s["step"] for s in w.warmup_steps]
        assert steps[:4] == ["gpu import cupy", "gpu create context", "gpu memory limit",
                             "gpu first kernel"]
        assert w.extra["gpu"]["device"] == w.device and w.extra["gpu"]["policy"] == "keep"
    # each worker sees exactly one device: the one it is pinned to, as its device 0
    assert on1["device"] == 1 and on1["pci"] == 1 and on1["count"] == 1
    assert on0["device"] == 0 and on0["pci"] == 0 and on0["count"] == 1
    assert on0["context_at_start"] and on1["context_at_start"]  # warm-up made it
    assert anywhere["xp"] == "cupy" and anywhere["device"] in (0, 1)
    assert anywhere["visible"] == str(anywhere["device"])
    text = d.warmctl("status").stdout
    assert "devices: GPU0 Fake GPU 0" in text and "gpu1" in text


def device_arrays():
    import cupy
    return {"plain": cupy.arange(6), "nested": [cupy.ones((2, 3)), ("x", cupy.zeros(2))]}


def test_a_gpu_array_in_a_result_comes_back_as_a_host_array(make_daemon):
    import numpy as np

    d = fake_gpu_daemon(make_daemon, "[workers]\nspares = 0\n")
    with d.client() as client:  # this process has no cupy: the fake is only on the workers' path
        result = client.submit(device_arrays).result(timeout=30)
    assert "cupy" not in sys.modules
    assert isinstance(result["plain"], np.ndarray) and result["plain"].tolist() == list(range(6))
    ones, (label, zeros) = result["nested"]
    assert isinstance(ones, np.ndarray) and ones.shape == (2, 3) and ones.sum() == 6
    assert label == "x" and isinstance(zeros, np.ndarray) and zeros.tolist() == [0, 0]
    assert ones.flags.writeable


def test_each_job_reports_its_peak_and_the_memory_goes_back_to_the_pool(make_daemon):
    # debug: outside the journal a succeeded job's end is logged at debug level
    d = fake_gpu_daemon(make_daemon, '[daemon]\nlog_level = "debug"\n[workers]\nspares = 0\n')
    with d.client() as client:
        big = client.submit(allocate, 8 * MiB)
        pid = big.result(timeout=30)
        small = client.submit(allocate, 1 * MiB)
        assert small.result(timeout=30) == pid  # kept: same warm worker
    g1, g2 = big.finished.info["gpu"], small.finished.info["gpu"]
    assert g1["device"] == 0 and g1["policy"] == "keep" and g1["action"] == "kept"
    assert g1["peak_tracked"] and g1["peak_bytes"] >= 8 * MiB
    assert g1["used_bytes_after"] == g1["used_bytes_before"]  # the job's block is back in the pool
    assert g1["pool_bytes_after"] >= 8 * MiB  # ... and cached there, for the next job
    # the high-water mark is per job: the second job's peak is its own, not the first's
    assert 1 * MiB <= g2["peak_bytes"] < 8 * MiB
    assert g2["pool_bytes_before"] == g1["pool_bytes_after"]
    r = d.warmctl("wait", big.job_id, "--json")
    assert json.loads(r.stdout)["gpu"]["peak_bytes"] == g1["peak_bytes"]
    assert f"job {big.job_id} succeeded" in d.log_text()
    finished = next(line for line in d.log_text().splitlines() if f"job {big.job_id} succeeded" in line)
    assert "device=0" in finished and f"gpu_peak_bytes={g1['peak_bytes']}" in finished


def test_policy_free_empties_the_pool_after_each_job(make_daemon):
    d = fake_gpu_daemon(make_daemon, '[workers]\nspares = 0\ngpu_memory_policy = "free"\n')
    with d.client() as client:
        future = client.submit(allocate, 8 * MiB)
        pid = future.result(timeout=30)
        assert client.submit(allocate, 1).result(timeout=30) == pid
    gpu = future.finished.info["gpu"]
    assert gpu["action"] == "freed" and gpu["freed_bytes"] >= 8 * MiB
    assert gpu["pool_bytes_after"] == gpu["used_bytes_after"]


def test_policy_recycle_replaces_the_worker_after_every_job(make_daemon):
    d = fake_gpu_daemon(make_daemon, '[workers]\nspares = 0\ngpu_memory_policy = "recycle"\n')
    with d.client() as client:
        first = client.submit(allocate, 1024)
        pid = first.result(timeout=30)
        assert client.submit(allocate, 1024).result(timeout=30) != pid
    assert first.finished.info["gpu"]["action"] == "recycle"
    assert f"recycling worker pid {pid}: workers.gpu_memory_policy" in d.log_text()


def test_a_pool_over_gpu_recycle_bytes_gets_its_worker_recycled(make_daemon):
    d = fake_gpu_daemon(make_daemon, '[workers]\nspares = 0\ngpu_recycle_bytes = "4MiB"\n')
    with d.client() as client:
        small = client.submit(allocate, 1 * MiB)
        pid = small.result(timeout=30)
        big = client.submit(allocate, 8 * MiB)
        assert big.result(timeout=30) == pid  # the small one did not trigger it
        leak = client.submit(allocate, 1 * MiB)  # on a fresh worker, with a small pool
        new_pid = leak.result(timeout=30)
    assert new_pid != pid
    assert small.finished.info["gpu"]["action"] == "kept"
    reason = big.finished.info["gpu"]["recycle"]
    assert "workers.gpu_recycle_bytes" in reason and "peak" in reason


def test_free_policy_recycles_a_worker_whose_job_leaked_device_memory(make_daemon):
    d = fake_gpu_daemon(make_daemon, '[workers]\nspares = 0\ngpu_memory_policy = "free"\n'
                                     'gpu_recycle_bytes = "4MiB"\n')
    with d.client() as client:
        leaky = client.submit(allocate, 6 * MiB, keep=True)
        pid = leaky.result(timeout=30)
        assert client.submit(allocate, 1024).result(timeout=30) != pid
    gpu = leaky.finished.info["gpu"]
    assert gpu["used_bytes_after"] >= 6 * MiB and gpu["action"] == "recycle"
    assert "peak" in gpu["recycle"] or "holds" in gpu["recycle"]


@pytest.mark.parametrize("job, args, field", [
    (raise_cuda_error, (), "cuda_error"),
    (raise_cuda_error, (True,), "cuda_error"),       # wrapped in the job's own exception
    (poison_then_succeed, (), "device_error"),       # a sticky error surfacing at the sync
])
def test_a_cuda_error_gets_the_worker_recycled(make_daemon, job, args, field):
    d = fake_gpu_daemon(make_daemon, "[workers]\nspares = 0\n")
    with d.client() as client:
        pid = client.submit(allocate, 1024).result(timeout=30)
        future = client.submit(job, *args)
        try:
            future.result(timeout=30)
        except Exception:
            pass
        after = client.submit(allocate, 1024).result(timeout=30)
    gpu = future.finished.info["gpu"]
    assert gpu["action"] == "recycle" and field in gpu
    assert "CUDA context may be unusable" in gpu["recycle"]
    assert after != pid
    assert f"recycling worker pid {pid}" in d.log_text()


def test_an_ordinary_failure_keeps_the_worker(make_daemon):
    d = fake_gpu_daemon(make_daemon, "[workers]\nspares = 0\n")
    with d.client() as client:
        pid = client.submit(allocate, 1024).result(timeout=30)
        failing = client.submit(plain_failure)
        with pytest.raises(ValueError):
            failing.result(timeout=30)
        assert client.submit(allocate, 1024).result(timeout=30) == pid
    assert failing.finished.info["gpu"]["action"] == "kept"


def test_memory_limit_caps_the_pool(make_daemon):
    d = fake_gpu_daemon(make_daemon, "[workers]\nspares = 0\ngpu_memory_limit = 0.25\n", memory=64 * MiB)
    with d.client() as client:
        status = wait_warm(client, 1)
        too_big = client.submit(allocate, 32 * MiB)
        # cupy's OutOfMemoryError; a RemoteError here, where the client has no cupy to rebuild it
        with pytest.raises(Exception, match="OutOfMemoryError: Out of memory"):
            too_big.result(timeout=30)
        assert client.submit(allocate, 8 * MiB).result(timeout=30)
    gpu = status.workers[0].extra["gpu"]
    assert gpu["memory_limit"] == 16 * MiB and gpu["memory_limit_setting"] == 0.25
    assert too_big.finished.info["gpu"]["action"] == "kept"  # out of memory is no CUDA fault


def test_a_device_that_fails_its_first_kernel_fails_warm_up_clearly(make_daemon):
    d = fake_gpu_daemon(make_daemon, "[workers]\nspares = 0\n", FAKE_CUPY_BROKEN="1")
    with d.client() as client:
        deadline = time.monotonic() + 30
        while not client.status().warmup_error and time.monotonic() < deadline:
            time.sleep(0.05)
        status = client.status()
        with pytest.raises(Exception, match="gpu first kernel"):
            client.submit(where_am_i).result(timeout=30)
    assert "warm-up failed at gpu first kernel" in status.warmup_error
    assert "the device computed" in status.warmup_error


def test_cuda_errors_are_told_from_other_errors_by_name_and_cause():
    from warmd.gpu.errors import cuda_error_in
    runtime_error = "cupy_backends.cuda.api.runtime.CUDARuntimeError"
    assert cuda_error_in({"type": runtime_error, "traceback": ""}) == runtime_error
    assert cuda_error_in({"type": "cupy.cuda.cufft.CuFFTError"}) == "cupy.cuda.cufft.CuFFTError"
    chained = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
               "cupy_backends.cuda.libs.cublas.CUBLASError: CUBLAS_STATUS_EXECUTION_FAILED\n\n"
               "The above exception was the direct cause of the following exception:\n\n"
               "Traceback (most recent call last):\n  File \"x.py\", line 3, in g\n"
               "helpers.PipelineError: well B03 failed\n")
    assert cuda_error_in({"type": "helpers.PipelineError", "traceback": chained}).endswith("CUBLASError")
    for other in ("ValueError", "cupy.cuda.memory.OutOfMemoryError", "cupy.cuda.compiler.CompileException",
                  "mylib.CUDARuntimeError"):
        assert cuda_error_in({"type": other, "traceback": f"{other}: no"}) is None, other
    assert cuda_error_in(None) is None


class _Pool:
    """Just enough of a cupy pool for PeakTracker: blocks in use, by id."""

    def __init__(self):
        self.blocks = {}

    def used_bytes(self):
        self.samples += 1
        return sum(self.blocks.values())

    samples = 0


class _Cuda:
    def __init__(self, pool):
        self.pool, self.allocator = pool, self.malloc

    def malloc(self, size):
        mem = type("Mem", (), {"size": size})()
        self.pool.blocks[id(mem)] = size
        return type("Ptr", (), {"mem": mem})()

    def get_allocator(self):
        return self.allocator

    def set_allocator(self, allocator):
        self.allocator = allocator


def test_peak_tracker_sees_the_exact_peak_while_sampling_rarely():
    import random
    from warmd.gpu.memory import PeakTracker
    pool = _Pool()
    cuda = _Cuda(pool)
    tracker = PeakTracker(cuda, pool)
    rng = random.Random(7)
    allocations = 0
    for job in range(20):
        tracker.start()
        live, peak = [], sum(pool.blocks.values())
        for _ in range(500):
            if live and rng.random() < 0.5:
                del pool.blocks[id(live.pop(rng.randrange(len(live))).mem)]
            else:
                live.append(cuda.get_allocator()(rng.choice([512, 4096, 1 << 20])))
                allocations += 1
                peak = max(peak, sum(pool.blocks.values()))
        assert tracker.stop() == (peak, True), job
        for ptr in live:
            del pool.blocks[id(ptr.mem)]
    assert pool.samples < allocations / 2  # far fewer samples than allocations (about 1 in 4 here)
    cuda.set_allocator(cuda.malloc)  # a job replacing the allocator: reported, then undone
    tracker.start()
    cuda.set_allocator(cuda.malloc)
    assert tracker.stop()[1] is False and cuda.get_allocator() is tracker


def test_gpu_code_needs_no_device_to_import():
    code = "import sys; from warmd.gpu import errors, memory, options, worker; print('cupy' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, **fake_env()})  # a fresh process: even with cupy importable
    assert r.stdout.strip() == "False", r.stderr


def large_device_arrays(n):
    import cupy
    import numpy as np
    return {"image": cupy.asarray(np.arange(n, dtype=np.float32)), "scale": 2}


def test_device_arrays_in_a_result_come_back_as_host_arrays_in_memfds(make_daemon):
    import numpy as np

    d = fake_gpu_daemon(make_daemon, "[workers]\nspares = 0\n")
    with d.client() as client:
        job = client.submit(large_device_arrays, 1 << 20)  # 4 MiB on the (fake) device
        result = job.result(timeout=60)
    image = result["image"]
    assert type(image) is np.ndarray and image[:3].tolist() == [0.0, 1.0, 2.0]
    assert image.flags.writeable and result["scale"] == 2
    assert job.finished.info["buffers"] == [[0, 0, image.nbytes]]  # copied to the host, once
