"""The measurements. Each returns rows: {"section", "metric", "peer", "value", "unit", ...}.

Peers that compete for the same two cores are measured in interleaved rounds,
so a noisy neighbour slows every peer alike and the ratios stay meaningful.
"""
from __future__ import annotations

import gc
import multiprocessing
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import psutil

import jobs
import peers
from common import Daemon, pythonpath, runtime_base, summary

WARMD_NOOP = "[workers]\ncount = 1\nspares = 1\n"


def _row(section, metric, peer, value, unit, **extra):
    return {"section": section, "metric": metric, "peer": peer, "value": value, "unit": unit, **extra}


def _start_peers(daemon: Daemon, names: list[str], log: Callable[[str], None]) -> list[peers.Peer]:
    made = []
    for name in names:
        try:
            made.append({"floor-socket": peers.SocketFloor, "floor-pickle": peers.PickleFloor,
                         "warmd": lambda: peers.WarmdPeer(daemon), "ppe": peers.PoolPeer,
                         "warmd-session": lambda: peers.WarmdSessionPeer(daemon),
                         "warmpool": peers.WarmpoolPeer, "dask": peers.DaskPeer}[name]())
        except Exception as exc:  # a missing peer is reported loudly, the rest still run
            log(f"!!! PEER MISSING: {name} could not start: {type(exc).__name__}: {exc}")
    return made


# ---------------------------------------------------------------------------- 1. dispatch

