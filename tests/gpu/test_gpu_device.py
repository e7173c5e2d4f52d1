"""On a real NVIDIA GPU with cupy: pinning, warm contexts, pool hygiene, recycling after CUDA errors.

Skipped, with the reason, where no GPU or no cupy is visible. The visibility
check runs warmd's own probe (a separate process), so this test process never
creates a CUDA context of its own. Figures such as the time to a job's first
kernel are recorded (``record_property``, and printed with ``-s``), never
asserted against a clock.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from warmd.gpu.inventory import probe

from gpu_jobs import allocate, device_result, first_kernel, illegal_address, invalid_device, pinned_device

MiB = 1024**2
PLATE = Path(__file__).resolve().parents[2] / "examples" / "plate"


def _no_gpu_reason() -> str | None:
    found, why = probe()
    return None if found else f"no GPU visible to cupy: {why or 'no device'}"


_SKIP = _no_gpu_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")]


# ---------------------------------------------------------------- tests

def test_a_job_sees_its_pinned_device(make_daemon):
    d = make_daemon("[workers]\nspares = 0\n")
    with d.client() as client:
        devices = client.status().devices
        seen = [client.submit_call(pinned_device, device=dev["index"]).result(timeout=120)
                for dev in devices]
    for dev, job in zip(devices, seen):
        assert job["device"] == dev["index"] and job["count"] == 1 and job["xp"] == "cupy"
        if dev["uuid"]:
            assert job["uuid"] == dev["uuid"]  # the very card the daemon's probe listed


def test_a_second_job_on_the_same_worker_skips_context_creation(make_daemon, record_property):
    d = make_daemon("[workers]\nspares = 0\ndevices = [0]\n")
    with d.client() as client:
        first = client.submit(first_kernel)
        a = first.result(timeout=120)
        second = client.submit(first_kernel)
        b = second.result(timeout=120)
        worker = next(w for w in client.status().workers if w.pid == a["pid"])
    assert a["pid"] == b["pid"] and first.finished.token == second.finished.token
    assert a["had_context"] and b["had_context"]  # warm-up created it; no job pays for it
    assert a["value"] == b["value"]
    steps = {s["step"]: s["seconds"] for s in worker.warmup_steps}
    figures = {"warmup_create_context_s": steps["gpu create context"],
               "warmup_first_kernel_s": steps["gpu first kernel"],
               "job1_first_kernel_s": a["first_kernel_seconds"],
               "job2_first_kernel_s": b["first_kernel_seconds"]}
    for key, value in figures.items():
        record_property(key, value)
    print("GPU time to first kernel:", figures)


@pytest.mark.parametrize("policy", ["keep", "free"])
def test_memory_a_job_allocated_is_back_in_the_pool_after_it(make_daemon, policy):
    d = make_daemon(f'[workers]\nspares = 0\ndevices = [0]\ngpu_memory_policy = "{policy}"\n')
    with d.client() as client:
        future = client.submit(allocate, 256 * MiB)
        assert future.result(timeout=120) == 1024
    gpu = future.finished.info["gpu"]
    assert gpu["device"] == 0 and gpu["peak_tracked"]
    assert gpu["peak_bytes"] >= 256 * MiB
    assert gpu["used_bytes_after"] == gpu["used_bytes_before"]
    if policy == "keep":
        assert gpu["action"] == "kept" and gpu["pool_bytes_after"] >= 256 * MiB
    else:
        assert gpu["action"] == "freed" and gpu["freed_bytes"] >= 256 * MiB
        assert gpu["pool_bytes_after"] < 256 * MiB


@pytest.mark.parametrize("job", [illegal_address, invalid_device])
def test_a_job_that_triggers_a_cuda_error_gets_its_worker_recycled(make_daemon, job):
    d = make_daemon("[workers]\nspares = 0\ndevices = [0]\n")
    with d.client() as client:
        before = client.submit(first_kernel).result(timeout=120)["pid"]
        failing = client.submit(job)
        with pytest.raises(Exception):
            failing.result(timeout=120)
        after = client.submit(first_kernel).result(timeout=120)
    gpu = failing.finished.info["gpu"]
    assert gpu["action"] == "recycle" and "CUDA context may be unusable" in gpu["recycle"]
    assert after["pid"] != before and after["had_context"]  # a fresh, warm worker took over
    assert f"recycling worker pid {before}" in d.log_text()


def test_the_plate_pipeline_gives_the_cpu_numbers_on_the_gpu(make_daemon, monkeypatch, record_property):
    monkeypatch.syspath_prepend(str(PLATE))
    import pipeline
    local = pipeline.run(wells=3, size=96, seed=4)  # numpy: not in a worker
    d = make_daemon("[workers]\nspares = 0\ndevices = [0]\n")
    with d.client() as client:
        remote = client.submit(pipeline.run, wells=3, size=96, seed=4).result(timeout=120)
    assert remote["device"] == 0 and local["device"] is None
    # float32 filters on two libraries: identical counts, measurements to rounding
    assert [w["nuclei"] for w in remote["wells"]] == [w["nuclei"] for w in local["wells"]]
    for gpu, cpu in zip(remote["wells"], local["wells"]):
        assert gpu["mean_area"] == pytest.approx(cpu["mean_area"], rel=1e-3)
        assert gpu["intensity"] == pytest.approx(cpu["intensity"], rel=1e-3)
    record_property("plate_wells", remote["wells"])


def test_a_device_array_in_a_result_arrives_as_a_numpy_array(make_daemon):
    import numpy as np

    d = make_daemon("[workers]\nspares = 0\n")
    with d.client() as client:
        result = client.submit(device_result, 1 << 20).result(timeout=120)
    assert type(result) is np.ndarray and result.dtype == np.float32
    assert result[:3].tolist() == [0.0, 2.0, 4.0] and result.flags.writeable
