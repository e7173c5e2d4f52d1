"""Fake cupy.cuda.memory: a pool that only counts bytes, and the allocator switch.

Like cupy's MemoryPool: a block handed out is "used" until its last pointer
goes; it then stays cached in the pool ("total") until free_all_blocks();
a new allocation reuses cached bytes before growing the pool; set_limit caps
the pool's total. Sizes round up to 512 bytes, as cupy's do.
"""
from __future__ import annotations

from . import _state, runtime

_ROUND = 512


class OutOfMemoryError(MemoryError):
    def __init__(self, size: int, total: int, limit: int) -> None:
        super().__init__(f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} "
                         f"bytes, limit set to: {limit:,} bytes).")


class PooledMemory:
    def __init__(self, size: int, pool: "MemoryPool") -> None:
        self.size = size
        self.pool = pool

    def __del__(self) -> None:
        self.pool._release(self.size)


class MemoryPointer:
    def __init__(self, mem: PooledMemory) -> None:
        self.mem = mem


class MemoryPool:
    def __init__(self) -> None:
        self._used = 0
        self._total = 0
        self._limit = 0

    def malloc(self, size: int) -> MemoryPointer:
        runtime.check()
        _state.STATE.context = True
        size = -(-max(int(size), 1) // _ROUND) * _ROUND
        cached = self._total - self._used
        grow = max(0, size - cached)
        if self._limit and self._total + grow > self._limit:
            raise OutOfMemoryError(size, self._total, self._limit)
        if self._total + grow > runtime.device_memory():
            raise OutOfMemoryError(size, self._total, runtime.device_memory())
        self._total += grow
        self._used += size
        return MemoryPointer(PooledMemory(size, self))

    def _release(self, size: int) -> None:
        self._used -= size

    def used_bytes(self) -> int:
        return self._used

    def total_bytes(self) -> int:
        return self._total

    def free_bytes(self) -> int:
        return self._total - self._used

    def n_free_blocks(self) -> int:
        return 1 if self._total > self._used else 0

    def free_all_blocks(self, stream=None) -> None:
        runtime.check()
        self._total = self._used

    def set_limit(self, size: int | None = None, fraction: float | None = None) -> None:
        if fraction is not None:
            self._limit = int(fraction * runtime.device_memory())
        else:
            self._limit = int(size or 0)

    def get_limit(self) -> int:
        return self._limit


class PinnedMemoryPool:
    def __init__(self) -> None:
        self.frees = 0

    def free_all_blocks(self) -> None:
        self.frees += 1

    def n_free_blocks(self) -> int:
        return 0


class _Defaults:
    def __init__(self) -> None:
        self.pool = MemoryPool()
        self.pinned = PinnedMemoryPool()
        self.allocator = self.pool.malloc


_DEFAULTS = _Defaults()


def default_pool() -> MemoryPool:
    return _DEFAULTS.pool


def default_pinned_pool() -> PinnedMemoryPool:
    return _DEFAULTS.pinned


def _raw_malloc(size: int) -> MemoryPointer:
    # No pool: the fake still counts the bytes in a throw-away pool.
    return MemoryPool().malloc(size)


def set_allocator(allocator=None) -> None:
    _DEFAULTS.allocator = allocator if allocator is not None else _raw_malloc


def get_allocator():
    return _DEFAULTS.allocator


def alloc(size: int) -> MemoryPointer:
    return _DEFAULTS.allocator(size)
