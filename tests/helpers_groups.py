"""Job functions for the job-group tests. This file is user code: it travels by value."""
import os
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


def sleeper(i):
    """A child that starts a grandchild, says both pids in a progress report, and sleeps
    until cancelled."""
    import subprocess
    import sys
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    warmd.progress(1, 2, "sleeping", pid=os.getpid(), grandchild=child.pid)
    time.sleep(600)


def plate_of_sleepers(n):
    with warmd.Client() as client:
        return list(client.map(sleeper, range(n)))


def raise_while_children_run(n):
    """A parent that fails once one of its children is asleep."""
    with warmd.Client() as client:
        group = client.group(name="doomed")
        for i in range(n):
            group.submit(sleeper, i)
        group.close()
        for event in group.events():
            if getattr(event, "fields", {}).get("grandchild"):
                break
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


def device_after(delay):
    time.sleep(delay)
    return warmd.device()


def fail_on(i, bad):
    if i == bad:
        raise ValueError(f"well {i} is bad")
    return i


def blob(i, size):
    return bytes([i % 256]) * size


def rich_progress(detail_bytes):
    """Progress richer than a report holds: 20 fields (one named ``total``), values that
    are not scalars, a message of 100 kB and a detail record of ``detail_bytes`` of JSON.
    Returns what it sent, for the test to compare with what arrived."""
    fields = {"total": 7, **{f"f{i:02d}": i for i in range(19)}}
    fields["f00"] = {"nested": [1, 2]}
    fields["f01"] = float("nan")
    detail = {"phase": "step_completed", "axis_id": "A01", "owned_wells": ["A01", "B01"],
              "context": {"blob": "x" * detail_bytes}}
    warmd.progress(1, 2, "m" * 100_000, detail=detail, **fields)
    warmd.progress(2, 2, "done", well="A01")
    return detail


def rich_progress_in_group(detail_bytes):
    with warmd.Client() as client:
        with client.group(name="rich") as group:
            return group.submit(rich_progress, detail_bytes).result()
