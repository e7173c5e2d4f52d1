"""OpenHCS through warmd against OpenHCS's own ZMQ execution server, in one interleaved run.

    bench/openhcs/.venv/bin/python bench/openhcs/bench.py [--rounds 5] [--wells 4] [--grid 2]
        [--channels 2] [--z 2] [--tile 256] [--no-cancel] [--no-idle] [--no-logs] [--json FILE]

Needs the OpenHCS venv (see bench/openhcs/README.md): openhcs==0.8.6 and this checkout's
warmd, both importable by one Python. It generates a synthetic plate with OpenHCS's own
generator (openhcs.demo.synthetic_data.SyntheticMicroscopyGenerator), starts

- OpenHCS's ZMQ execution server (the launcher its client spawns:
  openhcs.runtime.zmq_execution_server_launcher), run with GlobalPipelineConfig
  num_workers=1 (every well in the server process) and num_workers=2 (a spawn process
  pool that OpenHCS creates for each run), and
- a warmd daemon with examples/openhcs/warmd.toml (3 workers, each warmed by
  examples/openhcs/hook.py; ``--config`` for another), running examples/openhcs/driver.run_plate in one worker
  (fan_out=False) and fanned out over the workers as a job group (fan_out=True),

then runs the same three-step pipeline (examples/openhcs/pipeline.py) on each in turn,
round after round, so machine noise hits all alike. Before each run it waits until no
warmd worker is warming (with the default max_extra a fan-out starts an extra worker
for its waiting parent job; see warmd.toml(5)), and while warmd runs the ZMQ server is
stopped (SIGSTOP), so that neither takes CPU from the other. Every run's output pixels are hashed and
compared with the first run's. Then, unless told not to: idle CPU and memory of both,
one run each at log level INFO (how many records, and where they go), a cancel in the
middle of a run on each (how long, what is left), and the ZMQ server's idle CPU after
its cancel. The last line is the headline (medians of the warm rounds):

    openhcs: warmd fan-out X s vs ZMQ num_workers=2 Y s (Z× faster)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
EXAMPLE = REPO / "examples" / "openhcs"
sys.path.insert(0, str(EXAMPLE))
os.environ.setdefault("OPENHCS_CPU_ONLY", "true")

import psutil  # noqa: E402  (OpenHCS and warmd both depend on it)
from warmd.client.info import family  # noqa: E402

log = logging.getLogger("bench.openhcs")


def out(line: str = "") -> None:
    print(line, flush=True)


# --- output pixels ---------------------------------------------------------------------

def pixels(output_dir: Path) -> dict[str, str]:
    """Each output image's pixels (dtype, shape and bytes) as a short hash, by file name."""
    import tifffile
    found = {}
    for path in sorted((output_dir / "images").glob("*.tif")):
        array = tifffile.imread(path)
        digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode() + array.tobytes())
        found[path.name] = digest.hexdigest()[:16]
    return found


