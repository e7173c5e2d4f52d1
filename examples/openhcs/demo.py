"""Run an OpenHCS synthetic plate through warmd: twice fanned out, once in one worker.

    bench/openhcs/.venv/bin/python examples/openhcs/demo.py [--wells 4] [--log-level info]

Starts a private daemon with this directory's warmd.toml (no systemd needed; it is
shut down at the end unless --keep), generates a plate with OpenHCS's own synthetic
generator, and prints each well's progress as the run reports it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wells", type=int, default=4)
    parser.add_argument("--log-level", default=None, help="the run's log level (default: warmd.toml's)")
    parser.add_argument("--plate", default=None, help="an existing plate directory instead")
    parser.add_argument("--keep", action="store_true", help="leave the daemon running")
    args = parser.parse_args()

    runtime = Path(tempfile.gettempdir()) / f"warmd-openhcs-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ["WARMD_SOCKET"] = str(runtime / "warmd.sock")
    os.environ["WARMD_CONFIG"] = str(HERE / "warmd.toml")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    os.environ.setdefault("OPENHCS_CPU_ONLY", "true")
    sys.path.insert(0, str(HERE))

    import warmd
    import driver
    import pipeline

    plate = Path(args.plate) if args.plate else pipeline.make_plate(runtime / "plate", wells=args.wells)
    with warmd.Client() as client:
        print(f"daemon pid {client.daemon_info['pid']} ({client.daemon_info['started_by']}), "
              f"socket {client.socket_path}")
        for label, fan_out in (("fan-out, first", True), ("fan-out, warm", True), ("one worker", False)):
            shutil.rmtree(plate.parent / f"{plate.name}_openhcs", ignore_errors=True)
            start = time.perf_counter()
            run = client.submit_call(driver.run_plate, (str(plate),), {"fan_out": fan_out},
                                     name=f"openhcs {label}", log_level=args.log_level)
            for event in run.events():
                if isinstance(event, warmd.ChildProgress) and event.fields.get("well"):
                    f = event.fields
                    print(f"  [{event.children_done}/{event.children_total} wells] well {f['well']} "
                          f"{f.get('step') or ''} {f.get('phase', '')}")
                elif isinstance(event, warmd.Progress):
                    print(f"  {event.message}")
                elif isinstance(event, warmd.Log):
                    print(f"  log {event.name}: {event.message[:120]}")
            summary = run.result()
            wall = time.perf_counter() - start
            images = len(list(Path(summary["output_dir"], "images").glob("*.tif")))
            times = ", ".join(f"{k} {v:.2f} s" for k, v in summary["timings"].items())
            print(f"{label}: {wall:.2f} s ({len(summary['wells'])} wells, {images} images; {times})")
        if not args.keep:
            client.shutdown_daemon()
    return 0


if __name__ == "__main__":
    sys.exit(main())
