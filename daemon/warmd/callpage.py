"""Which call a session's worker is running, in a page of memory it shares with the daemon.

A session's call tells the daemon it began only later (see ``worker.capture``), so
that a short call costs the daemon one wake-up, after its caller has the result.
Cancel cannot wait for that: the worker writes the call's id here before it looks
at its cancel pipe and runs the call, and clears it after the call's end has gone
to the daemon. The daemon, cancelling a call it has not heard of, names it in the
pipe first and reads the page after: if the page does not name the call, the
worker has not reached it, and will see its name in the pipe and skip it.

Layout: byte 0 is the id's length (0: no call), then the id, then at byte 72 the
call's start (time.time(), a native double).
"""
from __future__ import annotations

import mmap
import os
import struct

SIZE = 4096
_ID = 64
_START = struct.Struct("d")
_START_AT = 72


def create() -> tuple[int, mmap.mmap]:
    """A new page (its descriptor, to pass to the worker, and the daemon's mapping)."""
    fd = os.memfd_create("warmd-call-page", os.MFD_CLOEXEC)
    os.ftruncate(fd, SIZE)
    return fd, mmap.mmap(fd, SIZE)


def attach(fd: int) -> mmap.mmap | None:
    """The worker's mapping of the page the daemon passed it; None if it is not one."""
    try:
        if os.fstat(fd).st_size != SIZE:
            return None
        return mmap.mmap(fd, SIZE)
    except (OSError, ValueError):
        return None


def write(page: mmap.mmap, job_id: str, started: float) -> None:
    data = job_id.encode("ascii")[:_ID]
    page[1:1 + len(data)] = data
    page[_START_AT:_START_AT + _START.size] = _START.pack(started)
    page[0] = len(data)  # last: a reader sees the length with the id in place


def clear(page: mmap.mmap) -> None:
    page[0] = 0


def read(page: mmap.mmap) -> tuple[str, float] | None:
    """The call the worker is running (its id and start), or None."""
    n = page[0]
    if not n or n > _ID:
        return None
    return page[1:1 + n].decode("ascii", "replace"), _START.unpack_from(page, _START_AT)[0]
