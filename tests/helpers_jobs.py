"""Job functions used by the tests. This file is user code: it travels by value."""
import logging
import os
import subprocess
import sys

import warmd

WARM = {"value": None}


def warm_hook():
    WARM["value"] = f"warmed-in-{os.getpid()}"


def read_warm():
    return WARM["value"], os.getpid()


def add(a, b):
    return a + b


def chatty(n):
    for i in range(n):
        print(f"out {i}", flush=True)
        warmd.progress(i + 1, n, f"step {i + 1}")
    print("to stderr", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-c", "print('from a child process')"], check=True)
    logging.getLogger("pipeline").warning("a log record")
    os.write(1, b"raw fd write\n")
    return n


class PipelineError(Exception):
    pass


def fail(message):
    raise PipelineError(message)


def exit_with(code):
    sys.exit(code)


def pid():
    return os.getpid()


def hang():
    """A warm-up hook that never returns."""
    import threading
    threading.Event().wait()


def shared_memory_and_pool(n):
    """Shared memory and a forkserver process pool, as image pipelines use them, and a
    process left running: the job's own, which must die when the job ends."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context, resource_tracker, shared_memory

    shm = shared_memory.SharedMemory(create=True, size=1 << 16)
    try:
        shm.buf[:4] = b"warm"
        with ProcessPoolExecutor(2, mp_context=get_context("forkserver")) as pool:
            total = sum(pool.map(abs, range(-n, n)))
    finally:
        shm.close()
        shm.unlink()
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    return total, leftover.pid, resource_tracker._resource_tracker._pid


CODE_CHANGES = []


def track_code_changes():
    """A warm-up hook: what warmd.on_code_change says, kept for the test to read."""
    @warmd.on_code_change
    def changed(names):
        CODE_CHANGES.append(sorted(names))
        if "brokenstep" in names:
            raise RuntimeError("the application could not refresh its caches")


def code_changes():
    return list(CODE_CHANGES)


def slow_warm_hook():
    """A warm-up that takes half a second, as an import-heavy one takes many."""
    import time
    time.sleep(0.5)
