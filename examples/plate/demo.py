"""make demo: run the plate pipeline twice through an auto-started warmd daemon.

The first run pays for starting the daemon and warming a worker (imports,
warm-up hook); the second finds the worker warm. For contrast, the same job is
also run the legacy way: a fresh interpreter per run.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    # A private socket and this example's config, so the demo never touches a daemon of yours.
    runtime = Path(tempfile.gettempdir()) / f"warmd-demo-{os.getuid()}"
    os.environ["WARMD_SOCKET"] = str(runtime / "warmd.sock")
    os.environ["WARMD_CONFIG"] = str(HERE / "warmd.toml")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, str(HERE))

    import warmd
    import pipeline

    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import pipeline; pipeline.run()"], check=True, cwd=HERE)
    legacy = time.perf_counter() - start
    print(f"legacy, a fresh interpreter per run: {legacy:6.3f} s")

    timings = []
    with warmd.Client() as client:  # starts the daemon: no systemd needed
        print(f"daemon pid {client.daemon_info['pid']} ({client.daemon_info['started_by']}), "
              f"socket {client.socket_path}")
        for label in ("cold", "warm"):
            start = time.perf_counter()
            future = client.submit(pipeline.run)
            for event in future.events():
                if isinstance(event, warmd.Progress) and sys.stdout.isatty():
                    print(f"\r  {label}: {event.message} ({event.done:.0f}/{event.total:.0f})", end="")
            result = future.result()
            wall = time.perf_counter() - start
            timings.append(wall)
            nuclei = sum(w["nuclei"] for w in result["wells"])
            print(f"\r{label} run through warmd:              {wall:6.3f} s "
                  f"({len(result['wells'])} wells, {nuclei} nuclei, "
                  f"compute {result['compute_seconds']:.3f} s, worker pid {future.finished.worker_pid})")
        client.shutdown_daemon()
    print(f"warm run is {legacy / timings[1]:.1f}x faster than a fresh interpreter, "
          f"{timings[0] / timings[1]:.1f}x faster than the cold first run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
