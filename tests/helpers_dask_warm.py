"""The warm state of the Dask tests: imported by warm-up (``[warmup] hooks``), so clients
send it by reference and every job on a worker sees the same module."""
import os

STATE = {"warmups": 0, "calls": 0, "warmed_in": None}


def warm():
    STATE["warmups"] += 1
    STATE["warmed_in"] = os.getpid()


def touch():
    """One more call on this warm worker: what it has seen so far."""
    STATE["calls"] += 1
    return dict(STATE, pid=os.getpid())
