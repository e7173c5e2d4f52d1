"""OpenHCS's own execution server against warmd-openhcs, through OpenHCS's own client.

    make bench-openhcs [BENCH_ARGS="--rounds 3 --json FILE"]
    bench/openhcs/.venv/bin/python bench/openhcs/bench.py [--rounds 3] [--quick] [--no-large]

Every Run goes as OpenHCS's GUI sends it (tests/helpers_openhcs.py): compile, then run
with the compile's artifact, polling for the end. Systems, interleaved round by round
(their order alternating), each on a fresh copy of the same plate, the others paused
(SIGSTOP) while one runs:

- OpenHCS's server with num_workers=1 (every well in the server), num_workers=2 with
  its spawn start method (a new pool each Run) and with fork;
- warmd-openhcs with num_workers=2 (two lanes on two warm workers).

Plates: the example plate (examples/openhcs/pipeline.py: 4 wells x 4 sites x 2
channels x 2 z at 256 px, three steps) and a larger one (16 wells x 4 sites x 2
channels x 3 z at 512 px, a Gaussian blur before the three steps). Measured: a warm
Run (medians); the first Run after a GUI opens (the stock path spawns its server as
the GUI does; warmd and the endpoint are up already, as their units start them with the
session: each round a new daemon and endpoint, warm, never having run a user's plate);
a Run after a Stop; idle CPU and memory. Every Run's output files are compared with the
first Run's (tests/helpers_openhcs.output_files). The last line is the headline:

    openhcs: larger plate Z1x faster than stock num_workers=2 spawn (A s vs B s); example plate Z2x (C s vs D s); first Run after the GUI opens Z3x faster (E s vs F s)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "examples" / "openhcs")]
os.environ.setdefault("OPENHCS_CPU_ONLY", "true")

import psutil  # noqa: E402

import helpers_openhcs as oh  # noqa: E402

WORKERS = 2
EXAMPLE_PLATE = {"wells": 4, "grid": (2, 2), "channels": 2, "z": 2, "tile": 256}
LARGE_PLATE = {"wells": 16, "grid": (2, 2), "channels": 2, "z": 3, "tile": 512}


def out(line: str = "") -> None:
    print(line, flush=True)


def example_steps() -> list:
    import pipeline
    return pipeline.make_pipeline()


def heavy_steps() -> list:
    """A Gaussian blur (sigma 3, every plane) before the example's three steps."""
    import pipeline
    from openhcs.core.steps.function_step import FunctionStep
    from openhcs.processing.backends.processors.numpy_processor import gaussian_blur
    return [FunctionStep(func=(gaussian_blur, {"sigma": 3.0}), name="gaussian"),
            *pipeline.make_pipeline()]