# --- OpenHCS's ZMQ execution server ----------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ZMQServer:
    """OpenHCS's execution server, started as its own client would start it (the same
    launcher module), but by us, so that we know its pid and stop it."""

    def __init__(self, log_dir: Path) -> None:
        from openhcs.runtime.zmq_execution_client import ZMQExecutionClient
        self.port = free_port()
        start = time.perf_counter()
        self.log_path = log_dir / f"zmq-server-{self.port}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openhcs.runtime.zmq_execution_server_launcher",
             "--port", str(self.port), "--log-level", "WARNING"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        self.client = ZMQExecutionClient(port=self.port, persistent=True)
        deadline = time.monotonic() + 180
        while not self.client.connect_existing(timeout=1.0):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ZMQ server did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        while not self.client.ping():  # ready: its function catalog is prepared
            time.sleep(0.1)
        self.start_seconds = time.perf_counter() - start

    def submission(self, plate: Path, num_workers: int):
        import pipeline
        from openhcs.core.config import GlobalPipelineConfig
        from openhcs.core.pipeline_document import PipelineDocumentAuthority
        from openhcs.runtime.zmq_execution_client import OpenHCSExecutionSubmission
        document = PipelineDocumentAuthority.from_values(pipeline_config=pipeline.pipeline_config(),
                                                         pipeline_steps=pipeline.make_pipeline())
        return OpenHCSExecutionSubmission(plate_id=str(plate), pipeline_document=document,
                                          global_config=GlobalPipelineConfig(num_workers=num_workers))

    def run(self, plate: Path, num_workers: int) -> dict[str, Any]:
        response = self.client.submit_pipeline(self.submission(plate, num_workers))
        execution_id = response.get("execution_id")
        if not execution_id:
            raise RuntimeError(f"ZMQ server refused the run: {response!r}")
        # Its client polls status every 0.5 s by default; 0.05 s keeps that out of the timing.
        done = self.client.wait_for_completion(execution_id, poll_interval=0.05)
        if not isinstance(done, dict) or done.get("status") != "complete":
            raise RuntimeError(f"ZMQ run failed: {done!r}")
        return done

    def pause(self, paused: bool) -> None:
        """SIGSTOP (or SIGCONT) the server and its processes, so that it takes no CPU from
        the other system's runs (it should idle at about 1% of a CPU; see the idle line)."""
        for proc in self.tree():
            try:
                proc.suspend() if paused else proc.resume()
            except psutil.Error:
                pass

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        try:
            self.client.disconnect()
        except Exception:
            pass
        leftovers = self.tree()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for proc in leftovers[1:]:
            try:
                proc.kill()
            except psutil.Error:
                pass
        self._log.close()


# --- warmd -----------------------------------------------------------------------------

class Warmd:
    def __init__(self, root: Path, config: Path) -> None:
        from warmd.testing import LocalDaemon
        start = time.perf_counter()
        root.mkdir()
        self.daemon = LocalDaemon(root, config.read_text(), pythonpath=(EXAMPLE,)).start()
        self.timings: dict[str, list[dict[str, float]]] = {}
        self.client = self.daemon.client()
        status = self.client.status()
        capacity = status.capacity
        self.wanted = capacity.get("workers", 2) + capacity.get("spares", 0)
        self.wait_quiet(min_idle=self.wanted, timeout=300)
        self.start_seconds = time.perf_counter() - start
        self.warmup = [w.warmup_seconds for w in self.client.status().workers]

    def wait_quiet(self, min_idle: int = 0, timeout: float = 120) -> float:
        """Until no worker is warming (and ``min_idle`` are idle); the seconds waited."""
        start = time.monotonic()
        while True:
            status = self.client.status()
            if status.warmup_error:
                raise RuntimeError(f"warmd warm-up failed: {status.warmup_error}\n"
                                   f"{self.daemon.log_text()[-3000:]}")
            workers = status.workers
            if (not any(w.state in ("warming", "starting") for w in workers)
                    and sum(w.state == "idle" for w in workers) >= min_idle):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"warmd workers still warming after {timeout} s: {workers}")
            time.sleep(0.1)

    def run(self, plate: Path, fan_out: bool, **options: Any) -> tuple[dict[str, Any], list]:
        import driver
        future = self.client.submit_call(driver.run_plate, (str(plate),), {"fan_out": fan_out},
                                         name="openhcs bench", **options)
        events = list(future.events())
        summary = future.result()
        self.timings.setdefault("fan-out" if fan_out else "1 worker", []).append(summary["timings"])
        return summary, events

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.daemon.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        try:
            self.client.close()
        finally:
            self.daemon.stop()


# --- measurements ----------------------------------------------------------------------

