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
The two /proc files stay open and are read with pread: one system call a read, where
opening each time took three.
"""
from __future__ import annotations

import os

SLACK = 4 << 20  # bytes of the last job's peak that the next may carry (allocator noise)
_PAGE = os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Reads and sets back this process's VmHWM through its /proc files, kept open."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}  # path -> descriptor (close-on-exec: never a job's)
        self._settled: int | None = None  # the mark after the last settle: no job since raised it

    def peak(self) -> int | None:
        """Bytes: the resident set's high-water mark since the last ``settle``."""
        try:
            data = self._read("/proc/self/status", 4096)
            at = data.index(b"VmHWM:") + 6
            return int(data[at:data.index(b"kB", at)]) * 1024
        except (OSError, ValueError):
            return None

    def settle(self, mark: int | None) -> None:
        """Between jobs: set the mark back to the resident set, if the last job left it higher."""
        try:
            if mark is None or mark == self._settled:
                return
            self._settled = mark
            if mark - int(self._read("/proc/self/statm", 128).split()[1]) * _PAGE <= SLACK:
                return
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except (OSError, ValueError, IndexError):
            pass

    def _read(self, path: str, size: int) -> bytes:
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY)
        return os.pread(fd, size, 0)