class Bench:
    def __init__(self, root: Path, rounds: int) -> None:
        self.root = root
        self.rounds = rounds
        self.results: dict[str, Any] = {}
        self.starts = 0
        self.daemon = self.endpoint = self.stock = None

    # ------------------------------------------------------------ systems

    def start(self) -> None:
        self.start_warmd()
        start = time.perf_counter()
        self.stock = oh.stock_server(oh.free_port(), self.root / "stock.log")
        self.stock.attach()
        while not self.stock.client.ping():  # its function catalog is ready
            time.sleep(0.1)
        self.results["stock_start_seconds"] = time.perf_counter() - start
        out(f"warmd-openhcs warm in {self.results['endpoint_warm_seconds']:.1f} s ({WORKERS} workers); "
            f"OpenHCS's server ready in {self.results['stock_start_seconds']:.1f} s")

    def start_warmd(self, attach: bool = True) -> None:
        """A new warmd daemon and endpoint, as a session starts them; returns once the
        endpoint says it is warm (its rehearsal run done) and the workers are idle."""
        from warmd.testing import LocalDaemon
        home = self.root / f"d{self.starts}"
        self.starts += 1
        home.mkdir()
        start = time.perf_counter()
        # lifeline: the daemon and its warm workers go with this process, however it ends
        self.daemon = LocalDaemon(home, oh.WARM_CONFIG.format(count=WORKERS), lifeline=True).start()
        self.endpoint = oh.endpoint(oh.free_port(), self.daemon.socket, home / "endpoint.log")
        self.endpoint.notify.wait_for("STATUS=warm", self.endpoint.alive, timeout=900)
        self.wait_idle()
        if attach:
            self.endpoint.attach()
        self.results.setdefault("endpoint_warm_seconds", time.perf_counter() - start)

    def stop_warmd(self) -> None:
        self.endpoint.stop()
        self.daemon.stop()

    def stop(self) -> None:
        for server in (self.endpoint, self.stock):
            if server is not None:
                server.stop()
        if self.daemon is not None:
            self.daemon.stop()

    def wait_idle(self) -> None:
        """Until warmd's workers are all idle (none warming or busy)."""
        self.daemon.wait_idle(WORKERS)

    def warmd_tree(self) -> list[psutil.Process]:
        procs = []
        for pid in (self.daemon.pid, self.endpoint.proc.pid):
            try:
                root = psutil.Process(pid)
                procs += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return procs

    def pause(self, paused: Callable[[], list[psutil.Process]], on: bool) -> None:
        for proc in paused():
            try:
                proc.suspend() if on else proc.resume()
            except psutil.Error:
                pass

    def systems(self) -> dict[str, tuple[Any, int, dict[str, Any]]]:
        """name -> (server, num_workers, GlobalPipelineConfig fields)."""
        from openhcs.core.config import MultiprocessingStartMethod as Start
        return {
            "stock num_workers=1": (self.stock, 1, {}),
            "stock num_workers=2 spawn": (self.stock, 2, {"multiprocessing_start_method": Start.SPAWN}),
            "stock num_workers=2 fork": (self.stock, 2, {"multiprocessing_start_method": Start.FORK}),
            "warmd-openhcs num_workers=2": (self.endpoint, 2, {}),
        }

    # ------------------------------------------------------------ runs

    def run(self, server: Any, plate: Path, make_steps: Callable[[], list], num_workers: int,
            fields: dict[str, Any], client: Any = None) -> float:
        done, seconds = oh.run_plate(client or server.client, plate, make_steps, num_workers,
                                     **fields)
        if done.get("status") != "complete":
            raise RuntimeError(f"a run did not complete: {done}\n{server.log_text()[-3000:]}")
        return seconds

    def warm_rounds(self, label: str, template: Path, make_steps: Callable[[], list]) -> dict[str, list[float]]:
        """Warm Runs, interleaved: each system once per round, the order alternating."""
        plate = self.root / f"{label}-run"
        systems = self.systems()
        walls: dict[str, list[float]] = {name: [] for name in systems}
        reference: dict[str, str] | None = None
        for r in range(self.rounds + 1):  # round 0 warms each system up on this plate
            order = list(systems) if r % 2 == 0 else list(reversed(systems))
            for name in order:
                server, workers, fields = systems[name]
                copy_plate(template, plate)
                self.wait_idle()
                others = self.warmd_tree if server is self.stock else self.stock.tree
                self.pause(others, True)
                try:
                    seconds = self.run(server, plate, make_steps, workers, fields)
                finally:
                    self.pause(others, False)
                files = oh.output_files(plate)
                reference = reference or files
                same = files == reference
                if r:
                    walls[name].append(seconds)
                out(f"  {label} round {r}{' (warm-up)' if not r else ''} {name:30s} {seconds:7.2f} s"
                    f"{'' if same else '  OUTPUT DIFFERS'}")
                if not same:
                    raise RuntimeError(f"{name}'s output differs from the first run's")
        return walls

    def first_run_after_open(self, template: Path, rounds: int) -> dict[str, list[float]]:
        """The GUI opens and presses Run: the stock path starts OpenHCS's server first (its
        client spawns the launcher); warmd and the endpoint were started with the session
        (each round a new daemon and endpoint, warm but never having run a user's plate)."""
        plate = self.root / "first-run"
        found: dict[str, list[float]] = {"stock num_workers=2 spawn (server started)": [],
                                         "warmd-openhcs num_workers=2": []}
        for r in range(rounds):
            copy_plate(template, plate)
            self.pause(self.warmd_tree, True)
            self.pause(self.stock.tree, True)
            start = time.perf_counter()
            cold = oh.stock_server(oh.free_port(), self.root / f"cold-{r}.log")
            try:
                cold.attach()
                self.run(cold, plate, example_steps, 2, {})
                found["stock num_workers=2 spawn (server started)"].append(time.perf_counter() - start)
            finally:
                cold.stop()
                self.pause(self.warmd_tree, False)
            self.stop_warmd()
            self.start_warmd(attach=False)
            copy_plate(template, plate)
            start = time.perf_counter()
            client = oh.attach(self.endpoint.port, self.endpoint.alive)  # the GUI opening
            try:
                self.run(self.endpoint, plate, example_steps, 2, {}, client=client)
                found["warmd-openhcs num_workers=2"].append(time.perf_counter() - start)
            finally:
                client.disconnect()
                self.pause(self.stock.tree, False)
            self.endpoint.attach()
            out(f"  first Run after opening, round {r + 1}: stock "
                f"{found['stock num_workers=2 spawn (server started)'][-1]:.2f} s, warmd-openhcs "
                f"{found['warmd-openhcs num_workers=2'][-1]:.2f} s")
        return found

    def run_after_stop(self, template: Path) -> dict[str, float]:
        """A Run stopped once its lanes started, then the next Run, on each num_workers=2."""
        plate = self.root / "after-stop"
        found = {}
        for name in ("stock num_workers=2 spawn", "warmd-openhcs num_workers=2"):
            server, workers, fields = self.systems()[name]
            events: list[dict] = []
            server.client.progress_callback = events.append
            copy_plate(template, plate)
            self.wait_idle()
            execution = oh.submit(server.client, plate, heavy_steps, workers, **fields)
            lanes_started(events, execution, 2)
            start = time.perf_counter()
            server.client.cancel_execution(execution)
            status = oh.wait(server.client, execution)["status"]
            stopped = time.perf_counter() - start
            server.client.progress_callback = None
            copy_plate(template, plate)
            self.wait_idle()
            found[name] = {"stop_seconds": stopped, "status": status,
                           "next_run_seconds": self.run(server, plate, heavy_steps, workers, fields)}
            out(f"  {name}: Stop {stopped:.2f} s ({status}), next Run {found[name]['next_run_seconds']:.2f} s")
        return found

    def idle(self, seconds: float = 10.0) -> dict[str, dict[str, float]]:
        self.wait_idle()
        time.sleep(1)
        return {"stock server": idle_use(self.stock.tree, seconds),
                "warmd-openhcs + warmd": idle_use(self.warmd_tree, seconds)}


