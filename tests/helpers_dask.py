"""Job functions of the Dask tests. This file is user code: it travels by value."""
import logging
import os
import subprocess
import sys

import warmd

import helpers_dask_warm


def touch():
    return helpers_dask_warm.touch()


def steps(n):
    for i in range(n):
        print(f"line {i}", flush=True)
        warmd.progress(i + 1, n, f"step {i + 1}", step=i)
        logging.getLogger("steps").warning("record %d", i)
    print("to stderr", file=sys.stderr, flush=True)
    return n


def wait_for(fifo, marker=None):
    """Block until someone opens ``fifo`` for writing and closes it; then leave ``marker``."""
    print(f"waiting {os.getpid()}", flush=True)
    with open(fifo) as f:
        f.read()
    if marker:
        open(marker, "w").close()
    return "released"


def sleeper_child():
    """Start a child that would sleep for an hour, say its pid, and wait for it."""
    child = subprocess.Popen(["sleep", "3600"])
    print(f"child {child.pid} worker {os.getpid()}", flush=True)
    child.wait()
    return "child ended"


def double(array):
    return array * 2


def fail(message):
    raise ValueError(message)


def print_lines(n, width):
    for i in range(n):
        print(f"{i:08d}" + "x" * (width - 9), flush=True)
    return n


def nested(n):
    """A job that maps jobs of its own: they go to its own daemon."""
    with warmd.Client() as client:
        return list(client.map(abs, range(-n, 0))), client.daemon_info["pid"]


def write_bytes(total, rate=None, chunk=1 << 16):
    """``total`` bytes of output, a chunk at a time, at most ``rate`` bytes a second."""
    import time
    block = b"y" * (chunk - 1) + b"\n"
    start = time.monotonic()
    for i in range(total // chunk):
        sys.stdout.buffer.write(block)
        sys.stdout.flush()
        if rate:
            time.sleep(max(0.0, start + (i + 1) * chunk / rate - time.monotonic()))
    return total


def start_then_wait(log, gate):
    """Note this start in ``log`` (a line per start, with the warm worker's pid), then wait
    for ``gate`` to exist."""
    import time
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    print(f"started {os.getpid()}", flush=True)
    while not os.path.exists(gate):
        time.sleep(0.01)
    return "done"
