"""examples/openhcs against a real daemon: OpenHCS plates on warm warmd workers.

They need OpenHCS, which warmd never depends on: ``make test-openhcs`` makes its
environment (bench/openhcs/.venv) and runs them there. Elsewhere they skip, saying so. One daemon (examples/openhcs/warmd.toml, 3 workers that
each warm up for about 10 s) serves the whole module; each test gets its own plate.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.openhcs, pytest.mark.slow]
pytest.importorskip("openhcs", reason="needs OpenHCS: 'make test-openhcs' runs these in its own environment")

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "openhcs"
sys.path.insert(0, str(EXAMPLE))
os.environ.setdefault("OPENHCS_CPU_ONLY", "true")

import warmd  # noqa: E402
from warmd.client.info import family  # noqa: E402
from warmd.testing import LocalDaemon  # noqa: E402

import driver  # noqa: E402
import pipeline  # noqa: E402


@pytest.fixture(scope="module")
def daemon():
    root = Path(tempfile.mkdtemp(prefix="oht-", dir="/tmp"))  # short: the socket lives here
    d = LocalDaemon(root, (EXAMPLE / "warmd.toml").read_text(), pythonpath=(EXAMPLE, root),
                    remove_root=True).start()
    d.wait_idle(3)
    yield d
    d.stop()


@pytest.fixture
def client(daemon):
    with daemon.client() as c:
        yield c


@pytest.fixture
def plate(tmp_path):
    return pipeline.make_plate(tmp_path / "plate", wells=4, grid=(2, 2), tile=128)


def pixels(plate: Path) -> dict[str, str]:
    import tifffile
    out = plate.parent / f"{plate.name}_openhcs" / "images"
    return {p.name: hashlib.sha256(tifffile.imread(p).tobytes()).hexdigest()
            for p in sorted(out.glob("*.tif"))}


def clean(plate: Path) -> None:
    shutil.rmtree(plate.parent / f"{plate.name}_openhcs", ignore_errors=True)


def test_plate_runs_warm(client, plate):
    """Two runs in one worker: both succeed, the second pays no import or registry build
    (it reuses the warm worker, and takes a fraction of a worker's warm-up)."""
    warmups = {w.pid: w.warmup_seconds for w in client.status().workers}
    walls, pids = [], []
    for _ in range(2):
        clean(plate)
        start = time.perf_counter()
        summary = client.submit_call(driver.run_plate, (str(plate),), {"fan_out": False}).result()
        walls.append(time.perf_counter() - start)
        pids.append(summary["worker_pid"])
        assert set(summary["wells"]) == {"A01", "A02", "A03", "A04"}
        assert len(pixels(plate)) == 16
    assert all(pid in warmups for pid in pids), "a run went to a worker that was not warm"
    assert walls[1] < 0.5 * min(warmups.values()), (walls, warmups)


def test_fan_out_matches_single_worker_pixels(client, plate):
    """The wells fanned out over the workers write the very pixels one worker writes, and
    do run on more than one worker, each reporting structured per-well, per-step progress."""
    clean(plate)
    client.submit_call(driver.run_plate, (str(plate),), {"fan_out": False}).result()
    single = pixels(plate)
    clean(plate)
    run = client.submit_call(driver.run_plate, (str(plate),), {"fan_out": True})
    events = list(run.events())
    run.result()
    assert pixels(plate) == single and len(single) == 16
    wells = [j for j in family(client.jobs(), run.job_id) if j.kind == "call" and j.id != run.job_id]
    assert len(wells) == 4 and {j.state for j in wells} == {"succeeded"}
    assert len({j.worker_pid for j in wells}) >= 2, "the wells all ran on one worker"
    reports = [e.fields for e in events if isinstance(e, warmd.ChildProgress) and e.fields.get("step")]
    assert {f["well"] for f in reports} == {"A01", "A02", "A03", "A04"}
    assert {f["step"] for f in reports} >= set(pipeline.STEP_NAMES)


def test_cancel_leaves_nothing_behind(client, daemon, plate):
    """Cancel a fan-out once a well reports a step: the run, its group and every well end
    cancelled, no job runs or waits, no process is left over, and the next run works."""
    clean(plate)
    workers = {w.pid for w in client.status().workers}
    run = client.submit_call(driver.run_plate, (str(plate),), {"fan_out": True})
    for event in run.events():
        if isinstance(event, warmd.ChildProgress) and event.fields.get("phase") == "step_started":
            break
    assert run.cancel() is True  # it returns once the run's processes are gone
    jobs = client.jobs()
    assert {j.state for j in family(jobs, run.job_id)} == {"cancelled"}
    assert not [j for j in jobs if j.state in ("queued", "running")]
    left = {p.pid for p in daemon.descendants()}
    assert left <= workers | {w.pid for w in client.status().workers}, "a process outlived its job"
    clean(plate)
    assert client.submit_call(driver.run_plate, (str(plate),), {"fan_out": True}).result()["wells"]


def test_edited_step_function_runs_new_code(tmp_path):
    """A user module with an OpenHCS step function, edited between two runs on one warm
    worker: the second run uses the new function. (hook.code_changed drops the registry's
    resolved reference to it; without that callback the old function runs.)"""
    source = textwrap.dedent("""
        from openhcs.core.memory import numpy as numpy_func

        @numpy_func
        def scale(image):
            return image * {factor}

        def run(plate):
            import glob, shutil, tifffile, hook, openhcs_glue
            from openhcs.core.steps.function_step import FunctionStep
            shutil.rmtree(plate + "_openhcs", ignore_errors=True)
            compiled = openhcs_glue.compile_plate(plate, [FunctionStep(func=scale, name="scale")])
            openhcs_glue.run_plate_inline(compiled)
            first = sorted(glob.glob(plate + "_openhcs/images/*.tif"))[0]
            return float(tifffile.imread(first).mean()), [sorted(n) for n, _ in hook.code_changes]
    """)
    plate = str(pipeline.make_plate(tmp_path / "tiny", wells=1, grid=(1, 1), tile=64))
    root = Path(tempfile.mkdtemp(prefix="ohc-", dir="/tmp"))
    config = (EXAMPLE / "warmd.toml").read_text().replace("count = 3", "count = 1")
    module = tmp_path / "edited_step.py"
    sys.path.insert(0, str(tmp_path))
    results = []
    try:
        with LocalDaemon(root, config, pythonpath=(EXAMPLE,), remove_root=True) as d, \
                d.client() as client:
            for factor in (1, 2):
                module.write_text(source.format(factor=factor))
                os.utime(module, (time.time() + factor,) * 2)  # a new mtime: read again
                sys.modules.pop("edited_step", None)
                import edited_step
                results.append(client.submit(edited_step.run, plate).result())
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("edited_step", None)
    (once, no_change), (twice, changes) = results
    assert no_change == [] and changes == [["edited_step"]]
    assert twice == pytest.approx(2 * once, rel=1e-3)