def rounds(systems: dict[str, Callable[[], Any]], before: Callable[[str], None], count: int,
           check: Callable[[str], dict[str, str]]) -> tuple[dict[str, list[float]], dict[str, bool]]:
    walls: dict[str, list[float]] = {name: [] for name in systems}
    same: dict[str, bool] = {name: True for name in systems}
    reference: dict[str, str] | None = None
    for r in range(count):
        order = list(systems) if r % 2 == 0 else list(reversed(systems))  # alternate the order
        for name in order:
            before(name)
            start = time.perf_counter()
            systems[name]()
            walls[name].append(time.perf_counter() - start)
            got = check(name)
            if reference is None:
                reference = got
                if not got:
                    raise RuntimeError(f"{name} wrote no output images")
            same[name] = same[name] and got == reference
            out(f"  round {r + 1} {name:28s} {walls[name][-1]:6.2f} s  "
                f"{len(got)} images{'' if got == reference else '  PIXELS DIFFER'}")
    return walls, same


def cancel_warmd(w: Warmd, plate: Path) -> dict[str, Any]:
    """Cancel a fan-out run as soon as its first well reports a step; what was left."""
    import driver
    import warmd
    before = {p.pid for p in w.tree()}
    future = w.client.submit_call(driver.run_plate, (str(plate),), {"fan_out": True},
                                  name="openhcs cancel")
    for event in future.events():
        if isinstance(event, warmd.ChildProgress) and event.fields.get("phase") == "step_started":
            break
    start = time.perf_counter()
    cancelled = future.cancel()
    seconds = time.perf_counter() - start
    listed = w.client.jobs()
    jobs = family(listed, future.job_id)
    running = [j.id for j in listed if j.state in ("running", "queued")]
    after = {p.pid for p in w.tree()}
    return {"cancel_seconds": seconds, "cancelled": cancelled,
            "states": sorted({j.state for j in jobs}), "jobs_below": len(jobs) - 1,
            "still_running": running, "workers_replaced": len(before - after),
            "new_processes": len(after - before)}


