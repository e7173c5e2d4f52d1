"""Sealed memfds: the files that array data crosses processes in (see ``warmd.oob``).

A sender writes a buffer into an anonymous memory file once, seals it against
shrinking, growing and writing, and passes the descriptor with its frame. After
that nobody can change the bytes or make a mapping of them fault, so a receiver
checks a descriptor once (``check``) and then maps it privately (``map_private``):
copy-on-write, so its arrays are writable and what it writes stays its own.

A ``Descriptor`` owns one descriptor number and closes it when the last reference
goes (or on ``close``): frames, jobs and mappings hold them, and nothing has to
remember to close what an error path dropped.
"""
from __future__ import annotations

import fcntl
import mmap
import os
import resource
import stat
from typing import Iterable

SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
MAX_FDS = 253          # descriptors one frame may carry: the kernel's SCM_MAX_FD for one sendmsg
PAGE = mmap.PAGESIZE
_FLAGS = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING


class BadDescriptor(ValueError):
    """A descriptor that came with a frame is not a sealed memfd holding what was declared."""


class Descriptor:
    """One open descriptor, closed when this object goes (or by ``close``)."""

    __slots__ = ("fd", "__weakref__")

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Descriptor {self.fd}>"


def owned(fds: Iterable[int]) -> list[Descriptor]:
    return [Descriptor(fd) for fd in fds]


def make_room(highest: int) -> None:
    """Past half the soft limit on open descriptors, take the hard limit. A front end keeps
    one memfd open per result it holds (a plate's wells: thousands), where the soft limit
    a shell or a service starts with is 1024; the kernel allows far more."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and highest >= soft // 2:
        raise_descriptor_limit()


def raise_descriptor_limit() -> None:
    """Take the hard limit on open descriptors as the soft one (systemd's advice for a
    program that needs many: it starts services with 1024 of a far higher hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):
        pass


def create(size: int, name: str = "warmd") -> Descriptor:
    """A new memfd of ``size`` bytes (zeros), close-on-exec, that may be sealed later."""
    fd = Descriptor(os.memfd_create(name, _FLAGS))
    os.ftruncate(fd.fd, size)
    return fd


def layout(sizes: Iterable[int]) -> tuple[list[int], int]:
    """Offsets for buffers placed one after another in one file, each on a page boundary
    (so each maps on its own), and the file's size."""
    offsets, end = [], 0
    for n in sizes:
        offsets.append(end)
        end += -(-n // PAGE) * PAGE
    return offsets, end


def write_sealed(buffers: list[memoryview]) -> tuple[Descriptor, list[int]]:
    """One sealed memfd holding ``buffers`` (each at its offset, returned).

    ``pwrite`` fills the file's pages as it allocates them; writing through a shared
    mapping would fault every page in and zero it first, at a fraction of the speed.
    """
    offsets, size = layout(b.nbytes for b in buffers)
    fd = create(size)
    for buffer, offset in zip(buffers, offsets):
        view, done = buffer.cast("B"), 0
        while done < len(view):
            done += os.pwrite(fd.fd, view[done:], offset + done)
    seal(fd.fd)
    return fd, offsets


def seal(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS | fcntl.F_SEAL_SEAL)


def check(fd: int, need: int) -> int:
    """The size of a received descriptor's file, after checking that it is a memfd sealed
    against every change and holds at least ``need`` bytes; BadDescriptor if not."""
    try:
        st = os.fstat(fd)
    except OSError as exc:
        raise BadDescriptor(f"descriptor cannot be examined: {exc}") from None
    if not stat.S_ISREG(st.st_mode) or not _is_memfd(fd):
        raise BadDescriptor("a descriptor is not a memfd (buffers travel only in sealed memfds, "
                            "as warmd's clients and workers send them)")
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError:
        seals = 0
    if seals & SEALS != SEALS:
        raise BadDescriptor("a memfd is not sealed against shrinking, growing and writing: its "
                            "sender could change it or cut it short under the receiver")
    if st.st_size < need:
        raise BadDescriptor(f"a memfd holds {st.st_size} bytes, fewer than the {need} declared")
    return st.st_size


def _is_memfd(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:")
    except OSError:
        return False


class Mapping(mmap.mmap):
    """A mapping of part of a memfd, knowing which file and where: a buffer built on it can be
    passed on as that file again, uncopied (see ``warmd.inplace``)."""

    file: Descriptor      # kept open while the mapping lives, to be sent again
    offset: int           # where in the file the mapping starts
    sealed: bool          # False only for a producer's own file before its first send


def map_private(file: Descriptor, offset: int, size: int) -> memoryview:
    """A writable copy-on-write view of ``size`` bytes at ``offset`` of a checked memfd."""
    if size == 0:
        return memoryview(bytearray())
    start = offset - offset % PAGE
    mapping = Mapping(file.fd, size + offset - start, flags=mmap.MAP_PRIVATE,
                      prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=start)
    mapping.file, mapping.offset, mapping.sealed = file, start, True
    return memoryview(mapping)[offset - start:]


def map_new(size: int) -> Mapping:
    """A new memfd of ``size`` bytes mapped shared and writable: a producer fills it in place."""
    file = create(size)
    mapping = Mapping(file.fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    mapping.file, mapping.offset, mapping.sealed = file, 0, False
    return mapping