def lanes_started(events: list[dict], execution: str, count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        wells = {e.get("axis_id") for e in list(events)
                 if e.get("execution_id") == execution and e.get("phase") == "step_started"}
        if len(wells) >= count:
            return
        time.sleep(0.02)
    raise TimeoutError("the run's lanes did not start")


def copy_plate(template: Path, plate: Path) -> None:
    shutil.rmtree(plate, ignore_errors=True)
    shutil.rmtree(oh.output_dir(plate), ignore_errors=True)
    shutil.copytree(template, plate)


def idle_use(tree: Callable[[], list[psutil.Process]], seconds: float) -> dict[str, float]:
    """CPU the process tree used over ``seconds`` of idleness, and its memory."""
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


def table(title: str, walls: dict[str, list[float]]) -> dict[str, float]:
    medians = {name: statistics.median(values) for name, values in walls.items()}
    out(f"{title}: warm Run, median of {len(next(iter(walls.values())))} (min)")
    for name, values in walls.items():
        out(f"  {name:32s} {medians[name]:7.2f} s ({min(values):.2f})")
    return medians


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="warm rounds per plate (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 round, no larger plate")
    parser.add_argument("--no-large", action="store_true", help="the example plate only")
    parser.add_argument("--first-runs", type=int, default=2, help="rounds of the first-Run measure")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.no_large, args.first_runs = 1, True, 1

    import openhcs
    import warmd
    root = Path(tempfile.mkdtemp(prefix="ohb-", dir="/tmp"))
    load = os.getloadavg()
    out(f"OpenHCS {openhcs.__version__}, warmd {warmd.__version__}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    bench = Bench(root, args.rounds)
    results = bench.results
    try:
        example = oh.fresh_plate(root / "example", **EXAMPLE_PLATE)
        large = None if args.no_large else oh.fresh_plate(root / "large", **LARGE_PLATE)
        bench.start()
        results["idle_before"] = bench.idle()
        results["example"] = bench.warm_rounds("example", example, example_steps)
        if large is not None:
            results["large"] = bench.warm_rounds("larger", large, heavy_steps)
        results["first_run"] = bench.first_run_after_open(example, args.first_runs)
        results["after_stop"] = bench.run_after_stop(large or example)
        results["idle_after"] = bench.idle()
    finally:
        bench.stop()
        shutil.rmtree(root, ignore_errors=True)

    out()
    medians = {"example": table("example plate", results["example"])}
    if "large" in results:
        medians["large"] = table("larger plate", results["large"])
    first = {name: statistics.median(v) for name, v in results["first_run"].items()}
    out("first Run after the GUI opens, median")
    for name, value in first.items():
        out(f"  {name:44s} {value:7.2f} s")
    for when in ("idle_before", "idle_after"):
        for name, use in results[when].items():
            out(f"{when.replace('_', ' ')}, {name}: {use['processes']} processes, "
                f"{use['cpu_percent']:.2f}% of a CPU, RSS {use['rss_mib']:.0f} MiB "
                f"(USS {use['uss_mib']:.0f} MiB)")
    load = os.getloadavg()
    out(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))

    spawn, ours = "stock num_workers=2 spawn", "warmd-openhcs num_workers=2"
    ex = medians["example"]
    stock_first, our_first = first["stock num_workers=2 spawn (server started)"], first[ours]
    if "large" in medians:
        lg = medians["large"]
        large_part = f"larger plate {lg[spawn] / lg[ours]:.1f}x faster than stock num_workers=2 spawn " \
                     f"({lg[ours]:.2f} s vs {lg[spawn]:.2f} s)"
    else:
        large_part = "larger plate not run"
    out(f"openhcs: {large_part}; example plate {ex[spawn] / ex[ours]:.1f}x ({ex[ours]:.2f} s vs "
        f"{ex[spawn]:.2f} s); first Run after the GUI opens {stock_first / our_first:.1f}x faster "
        f"({our_first:.2f} s vs {stock_first:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
