"""Jobs that misbehave in the ways cancel must handle. User code: travels by value."""
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

GRANDCHILD = r"""
import os, subprocess, sys, time
g = subprocess.Popen([sys.executable, "-c",
    "import os, time; os.setsid(); print(os.getpid(), flush=True); time.sleep(600)"],
    stdout=subprocess.PIPE, text=True)
print(g.stdout.readline().strip(), flush=True)
time.sleep(600)
"""


def busy(_):
    while True:
        pass


def pool_with_escapee():
    """ProcessPoolExecutor(4) of busy children, plus a grandchild that left the group."""
    child = subprocess.Popen([sys.executable, "-c", GRANDCHILD], stdout=subprocess.PIPE, text=True)
    grandchild = int(child.stdout.readline())
    with ProcessPoolExecutor(4) as pool:
        futures = [pool.submit(busy, i) for i in range(4)]
        pids = [p.pid for p in pool._processes.values()]
        while len(pids) < 4:
            pids = [p.pid for p in pool._processes.values()]
        print("PIDS", os.getpid(), child.pid, grandchild, *pids, flush=True)
        for f in futures:
            f.result()


def stuck():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("PIDS", os.getpid(), flush=True)
    while True:
        pass


def cooperative():
    print("PIDS", os.getpid(), flush=True)
    time.sleep(600)


def sleeper_with_child():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("PIDS", os.getpid(), child.pid, flush=True)
    time.sleep(600)


def wait_for_file(path):
    """Runs until the test lets it finish by writing to a FIFO."""
    print("PIDS", os.getpid(), flush=True)
    with open(path) as f:
        return f.read()


def quick(x):
    return x


def token_and_pid():
    return os.getpid()


def child_status():
    """A job with a child process: the child's exit status (-2 had a SIGINT reached it) and
    the worker's pid."""
    child = subprocess.run([sys.executable, "-c", "import time; time.sleep(0.05)"])
    return child.returncode, os.getpid()


def touch(path):
    open(path, "w").close()
