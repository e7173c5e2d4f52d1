"""What watchers cost: no-op dispatch with 0 and with 10 watch streams connected, in
alternating rounds of one run; and what an idle watcher costs (CPU while nothing happens).

    bench/.venv/bin/python bench/watch.py [--rounds 6] [--calls 1000] [--watchers 10]
                                          [--idle 10] [--top]

Each watcher is a separate process iterating ``Client.watch()``, as a front end would.
``--top`` also measures ``warmctl top`` itself, idle in a pseudo-terminal for
``--idle`` seconds (it needs Textual: ``pip install 'warmd[tui]'``).
"""
from __future__ import annotations

import argparse
import os
import pty
import select
import statistics
import subprocess
import sys
import time

import psutil

import common
from common import Daemon

common.setup_environment()
import jobs  # noqa: E402  (bench/jobs.py: the no-op job)

WATCHER = r"""
import sys, warmd
with warmd.Client(sys.argv[1], autostart=False) as client:
    events = client.watch()
    next(events)
    print("watching", flush=True)
    for event in events:
        pass
"""


def start_watchers(socket: str, n: int) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, "-c", WATCHER, socket], stdout=subprocess.PIPE, text=True)
             for _ in range(n)]
    for p in procs:
        assert p.stdout.readline() == "watching\n"
    return procs


def dispatch_round(client, calls: int) -> float:
    """Median microseconds of one submit-and-result of a no-op."""
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        client.submit(jobs.noop).result()
        times.append((time.perf_counter() - t) * 1e6)
    return statistics.median(times)


def idle_cpu(pid: int, seconds: float) -> float:
    """CPU seconds ``pid`` and its children used over ``seconds`` of wall time."""
    proc = psutil.Process(pid)

    def used() -> float:
        total = sum(proc.cpu_times()[:2])
        for child in proc.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.Error:
                pass
        return total
    before = used()
    time.sleep(seconds)  # the measurement itself: nothing happens in between
    return used() - before


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--watchers", type=int, default=10)
    p.add_argument("--idle", type=float, default=10.0)
    p.add_argument("--top", action="store_true", help="also measure warmctl top idle")
    args = p.parse_args()
    print(f"machine: {common.machine()}")
    with Daemon("[workers]\ncount = 1\nspares = 1\n", "watch") as d:
        d.wait_warm(2)
        socket = str(d.socket)
        daemon = psutil.Process(d.pid)
        with d.client() as client:
            for _ in range(200):
                client.submit(jobs.noop).result()
            results: dict[int, list[float]] = {0: [], args.watchers: []}
            cpu: dict[int, list[float]] = {0: [], args.watchers: []}
            for r in range(args.rounds):
                for n in ((0, args.watchers) if r % 2 == 0 else (args.watchers, 0)):
                    watchers = start_watchers(socket, n)
                    try:
                        before = sum(daemon.cpu_times()[:2])
                        results[n].append(dispatch_round(client, args.calls))
                        cpu[n].append((sum(daemon.cpu_times()[:2]) - before) / args.calls * 1e6)
                    finally:
                        for w in watchers:
                            w.kill()
                            w.wait()
            watchers = start_watchers(socket, 1)
            try:
                watcher_idle = idle_cpu(watchers[0].pid, args.idle)
                daemon_idle = idle_cpu(d.pid, args.idle)
            finally:
                watchers[0].kill()
                watchers[0].wait()
        top_idle = measure_top(socket, args.idle) if args.top else None
    base, loaded = statistics.median(results[0]), statistics.median(results[args.watchers])
    print(f"no-op dispatch, median of {args.rounds} rounds x {args.calls} calls:")
    print(f"  0 watchers:  {base:8.1f} us/call   daemon CPU {statistics.median(cpu[0]):6.1f} us/call")
    print(f"  {args.watchers} watchers: {loaded:8.1f} us/call   daemon CPU "
          f"{statistics.median(cpu[args.watchers]):6.1f} us/call")
    print(f"  ratio {loaded / base:.3f} (rounds: 0={[round(x) for x in results[0]]}, "
          f"{args.watchers}={[round(x) for x in results[args.watchers]]})")
    print(f"idle over {args.idle:g} s with one watcher: watcher {watcher_idle * 1e3:.1f} ms CPU, "
          f"daemon {daemon_idle * 1e3:.1f} ms CPU")
    if top_idle is not None:
        cpu_used, woke = top_idle
        main_thread = woke.pop(str(min(int(t) for t in woke)), 0) if woke else 0
        print(f"warmctl top idle over {args.idle:g} s: {cpu_used * 1e3:.1f} ms CPU; wake-ups: main "
              f"thread {main_thread}, other threads {sorted(woke.values(), reverse=True)}")
    return 0


def wakeups(pid: int) -> dict[str, int]:
    """Voluntary context switches so far of each of a process's threads, by thread id."""
    out = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status") as f:
            out[task] = sum(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))
    return out


def measure_top(socket: str, seconds: float) -> tuple[float, dict[str, int]]:
    """CPU seconds ``warmctl top`` uses over ``seconds`` once it has drawn, idle in a pty
    whose output is read all along (a full terminal would hold it up), and how many times
    each of its threads woke (voluntary context switches; the first is the main thread,
which runs the event loop and warmd's client)."""
    leader, terminal = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    proc = subprocess.Popen([sys.executable, "-m", "warmd.ctl", "--socket", socket, "--no-autostart", "top"],
                            stdin=terminal, stdout=terminal, stderr=terminal, env=env, start_new_session=True)
    os.close(terminal)

    def drain(until: float) -> None:
        while time.monotonic() < until:
            ready, _, _ = select.select([leader], [], [], max(0.0, until - time.monotonic()))
            if ready:
                try:
                    os.read(leader, 1 << 16)
                except OSError:
                    return
    try:
        drain(time.monotonic() + 5)  # start-up and first draw
        if proc.poll() is not None:
            raise RuntimeError("warmctl top exited")
        top = psutil.Process(proc.pid)
        before, woke = sum(top.cpu_times()[:2]), wakeups(proc.pid)
        drain(time.monotonic() + seconds)
        after = wakeups(proc.pid)
        return sum(top.cpu_times()[:2]) - before, {t: n - woke.get(t, 0) for t, n in after.items()}
    finally:
        proc.kill()
        proc.wait()
        os.close(leader)


if __name__ == "__main__":
    sys.exit(main())
