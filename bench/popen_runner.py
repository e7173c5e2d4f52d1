"""The plain runner warmd's cancel is compared with: subprocess.Popen(..., start_new_session=True)
and os.killpg, with the same escalation and graces. Run as a separate program that is a
child subreaper, so every job process (grandchildren included) is reaped here and
"all job processes reaped" means the same as for warmd.

    python popen_runner.py MODE RUNS INTERRUPT_GRACE TERMINATE_GRACE  -> JSON on stdout
"""
from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time

import jobs

PROGRAMS = {"cooperative": jobs.SLEEPER_MAIN, "stuck": jobs.STUCK_MAIN, "forced": jobs.SLEEPER_MAIN}


def wait_exit(pid: int, fd: int, timeout: float | None) -> bool:
    """True once ``pid`` has exited (not reaped), False after ``timeout``."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else timeout * 1000))


def reap_all() -> None:
    """Reap the job and everything it left behind (re-parented here): until no child is left."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def one(mode: str, interrupt_grace: float, terminate_grace: float) -> dict:
    proc = subprocess.Popen([sys.executable, "-c", PROGRAMS[mode]], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proc.stdout.readline()  # "started": the job runs
    fd = os.pidfd_open(proc.pid)
    t0 = time.monotonic()
    if mode == "forced":
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        os.killpg(proc.pid, signal.SIGINT)
        if not wait_exit(proc.pid, fd, interrupt_grace):
            os.killpg(proc.pid, signal.SIGTERM)
            if not wait_exit(proc.pid, fd, terminate_grace):
                os.killpg(proc.pid, signal.SIGKILL)
    wait_exit(proc.pid, fd, None)
    reap_all()
    proc.returncode = -1  # reaped above
    t1 = time.monotonic()
    os.close(fd)
    proc.stdout.close()
    nxt = subprocess.run([sys.executable, "-c", jobs.NOW_MAIN], capture_output=True, text=True)
    first_line = float(nxt.stdout.strip())
    reap_all()
    return {"cancel": t1 - t0, "next": first_line - t0}


def main() -> None:
    mode, runs = sys.argv[1], int(sys.argv[2])
    interrupt_grace, terminate_grace = float(sys.argv[3]), float(sys.argv[4])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    json.dump([one(mode, interrupt_grace, terminate_grace) for _ in range(runs)], sys.stdout)


if __name__ == "__main__":
    main()
