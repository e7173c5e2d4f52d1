"""The jobs every peer runs. Plain module-level functions, so any peer can pickle them.

For warmd this file is user code and travels by value, as a user's own module would.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def noop(*args, **kwargs):
    return None


def now(*args, **kwargs) -> float:
    """Its first line: when the job started running (CLOCK_MONOTONIC is system-wide)."""
    return time.monotonic()


def sleeper(seconds: float = 60.0) -> None:
    """A cooperative job with a child process: both die of SIGINT."""
    child = subprocess.Popen(["sleep", str(int(seconds))])
    print("started", child.pid, flush=True)
    time.sleep(seconds)


def stuck() -> None:
    """A job that ignores SIGINT and SIGTERM and spins: only SIGKILL ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("started", os.getpid(), flush=True)
    x = 0
    while True:
        x += 1


# The same jobs as stand-alone programs, for the Popen + killpg runner.
SLEEPER_MAIN = ("import subprocess, time; c = subprocess.Popen(['sleep', '60']); "
                "print('started', c.pid, flush=True); time.sleep(60)")
STUCK_MAIN = ("import os, signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
              "signal.signal(signal.SIGTERM, signal.SIG_IGN); print('started', os.getpid(), flush=True)\n"
              "while True: pass")
NOW_MAIN = "import time; print(time.monotonic(), flush=True)"


if __name__ == "__main__":
    sys.exit("jobs for bench/run.py; not a program")


def busy_wait(i: int, seconds: float) -> int:
    """One well of a fan-out: ``seconds`` of work (a sleep: the peers share two cores)."""
    time.sleep(seconds)
    return i


def fan_out(n: int, seconds: float) -> list[int]:
    """A parent job: maps ``n`` wells over the daemon's warm workers."""
    import warmd
    with warmd.Client() as client:
        return list(client.map(busy_wait, range(n), [seconds] * n))