def cancel_zmq(z: ZMQServer, plate: Path) -> dict[str, Any]:
    """Cancel a num_workers=2 run once its lane processes exist; what was left."""
    response = z.client.submit_pipeline(z.submission(plate, 2))
    execution_id = response["execution_id"]
    deadline = time.monotonic() + 30
    while len(lanes(z)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    at_cancel = len(lanes(z))
    start = time.perf_counter()
    z.client.cancel_execution(execution_id)
    final = z.client.wait_for_completion(execution_id, poll_interval=0.05)
    seconds = time.perf_counter() - start
    time.sleep(0.5)
    return {"cancel_seconds": seconds, "status": final.get("status") if isinstance(final, dict) else final,
            "lanes_at_cancel": at_cancel, "lanes_after": len(lanes(z))}


def lanes(z: ZMQServer) -> list[psutil.Process]:
    """The server's pool processes (multiprocessing spawn children)."""
    found = []
    for proc in z.tree()[1:]:
        try:
            if "spawn_main" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def idle(tree: Callable[[], list[psutil.Process]], seconds: float = 10.0) -> dict[str, float]:
    """CPU seconds the whole process tree used over ``seconds`` of idleness, and its memory."""
    def cpu(procs: list[psutil.Process]) -> float:
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total
    procs = tree()
    first = cpu(procs)
    time.sleep(seconds)
    used = cpu(procs) - first
    rss = uss = 0
    for p in tree():
        try:
            info = p.memory_full_info()
            rss, uss = rss + info.rss, uss + info.uss
        except psutil.Error:
            pass
    return {"processes": len(procs), "cpu_percent": 100 * used / seconds,
            "rss_mib": rss / 2**20, "uss_mib": uss / 2**20}


def log_run(w: Warmd, z: ZMQServer, plate: Path, log_dir: Path) -> dict[str, Any]:
    """One fanned-out warmd run and one num_workers=2 ZMQ run at level INFO: where the
    records go and how many."""
    import warmd
    w.wait_quiet()
    z.pause(True)
    try:
        start = time.perf_counter()
        summary, events = w.run(plate, True, log_level="info")
        seconds = time.perf_counter() - start
    finally:
        z.pause(False)
    records = [e for e in events if isinstance(e, warmd.Log)]
    forwarded = [e for e in records if e.message.startswith("[")]
    from openhcs.core.xdg_paths import get_openhcs_log_dir
    lane_dir = get_openhcs_log_dir()
    before = set(lane_dir.glob("*_worker_*.log"))
    start = time.perf_counter()
    z.run(plate, 2)
    zmq_seconds = time.perf_counter() - start
    new = set(lane_dir.glob("*_worker_*.log")) - before
    lines = sum(len(p.read_text(errors="replace").splitlines()) for p in new)
    return {"warmd_seconds": seconds, "warmd_records_in_run_stream": len(records),
            "warmd_forwarded_from_wells": len(forwarded), "zmq_seconds": zmq_seconds,
            "zmq_lane_log_files": len(new), "zmq_lane_log_lines": lines, "zmq_lane_log_dir": str(lane_dir)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 rounds (as make bench BENCH_ARGS=--quick)")
    parser.add_argument("--wells", type=int, default=4)
    parser.add_argument("--grid", type=int, default=2, help="sites per well: grid x grid")
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--z", type=int, default=2)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--no-cancel", action="store_true")
    parser.add_argument("--no-idle", action="store_true")
    parser.add_argument("--no-logs", action="store_true")
    parser.add_argument("--config", type=Path, default=EXAMPLE / "warmd.toml",
                        help="the warmd daemon's configuration (default: examples/openhcs/warmd.toml)")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    if args.quick:
        args.rounds = min(args.rounds, 2)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import openhcs
    import pipeline
    import warmd
    tmp = Path(tempfile.mkdtemp(prefix="ohb-", dir="/tmp"))  # short: a socket lives in it
    plate = pipeline.make_plate(tmp / "plate", wells=args.wells, grid=(args.grid, args.grid),
                                channels=args.channels, z=args.z, tile=args.tile)
    output_dir = plate.parent / f"{plate.name}_openhcs"
    images = args.wells * args.grid * args.grid
    out(f"openhcs {openhcs.__version__}, warmd {warmd.__version__}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs; plate: {args.wells} wells x {args.grid * args.grid} sites x "
        f"{args.channels} channels x {args.z} z, {args.tile}px tiles -> {images} output images")
    results: dict[str, Any] = {"openhcs": openhcs.__version__, "warmd": warmd.__version__,
                               "cpus": os.cpu_count(), "plate": vars(args) | {"json": None}}
    z = w = None
    try:
        z = ZMQServer(tmp)
        out(f"ZMQ execution server ready in {z.start_seconds:.1f} s (pid {z.proc.pid})")
        w = Warmd(tmp / "wd", args.config)
        out(f"warmd daemon ready ({args.config.name}), {w.wanted} workers warm in {w.start_seconds:.1f} s "
            f"(warm-up {', '.join(f'{s:.1f}' for s in w.warmup if s)} s each)")
        results["start_seconds"] = {"zmq": z.start_seconds, "warmd": w.start_seconds}

        systems = {
            "ZMQ server, num_workers=1": lambda: z.run(plate, 1),
            "ZMQ server, num_workers=2": lambda: z.run(plate, 2),
            "warmd, 1 worker": lambda: w.run(plate, False),
            "warmd, fan-out over 2": lambda: w.run(plate, True),
        }

        def before(name: str) -> None:
            shutil.rmtree(output_dir, ignore_errors=True)
            z.pause(False)
            w.wait_quiet()
            if name.startswith("warmd"):
                z.pause(True)

        if not args.no_idle:
            results["idle_zmq_fresh"] = i = idle(z.tree, 5)
            out(f"idle, ZMQ server before any run: {i['cpu_percent']:.2f}% of a CPU")
        try:
            walls, same = rounds(systems, before, args.rounds, lambda name: pixels(output_dir))
        finally:
            z.pause(False)
        results["walls"] = walls
        results["identical_pixels"] = same

        out()
        out(f"{'system':28s} {'first run':>10s} {'warm median':>12s} {'warm min':>9s}  same pixels")
        for name, values in walls.items():
            warm = values[1:] or values
            out(f"{name:28s} {values[0]:8.2f} s {statistics.median(warm):10.2f} s "
                f"{min(warm):7.2f} s  {'yes' if same[name] else 'NO'}")
        out("(first run: a system's first run after it is ready; warm: the other rounds)")
        for mode, rows in w.timings.items():
            parts = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            out(f"  inside warmd's run job, {mode} (medians): "
                + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items()))
        results["warmd_run_timings"] = w.timings

        if not args.no_idle:
            w.wait_quiet()
            time.sleep(2)
            results["idle_warmd"] = iw = idle(w.tree)
            results["idle_zmq"] = iz = idle(z.tree)
            for label, i in (("warmd (daemon + workers)", iw), ("ZMQ server", iz)):
                out(f"idle after the runs, {label}: {i['processes']} processes, "
                    f"{i['cpu_percent']:.2f}% of a CPU, RSS {i['rss_mib']:.0f} MiB (USS {i['uss_mib']:.0f} MiB)")
        if not args.no_logs:
            shutil.rmtree(output_dir, ignore_errors=True)
            results["logs"] = lg = log_run(w, z, plate, tmp)
            out(f"log level INFO: warmd fan-out {lg['warmd_seconds']:.2f} s, "
                f"{lg['warmd_records_in_run_stream']} records in the run's own stream "
                f"({lg['warmd_forwarded_from_wells']} forwarded from its wells); ZMQ num_workers=2 "
                f"{lg['zmq_seconds']:.2f} s, {lg['zmq_lane_log_lines']} lines in "
                f"{lg['zmq_lane_log_files']} lane log files under {lg['zmq_lane_log_dir']}")

        if not args.no_cancel:
            shutil.rmtree(output_dir, ignore_errors=True)
            w.wait_quiet()
            z.pause(True)
            try:
                results["cancel_warmd"] = cw = cancel_warmd(w, plate)
            finally:
                z.pause(False)
            out(f"cancel, warmd fan-out: returned in {cw['cancel_seconds']:.2f} s, run and "
                f"{cw['jobs_below']} jobs below it {'/'.join(cw['states'])}, still running: "
                f"{len(cw['still_running'])}, workers replaced: {cw['workers_replaced']}")
            shutil.rmtree(output_dir, ignore_errors=True)
            results["cancel_zmq"] = cz = cancel_zmq(z, plate)
            out(f"cancel, ZMQ num_workers=2: status {cz['status']} after {cz['cancel_seconds']:.2f} s, "
                f"lane processes at cancel {cz['lanes_at_cancel']}, 0.5 s after {cz['lanes_after']}")

            if not args.no_idle:
                results["idle_zmq_after_cancel"] = i = idle(z.tree, 5)
                why = ("" if i["cpu_percent"] < 50 else
                       " (py-spy: a ProcessPoolExecutor manager thread looping in shutdown_workers;"
                       " see bench/openhcs/README.md)")
                out(f"idle after the cancel, ZMQ server: {i['cpu_percent']:.2f}% of a CPU{why}")
    finally:
        for system in (w, z):
            if system is not None:
                system.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    fan = statistics.median(walls["warmd, fan-out over 2"][1:] or walls["warmd, fan-out over 2"])
    zmq2 = statistics.median(walls["ZMQ server, num_workers=2"][1:] or walls["ZMQ server, num_workers=2"])
    results["headline"] = {"warmd_fan_out": fan, "zmq_num_workers_2": zmq2, "speedup": zmq2 / fan}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if not all(same.values()):
        out("!!! output pixels differ between systems: see PIXELS DIFFER above")
    out(f"openhcs: warmd fan-out {fan:.2f} s vs ZMQ num_workers=2 {zmq2:.2f} s ({zmq2 / fan:.1f}× faster)")
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
