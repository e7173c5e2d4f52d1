"""A job's standard input: the caller's own descriptor, passed to the job's fd 0.

A client that gives a job a stdin (``warmctl exec``/``run`` when their stdin is not a
terminal, ``stdin=`` in the Python clients) sends that descriptor itself with the
submit frame (SCM_RIGHTS), after the buffers' memfds, and says so in the header
(``"stdin": true``). The daemon checks that it can be read and hands it on with the
run; the worker puts it on fd 0 for the job's time. So the job, and every program it
starts, reads the caller's pipe or file directly, at the pace it reads, to its EOF:
nothing is copied through the daemon, and a writer that outruns the job blocks as it
would in a shell pipeline. Without one a job reads the worker's /dev/null.
"""
from __future__ import annotations

import fcntl
import os
import stat
import sys
from typing import Any, Sequence

from .memfd import Descriptor


class BadStdin(ValueError):
    """The descriptor offered as a job's stdin cannot be one."""


def descriptor(source: Any) -> Descriptor:
    """A copy of ``source`` (a descriptor number, or an object with ``fileno()``) to send as a
    job's stdin, checked to be readable first; BadStdin if it is not."""
    fd = source if isinstance(source, int) else source.fileno()
    try:
        copy = Descriptor(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 0))
    except OSError as exc:
        raise BadStdin(f"stdin: descriptor {fd} cannot be passed to a job: {exc.strerror}") from None
    check(copy.fd)
    return copy


def check(fd: int) -> None:
    """BadStdin unless ``fd`` is open for reading and is not a directory."""
    try:
        st = os.fstat(fd)
        mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    except OSError as exc:
        raise BadStdin(f"stdin: the descriptor cannot be examined: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise BadStdin("stdin: the descriptor is a directory, which a job cannot read as input")
    if mode == os.O_WRONLY:
        raise BadStdin("stdin: the descriptor is open for writing only, so a job could not read it")


def split(header: dict[str, Any], files: Sequence[Descriptor]) -> tuple[Sequence[Descriptor], Descriptor | None]:
    """A frame's buffer descriptors, and its stdin (the last one) if the header says it has one."""
    value = header.get("stdin")
    if value is None or value is False:
        return files, None
    if value is not True:
        raise BadStdin(f"stdin must be true or false, not {value!r}")
    if not files:
        raise BadStdin("stdin: the header says a descriptor for it came, and none did")
    return files[:-1], files[-1]


class OnFd0:
    """For a job's time: ``file`` on fd 0 and a fresh ``sys.stdin`` reading it (so no job
    reads what an earlier one left in a buffer); after, the worker's own again.

    ``restore`` may be called more than once: the worker calls it again once the job has
    ended, when no cancel can interrupt it, so fd 0 is never left as a job's input.
    """

    def __init__(self, file: Descriptor | None) -> None:
        self.file = file
        self.saved_fd = -1
        self.saved_stream: Any = None

    def enter(self) -> None:
        if self.file is None:
            return
        self.saved_fd = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
        self.saved_stream = sys.stdin
        os.dup2(self.file.fd, 0)  # inheritable: the programs the job starts read it too
        sys.stdin = open(0, "r", closefd=False, encoding=getattr(sys.stdin, "encoding", None),
                         errors=getattr(sys.stdin, "errors", None))

    def restore(self) -> None:
        if self.saved_fd >= 0:
            os.dup2(self.saved_fd, 0)
            os.close(self.saved_fd)
            self.saved_fd = -1
            sys.stdin, self.saved_stream = self.saved_stream, None
        self.file = None