def dispatch(cfg, log) -> list[dict]:
    """Submit a no-op and wait for its result, one at a time; p50/p99 per peer."""
    rounds, per_round = cfg["dispatch_rounds"], cfg["dispatch_calls"] // cfg["dispatch_rounds"]
    with Daemon(WARMD_NOOP, "dispatch") as daemon:
        daemon.wait_warm(2)
        ps = _start_peers(daemon, ["floor-socket", "floor-pickle", "warmd", "warmd-session", "ppe",
                                   "warmpool", "dask"], log)
        samples: dict[str, list[float]] = {p.name: [] for p in ps}
        try:
            for p in ps:
                for _ in range(cfg["warmup_calls"] if p.name != "dask" else 50):
                    p.call(jobs.noop)
            for r in range(rounds):
                for p in ps:
                    n = per_round if p.name != "dask" else max(10, per_round // 10)
                    out = samples[p.name]
                    call, noop, clock = p.call, jobs.noop, time.perf_counter
                    for _ in range(n):
                        t = clock()
                        call(noop)
                        out.append(clock() - t)
                log(f"  dispatch round {r + 1}/{rounds}")
        finally:
            for p in ps:
                p.close()
    rows = []
    for name, values in samples.items():
        s = summary([v * 1e6 for v in values])
        rows.append(_row("dispatch", "no-op submit+result", name, s["p50"], "us", p99=s["p99"],
                         mean=s["mean"], n=s["n"]))
    return rows


# ---------------------------------------------------------------------------- 2. throughput

def _map_rate(p: peers.Peer, n: int) -> float:
    t = time.perf_counter()
    p.map(jobs.noop, list(range(n)))
    return n / (time.perf_counter() - t)


def _threads_rate(clients: list[peers.Peer], n_each: int) -> float:
    barrier = threading.Barrier(len(clients) + 1)
    errors = []

    def go(p):
        barrier.wait()
        try:
            p.map(jobs.noop, list(range(n_each)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(p,)) for p in clients]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return n_each * len(clients) / (time.perf_counter() - t0)


def _process_client(socket_path: str, n: int, barrier, out) -> None:
    import warmd
    with warmd.Client(socket_path, autostart=False) as client:
        client.submit(jobs.noop).result()
        barrier.wait()
        t0 = time.monotonic()
        list(client.map(jobs.noop, range(n)))
        out.put((t0, time.monotonic()))


def _processes_rate(daemon: Daemon, clients: int, n_each: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(clients), ctx.Queue()
    procs = [ctx.Process(target=_process_client, args=(str(daemon.socket), n_each, barrier, out))
             for _ in range(clients)]
    for p in procs:
        p.start()
    spans = []
    while len(spans) < clients:
        try:
            spans.append(out.get(timeout=1))
        except queue.Empty:
            failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(f"a client process failed (exit status {failed[0]})") from None
    for p in procs:
        p.join()
    return n_each * clients / (max(e for _, e in spans) - min(s for s, _ in spans))


def throughput(cfg, log) -> list[dict]:
    n, rounds, clients = cfg["throughput_jobs"], cfg["throughput_rounds"], 8
    rates: dict[tuple[str, str], list[float]] = {}
    with Daemon(WARMD_NOOP, "throughput") as daemon:
        daemon.wait_warm(2)
        ps = _start_peers(daemon, ["floor-socket", "warmd", "warmd-session", "ppe", "warmpool", "dask"], log)
        extra: dict[str, list[peers.Peer]] = {}
        try:
            for p in ps:
                p.map(jobs.noop, list(range(100)))
                if p.name == "warmd":
                    extra[p.name] = [peers.WarmdPeer(daemon) for _ in range(clients)]
                elif p.name in ("ProcessPoolExecutor", "dask"):
                    extra[p.name] = [p] * clients  # one executor shared by the client threads
            for r in range(rounds):
                for p in ps:
                    k = n if p.pipelined and p.name != "dask" else n // 5
                    rates.setdefault((p.name, "1 client, pipelined"), []).append(_map_rate(p, k))
                    if p.name in extra:
                        rates.setdefault((p.name, f"{clients} client threads"), []).append(
                            _threads_rate(extra[p.name], max(1, k // clients)))
                rates.setdefault(("warmd", f"{clients} client processes"), []).append(
                    _processes_rate(daemon, clients, max(1, n // clients)))
                log(f"  throughput round {r + 1}/{rounds}")
        finally:
            for group in extra.values():
                for p in group:
                    if p.name == "warmd":
                        p.close()
            for p in ps:
                p.close()
    rows = []
    for (name, metric), values in rates.items():
        pipelined = next((p.pipelined for p in ps if p.name == name), True)
        rows.append(_row("throughput", metric, name, sorted(values)[len(values) // 2], "jobs/s",
                         rounds=len(values),
                         note="" if pipelined else "blocking API: one call at a time"))
    return rows


# ---------------------------------------------------------------------------- 3. plate pipeline

PIPELINE_CONFIG = """[warmup]
import = ["numpy", "scipy.ndimage", "skimage.filters", "skimage.measure"]
hooks = ["platejob:warm"]

[workers]
count = 1
spares = 1
"""


def pipeline(cfg, log) -> list[dict]:
    """One plate run: cold (a fresh interpreter), warm on each peer, and in this process."""
    import platejob
    rounds = cfg["pipeline_rounds"]
    walls: dict[str, list[float]] = {}
    overhead_pairs: dict[str, list[float]] = {}
    overhead_self: dict[str, list[float]] = {}
    cold_cmd = [sys.executable, "-c", "import platejob; platejob.run()"]
    env = dict(os.environ, PYTHONPATH=pythonpath())
    with Daemon(PIPELINE_CONFIG, "pipeline") as daemon:
        daemon.wait_warm(2)
        ps = _start_peers(daemon, ["warmd", "ppe", "warmpool", "dask"], log)
        try:
            platejob.warm()
            for p in ps:
                p.call(platejob.warm)
                p.call(platejob.run)
            for r in range(rounds):
                t = time.perf_counter()
                subprocess.run(cold_cmd, env=env, check=True, cwd=os.path.dirname(platejob.__file__))
                walls.setdefault("cold: fresh python per run", []).append(time.perf_counter() - t)
                gc.collect()
                t = time.perf_counter()
                platejob.run()
                inproc = time.perf_counter() - t
                walls.setdefault("in-process (the steps alone)", []).append(inproc)
                for p in ps:
                    t = time.perf_counter()
                    result = p.call(platejob.run)
                    wall = time.perf_counter() - t
                    walls.setdefault(p.name, []).append(wall)
                    overhead_pairs.setdefault(p.name, []).append(wall - inproc)
                    # The same steps timed where they ran: the rest is the peer's own cost.
                    overhead_self.setdefault(p.name, []).append(wall - result["seconds"])
                log(f"  pipeline round {r + 1}/{rounds}")
        finally:
            for p in ps:
                p.close()
    rows = []
    inproc = summary(walls["in-process (the steps alone)"])["p50"]
    for name, values in walls.items():
        s = summary([v * 1e3 for v in values])
        extra = {}
        if name in overhead_pairs:
            extra["overhead_ms"] = s["p50"] - inproc * 1e3
            extra["overhead_paired_ms"] = summary([v * 1e3 for v in overhead_pairs[name]])["p50"]
            o = summary([v * 1e3 for v in overhead_self[name]])
            extra.update(overhead_self_ms=o["p50"], overhead_self_p99_ms=o["p99"])
        rows.append(_row("pipeline", "plate run wall time", name, s["p50"], "ms", min=s["min"],
                         n=s["n"], **extra))
    return rows


# ---------------------------------------------------------------------------- 5. idle

def _ctx_switches(pid: int) -> int:
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def _sample(pid: int) -> tuple[float, int]:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system, _ctx_switches(pid)


def idle(cfg, log) -> list[dict]:
    """The daemon and its two warm workers with nothing to do: CPU, wakeups, RSS."""
    window = cfg["idle_seconds"]
    rows = []
    with Daemon(WARMD_NOOP, "idle") as daemon:
        workers = daemon.wait_warm(2)
        with daemon.client() as client:  # one job first, so the measured state is "after use"
            client.submit(jobs.noop).result()
        time.sleep(1.0)
        procs = {"warmd daemon": daemon.pid, **{f"warmd worker {i + 1}": pid for i, pid in enumerate(workers)}}
        before = {name: _sample(pid) for name, pid in procs.items()}
        t0 = time.monotonic()
        log(f"  idle: sampling {window:g} s")
        time.sleep(window)
        elapsed = time.monotonic() - t0
        after = {name: _sample(pid) for name, pid in procs.items()}
        for name, pid in procs.items():
            proc = psutil.Process(pid)
            cpu = (after[name][0] - before[name][0]) / elapsed * 100
            wakeups = (after[name][1] - before[name][1]) / elapsed
            mem = proc.memory_full_info()
            rows.append(_row("idle", "idle cost", name, cpu, "% CPU", wakeups_per_s=wakeups,
                             rss_mb=mem.rss / 1e6, uss_mb=mem.uss / 1e6, threads=proc.num_threads(),
                             window_s=elapsed))
    return rows


# ---------------------------------------------------------------------------- 6. cold start

def _wait_gone(pid: int, timeout: float = 30) -> None:
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.NoSuchProcess:
        pass


def coldstart(cfg, log) -> list[dict]:
    """First connection to first result, starting from nothing, per peer."""
    import warmd
    runs = cfg["coldstart_runs"]
    times: dict[str, list[float]] = {}
    connect: list[float] = []
    saved = {k: os.environ.get(k) for k in ("XDG_RUNTIME_DIR", "XDG_STATE_HOME", "XDG_CONFIG_HOME",
                                            "WARMD_CONFIG", "WARMD_SOCKET")}
    try:
        for r in range(runs):
            root = Path(tempfile.mkdtemp(prefix="wdb-cold-", dir=runtime_base()))
            os.environ.update(XDG_RUNTIME_DIR=str(root / "run"), XDG_STATE_HOME=str(root / "state"),
                              XDG_CONFIG_HOME=str(root / "config"))
            os.environ.pop("WARMD_CONFIG", None)
            os.environ.pop("WARMD_SOCKET", None)
            sock = root / "run" / "warmd.sock"
            t = time.perf_counter()
            client = warmd.Client(sock, autostart=True)
            connect.append(time.perf_counter() - t)
            client.submit(jobs.noop).result()
            times.setdefault("warmd autostart", []).append(time.perf_counter() - t)
            pid = client.daemon_info["pid"]
            client.shutdown_daemon()
            client.close()
            _wait_gone(pid)
            shutil.rmtree(root, ignore_errors=True)

            for name, make in (("ProcessPoolExecutor", peers.PoolPeer), ("warmpool", peers.WarmpoolPeer)):
                t = time.perf_counter()
                p = make()
                p.call(jobs.noop)
                times.setdefault(name, []).append(time.perf_counter() - t)
                p.close()
            if r < max(1, runs // 2):  # dask is slow to start: fewer runs
                t = time.perf_counter()
                p = peers.DaskPeer()
                p.call(jobs.noop)
                times.setdefault("dask", []).append(time.perf_counter() - t)
                p.close()
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            times.setdefault("floor: bare python start", []).append(time.perf_counter() - t)
            log(f"  cold start round {r + 1}/{runs}")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    rows = []
    for name, values in times.items():
        s = summary([v * 1e3 for v in values])
        extra = {"connect_ms": summary([v * 1e3 for v in connect])["p50"]} if name.startswith("warmd") else {}
        rows.append(_row("coldstart", "first connection to first result", name, s["p50"], "ms",
                         min=s["min"], n=s["n"], **extra))
    return rows + socket_activation(cfg, log)


def socket_activation(cfg, log) -> list[dict]:
    """First connection to first result when systemd starts warmd.service on that connection,
    on a private systemd --user (the test suite's fixture, tests/systemd_env.py); then the
    service's idle cost there, where the watchdog does wake it."""
    import warmd
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    try:
        import systemd_env
        systemd_env.check_available()
    except (ImportError, Exception) as exc:  # Unavailable, or no fixture in this tree
        return [_row("coldstart", "first connection to first result", "warmd socket activation", None,
                     "ms", note=f"not measured: {exc}")]
    root = Path(tempfile.mkdtemp(prefix="wsb-", dir="/tmp"))
    sd = systemd_env.PrivateSystemd(root)
    times, rows = [], []
    try:
        sd.start()
        done = systemd_env.warmctl(sd.env, "install-units", "--user-dir", str(sd.unit_dir), "--enable")
        if done.returncode:
            raise RuntimeError(f"install-units failed: {done.stdout}{done.stderr}")
        sock = sd.runtime / "warmd.sock"
        for r in range(cfg["coldstart_runs"]):
            sd.systemctl("stop", "warmd.service")
            sd.systemctl("reset-failed", "warmd.service", "warmd.socket", check=False)
            t = time.perf_counter()
            with warmd.Client(sock, autostart=False) as client:
                client.submit(jobs.noop).result()
                times.append(time.perf_counter() - t)
        s = summary([v * 1e3 for v in times])
        rows.append(_row("coldstart", "first connection to first result", "warmd socket activation",
                         s["p50"], "ms", min=s["min"], n=s["n"], note="systemd starts warmd.service"))
        # The service, idle under systemd with two warm workers: only the watchdog should wake it.
        with warmd.Client(sock, autostart=False) as client:
            while sum(w.state == "idle" for w in client.status().workers) < 2:
                time.sleep(0.05)
        pid = int(sd.show("warmd.service", "MainPID"))
        watchdog = _span(sd.show("warmd.service", "WatchdogUSec"))
        window = min(cfg["idle_seconds"], 30.0)
        time.sleep(1.0)
        before, t0 = _sample(pid), time.monotonic()
        log(f"  idle under systemd: sampling {window:g} s")
        time.sleep(window)
        elapsed, after = time.monotonic() - t0, _sample(pid)
        mem = psutil.Process(pid).memory_full_info()
        rows.append(_row("idle", "idle cost", "warmd daemon under systemd", (after[0] - before[0]) / elapsed * 100,
                         "% CPU", wakeups_per_s=(after[1] - before[1]) / elapsed, rss_mb=mem.rss / 1e6,
                         uss_mb=mem.uss / 1e6, threads=psutil.Process(pid).num_threads(), window_s=elapsed,
                         watchdog_s=watchdog))
    except Exception as exc:
        rows.append(_row("coldstart", "first connection to first result", "warmd socket activation", None,
                         "ms", note=f"not measured: {type(exc).__name__}: {exc}"))
    finally:
        sd.stop()
        shutil.rmtree(root, ignore_errors=True)
    return rows


def _span(text: str) -> float:
    """Seconds from a systemd time span as `systemctl show` prints it ("30s", "1min 30s", "0")."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}
    total = 0.0
    for part in text.split():
        number = part.rstrip("abcdefghijklmnopqrstuvwxyz")
        if number and part[len(number):] in units:
            total += float(number) * units[part[len(number):]]
        elif part.isdigit():
            total += int(part) / 1e6  # a bare number is microseconds
    return total
