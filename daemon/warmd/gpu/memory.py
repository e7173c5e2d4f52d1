"""A per-job high-water mark of cupy's device memory pool.

cupy keeps no peak figure: ``MemoryPool.used_bytes()`` is the use *now* and
``total_bytes()`` what the pool holds now (use plus cached free blocks, which
outlive the job under the "keep" policy, so it is no per-job figure either).

Pool use only grows when memory is allocated, so a sample of ``used_bytes()``
taken after each allocation sees the peak exactly. ``PeakTracker`` is
installed as cupy's allocator (``cupy.cuda.set_allocator``), wrapping the one
that was current (the default pool's ``malloc``), and samples there. Because
older cupy versions compute ``used_bytes()`` by summing the in-use chunks, it
samples only when a new peak is possible at all: it keeps an upper bound of
the use (the last sample plus every byte handed out since; frees only lower the
use) and skips the sample while that bound stays at or below the peak.

What it does not see: memory taken outside cupy's allocator (another
library's own cudaMalloc, the CUDA context itself), allocations made through a
thread-local ``cupy.cuda.using_allocator`` or straight from ``pool.malloc``,
and everything after a job replaced the allocator (``intact`` is then False and
the peak is only the larger of the samples at the job's start and end).
"""
from __future__ import annotations

import threading
from typing import Any, Callable


class PeakTracker:
    """Callable allocator: ``inner(size)``, then note the pool's use if it may be a new peak."""

    def __init__(self, cuda: Any, pool: Any) -> None:
        self._cuda = cuda                       # the cupy.cuda module (get/set_allocator)
        self._pool = pool                       # the device pool whose use is measured
        self._inner: Callable[[int], Any] = cuda.get_allocator()
        # Jobs may allocate from several threads; a free in a finalizer can run in between.
        self._lock = threading.RLock()
        self._peak = 0
        self._bound = 0

    def start(self) -> int:
        """Reset the high-water mark to the use now, (re)install as the allocator; return the use."""
        used = int(self._pool.used_bytes())
        with self._lock:
            self._peak = self._bound = used
        if self._cuda.get_allocator() is not self:
            self._cuda.set_allocator(self)
        return used

    def __call__(self, size: int) -> Any:
        memptr = self._inner(size)
        handed_out = getattr(getattr(memptr, "mem", None), "size", None)
        with self._lock:
            if handed_out is None:
                self._bound = self._peak + 1   # size unknown: sample now
            else:
                self._bound += int(handed_out)
            if self._bound > self._peak:
                used = int(self._pool.used_bytes())
                self._bound = used
                if used > self._peak:
                    self._peak = used
        return memptr

    def stop(self) -> tuple[int, bool]:
        """The job's peak pool use, and whether this tracker stayed the allocator throughout."""
        intact = self._cuda.get_allocator() is self
        used = int(self._pool.used_bytes())
        with self._lock:
            peak = max(self._peak, used)
        if not intact:
            # The job swapped the allocator: the next job starts from warmd's again.
            self._cuda.set_allocator(self)
        return peak, intact
