"""Job functions for the job-group tests. This file is user code: it travels by value."""
import os
import signal
import time

import warmd


def well(i, delay=0.0):
    """One well: reports where it is, returns its index and the worker that ran it."""
    warmd.progress(0, 2, f"well {i}", well=f"W{i:02d}", phase="load")
    if delay:
        time.sleep(delay)
    warmd.progress(2, 2, f"well {i}", well=f"W{i:02d}", phase="done")
    return i, os.getpid()


def plate(n, workers_delay=0.0):
    """A parent job: fans ``n`` wells out over the warm workers, in order."""
    with warmd.Client() as client:
        return list(client.map(well, range(n), [workers_delay] * n))


def sleeper(marker_dir, i):
    """A child that records its pid (and a grandchild's) and sleeps until cancelled."""
    import subprocess
    import sys
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(os.path.join(marker_dir, f"{i}.pids"), "w") as f:
        f.write(f"{os.getpid()} {child.pid}\n")
    time.sleep(600)


def plate_of_sleepers(marker_dir, n):
    with warmd.Client() as client:
        return list(client.map(sleeper, [marker_dir] * n, range(n)))


def raise_while_children_run(marker_dir, n):
    with warmd.Client() as client:
        group = client.group(name="doomed")
        for i in range(n):
            group.submit(sleeper, marker_dir, i)
        group.close()
        while len([f for f in os.listdir(marker_dir) if f.endswith(".pids")]) < min(n, 1):
            time.sleep(0.05)
        raise RuntimeError("the parent failed")


def fan_out_with(n):
    """A parent with a single worker slot: its children must run or fail clearly."""
    with warmd.Client() as client:
        return sorted(i for i, _ in client.map(well, range(n)))


class OnlyInWorkers:
    """A result that a client cannot unpickle: its reduce calls a function that refuses
    outside a worker."""

    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        return (_rebuild, (self.value,))


def _rebuild(value):
    if warmd.job_id() is None:
        raise RuntimeError("OnlyInWorkers unpickled outside a warmd job")
    return OnlyInWorkers(value)


def compile_plate(n):
    return OnlyInWorkers(list(range(n)))


def use_compiled(compiled, i):
    return compiled.value[i] * 10


def pid_of_self():
    return os.getpid()


def interrupt_self():
    os.kill(os.getpid(), signal.SIGINT)
