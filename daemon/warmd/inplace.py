"""Buffers that already live in a memfd, and passing them on without copying them.

``warmd.buffer``, ``warmd.empty`` and ``warmd.zeros`` allocate in a memfd mapped
shared and writable, so a producer fills its array where it will travel from.
An array that arrived from warmd lives in a private mapping of the sender's
sealed memfd. Either can be sent as that same file, uncopied, when its bytes are
still the file's (``reusable``):

- A producer's own file is sealed on its first send. The kernel refuses to seal a
  file against writing while it is mapped shared and writable, so the producer's
  mapping is first replaced, at the same address, by a private one of the same
  file: its arrays keep working and see the same bytes, and what it writes from
  then on lands in its own copied pages, never in what was sent.
- A private mapping's written pages are the process's own copies. The kernel says
  which pages those are (/proc/self/pagemap: an anonymous page where the file's
  page was): if any of a buffer's pages is one, it is copied to a new file;
  otherwise the file itself goes again. A job that returns its input unchanged
  costs no copy in either direction.
"""
from __future__ import annotations

import mmap
from typing import Any

from . import memfd

_PAGEMAP_PRESENT = 1 << 63
_PAGEMAP_SWAPPED = 1 << 62
_PAGEMAP_FILE = 1 << 61
_MAP_FIXED = 0x10


def buffer(nbytes: int) -> memoryview:
    """``nbytes`` of writable memory in a memfd: sent through warmd, it goes uncopied."""
    if nbytes < 0:
        raise ValueError(f"a buffer of {nbytes} bytes cannot be made")
    if nbytes == 0:
        return memoryview(bytearray())
    return memoryview(memfd.map_new(nbytes))


def empty(shape: Any, dtype: Any = float, order: str = "C") -> Any:
    """Like ``numpy.empty`` (the memory is zeros, in fact), allocated in a memfd."""
    import numpy as np
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    return np.ndarray(shape, dtype, buffer=buffer(count * dtype.itemsize), order=order)


def zeros(shape: Any, dtype: Any = float, order: str = "C") -> Any:
    """Like ``numpy.zeros``, allocated in a memfd (a new memfd's pages read as zeros)."""
    return empty(shape, dtype, order)


def source(view: memoryview) -> tuple[memfd.Mapping, int] | None:
    """The memfd mapping ``view`` lies in and the view's offset in that file, if it does."""
    owner: Any = view.obj
    for _ in range(64):  # an array's bases: views of views of ... the mapping
        if isinstance(owner, memfd.Mapping):
            break
        base = getattr(owner, "base", None)
        if base is None:
            base = getattr(owner, "obj", None)  # a memoryview's exporter
        if base is None or base is owner:
            return None
        owner = base
    else:
        return None
    if owner.closed:
        return None
    start = _address(memoryview(owner))
    at = _address(view)
    if not start <= at <= start + len(owner) - view.nbytes:
        return None
    return owner, owner.offset + (at - start)


def reusable(mapping: memfd.Mapping, view: memoryview) -> bool:
    """Whether ``view`` (a part of ``mapping``) may be sent as the mapping's file: its
    bytes are the file's. A producer's file is sealed here, on its first send."""
    if not mapping.sealed and not _seal_in_place(mapping):
        return False
    return _unwritten(_address(view), view.nbytes)


def _seal_in_place(mapping: memfd.Mapping) -> bool:
    import ctypes  # here, not at import: the daemon never needs it
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    start = _address(memoryview(mapping))
    got = libc.mmap(start, len(mapping), mmap.PROT_READ | mmap.PROT_WRITE,
                    mmap.MAP_PRIVATE | _MAP_FIXED, mapping.file.fd, 0)
    if got != start:
        return False
    try:
        memfd.seal(mapping.file.fd)
    except OSError:
        return False
    mapping.sealed = True
    return True


def _unwritten(address: int, nbytes: int) -> bool:
    """No page of the range is the process's own copy (or swapped out, as only those are)."""
    first, last = address // memfd.PAGE, (address + nbytes - 1) // memfd.PAGE
    try:
        with open("/proc/self/pagemap", "rb", buffering=0) as f:
            f.seek(first * 8)
            data = f.read((last - first + 1) * 8)
    except OSError:
        return False
    import numpy as np
    entries = np.frombuffer(data, dtype=np.uint64)
    present = (entries & np.uint64(_PAGEMAP_PRESENT)) != 0
    own = present & ((entries & np.uint64(_PAGEMAP_FILE)) == 0)
    swapped = (entries & np.uint64(_PAGEMAP_SWAPPED)) != 0
    return len(entries) == last - first + 1 and not (own | swapped).any()


def _address(view: memoryview) -> int:
    import numpy as np
    return np.frombuffer(view, dtype=np.uint8).ctypes.data if view.nbytes else 0
