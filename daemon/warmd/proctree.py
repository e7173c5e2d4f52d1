"""Process-tree bookkeeping shared by the daemon and the workers.

Rules: signal only processes verified to be the ones we mean (psutil checks the
create time before every signal, so a recycled pid is never hit), treat ESRCH as
an ordinary outcome, and reap what we kill.
"""
from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Iterable

import psutil

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Make orphaned descendants re-parent to this process instead of init."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


_WALL = 0x40000000  # __WALL: children of any kind, whichever signal they send their parent


def has_children() -> bool:
    """Cheap test (one syscall, no /proc scan) for any child of this process, zombies included.

    waitid() with WNOHANG|WNOWAIT reaps nothing: it fails with ECHILD only when
    there is no child at all (of any thread of this process).
    """
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT | _WALL)
    except ChildProcessError:
        return False
    except OSError:
        return True  # cannot tell: assume yes, as the sweep after it is always safe
    return True


def child_pids() -> set[int] | None:
    """This process's children from /proc/self/task/*/children (no scan of all of /proc),
    or None where the kernel does not offer that file."""
    pids: set[int] = set()
    try:
        tasks = os.listdir("/proc/self/task")
        for tid in tasks:
            try:
                with open(f"/proc/self/task/{tid}/children", "rb") as f:
                    pids.update(int(p) for p in f.read().split())
            except FileNotFoundError:
                continue  # that thread ended
    except OSError:
        return None
    return pids


def descendants(pid: int | None = None) -> list[psutil.Process]:
    """All living-or-zombie descendants of ``pid`` (default: this process)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def identity(proc: psutil.Process) -> tuple[int, float]:
    return proc.pid, proc.create_time()


def send(procs: Iterable[psutil.Process], sig: int) -> None:
    """Signal each process still the one recorded; a vanished or recycled pid is skipped."""
    for proc in procs:
        try:
            proc.send_signal(sig)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def signal_group(pgid: int, sig: int) -> bool:
    """killpg that treats an empty group as a normal outcome. Returns whether it was delivered.

    Callers must only pass a group whose leader they have not reaped yet, so the
    group id cannot have been recycled.
    """
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def alive(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    """The processes of ``procs`` that still exist and are not zombies."""
    out = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.NoSuchProcess:
            pass
    return out


def kill_descendants(keep: frozenset[tuple[int, float]] = frozenset()) -> int:
    """SIGKILL and reap every descendant of this process not in ``keep``; return how many.

    This process must be a child subreaper, so descendants whose parents die are
    re-parented here and reaped by this loop. Repeats until nothing new appears,
    which catches processes forked while the sweep ran.
    """
    killed = 0
    me = psutil.Process()
    while True:
        victims = [p for p in descendants() if _ident(p) not in keep]
        if not victims:
            return killed
        send(victims, signal.SIGKILL)
        killed += len(victims)
        for child in me.children():
            if _ident(child) in keep:
                continue
            try:
                os.waitpid(child.pid, 0)
            except ChildProcessError:
                pass


def _ident(proc: psutil.Process) -> tuple[int, float] | None:
    try:
        return identity(proc)
    except psutil.NoSuchProcess:
        return None


def snapshot_identities() -> frozenset[tuple[int, float]]:
    """(pid, create time) of every current descendant, to spare them in a later sweep."""
    if not has_children():
        return frozenset()
    return frozenset(i for p in descendants() if (i := _ident(p)) is not None)


def describe_status(status: int) -> str:
    """'exit status 3' or 'signal SIGKILL' from a waitpid status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by {name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
