"""The screenshot of ``warmctl top`` in the docs (docs/top.svg), made against a real daemon.

    .venv/bin/python bench/top_screenshot.py [--out docs/top.svg]

It starts a private daemon with four workers and gives it a few jobs: one that
succeeded, one that failed, a group of six wells reporting progress (one done, three
running, two queued) and a training run printing its epochs, which the app follows.
The running jobs wait on a file until the screen is saved, so what it shows does not
depend on timing; the script then lets them end and stops the daemon.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from warmd.aio import AsyncClient
from warmd.client import jobspec
from warmd.ctl.topapp import TopApp
from warmd.testing import LocalDaemon

REPO = Path(__file__).resolve().parent.parent

WELL = """
import os, sys, time, warmd
gate, share = sys.argv[1], float(sys.argv[2])
for i in range(1, int(20 * share) + 1):
    warmd.progress(i, 20, "segmenting")
    time.sleep(0.01)
while share < 1 and not os.path.exists(gate):
    time.sleep(0.02)
"""

TRAIN = """
import os, sys, time, warmd
for epoch in range(1, 8):
    print(f"epoch {epoch}/20  loss {1.9 / epoch:.4f}  accuracy {1 - 0.5 / epoch:.3f}", flush=True)
    warmd.progress(epoch, 20, "training")
    time.sleep(0.01)
print("checkpoint saved to /data/runs/resnet/epoch-0007.pt", file=sys.stderr, flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.02)
"""


def named(request: jobspec.JobRequest, name: str) -> jobspec.JobRequest:
    return request.with_options(jobspec.JobOptions(name=name))


async def until(pilot, condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"top_screenshot: timed out waiting for {what}")
        await pilot.pause(0.05)


async def shoot(daemon: LocalDaemon, gate: Path, out: Path) -> None:
    app = TopApp(daemon.socket, autostart=False)
    async with app.run_test(size=(118, 38)) as pilot:
        await until(pilot, lambda: app.connected, "the first snapshot")
        async with AsyncClient(daemon.socket, autostart=False) as client:
            ok = await client.run_code("print('ok')", name="check inputs")
            await ok.wait()
            bad = await client.run_code("raise ValueError('plate 11: no such file')", name="plate 11")
            await bad.wait()
            train = await client.run_code(TRAIN, [str(gate)], name="train resnet50")
            group = await client.group("plate 12")
            wells = [await group.submit_job(named(jobspec.code(WELL, [str(gate), str(share)]), f"well B{i}"))
                     for i, share in enumerate((1.0, 0.8, 0.45, 0.25, 0.0, 0.0), 1)]
            await group.close()
            busy = {wells[1].id, wells[2].id, wells[3].id, train.id}
            await until(pilot, lambda: all(app.model.jobs.get(j) and app.model.jobs[j].progress
                                           for j in busy) and
                        app.model.jobs[wells[0].id].state == "succeeded", "the jobs under way")
            app.jobs_table.move_cursor(row=app.jobs_table.get_row_index(train.id))
            await pilot.press("enter")
            await until(pilot, lambda: any("checkpoint" in line for line in app.pane.plain), "the output")
            await pilot.pause(0.2)
            app.save_screenshot(out.name, str(out.parent))
            gate.touch()
            await train.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "top.svg")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="top-", dir="/tmp"))
    with LocalDaemon(root, "[workers]\ncount = 4\nspares = 0\n", remove_root=True) as daemon:
        asyncio.run(shoot(daemon, root / "gate", args.out.resolve()))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
