"""A job's peak memory: the worker's resident set high-water mark (VmHWM), set back
after each job.

The kernel keeps the mark for the process's lifetime; writing "5" to
/proc/self/clear_refs sets it back to the current resident set, so the mark read at
a job's end is that job's own peak (its child processes apart). getrusage cannot
stand in: its figure never drops below the mark of the process the worker was
exec'd from. Reading the mark costs about 14 µs; the reset takes the address space's
write lock, so it is done after the job's end has been sent, and only when the mark
is above the resident set by more than SLACK (after a job that grew and shrank).
Where the kernel refuses the reset, the figure is the worker's peak so far.
"""
from __future__ import annotations

import os

SLACK = 4 << 20  # bytes of the last job's peak that the next may carry (allocator noise)
_PAGE = os.sysconf("SC_PAGE_SIZE")


def peak() -> int | None:
    """Bytes: the resident set's high-water mark since the last ``settle``."""
    try:
        data = _read("/proc/self/status", 4096)
        at = data.index(b"VmHWM:") + 6
        return int(data[at:data.index(b"kB", at)]) * 1024
    except (OSError, ValueError):
        return None


def settle(mark: int | None) -> None:
    """Between jobs: set the mark back to the resident set, if the last job left it higher."""
    try:
        if mark is None or mark - int(_read("/proc/self/statm", 128).split()[1]) * _PAGE <= SLACK:
            return
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except (OSError, ValueError, IndexError):
        pass


def _read(path: str, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)
