"""When a client's daemon goes away: connecting again, and what to pick up there.

A daemon restarted (``systemctl --user restart``, a crash that systemd answers,
``warmctl shutdown`` followed by the next autostart) leaves a client's socket
closed. With ``reconnect`` on (the default) both clients connect again with
backoff, through socket activation or autostart as the first connection did,
for up to ``RECONNECT_FOR`` seconds. There they re-attach to every job they
follow, asking for the events after the last one they saw (``since``), and watch
again. A job the new daemon reports lost (its ledger names it) or does not know
ends with ``JobLost``; requests that were in flight when the connection ended
fail with ``DaemonUnavailable``, as their fate is not known.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Callable, TypeVar

from ..errors import DaemonUnavailable, JobLost, WarmdError
from ..protocol import E_SHUTTING_DOWN, Frame

T = TypeVar("T")

RECONNECT_FOR = 30.0
_FIRST_DELAY, _MAX_DELAY = 0.05, 2.0


def window(reconnect: bool | float) -> float:
    """Seconds to keep trying: ``True`` for RECONNECT_FOR, ``False`` (or 0) for none."""
    if reconnect is True:
        return RECONNECT_FOR
    if reconnect is False or reconnect is None:
        return 0.0
    seconds = float(reconnect)
    if not seconds >= 0:
        raise ValueError(f"reconnect must be True, False or seconds >= 0, not {reconnect!r}")
    return seconds


def worth_it(error: BaseException) -> bool:
    """Whether connecting again may help: the daemon went away, rather than refusing us."""
    return isinstance(error, DaemonUnavailable)


def for_the_next_daemon(frame: Frame, window: float, closed: bool) -> bool:
    """A refusal because the daemon is stopping (a restart), from a client that will connect
    to the next one: the request goes there instead of failing."""
    return (frame.type == "error" and frame.get("code") == E_SHUTTING_DOWN and bool(window)
            and not closed)


def delays(seconds: float) -> Iterator[float]:
    """How long to wait before each attempt: at once, then doubling from 50 ms to 2 s,
    until ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    delay = 0.0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        yield min(delay, left)
        delay = min(_MAX_DELAY, max(_FIRST_DELAY, delay * 2))


def connect_again(open_: Callable[[], T], seconds: float, stop: Callable[[float], bool]) -> T | None:
    """``open_()`` tried with backoff for ``seconds``: what it returned, or None when the
    time ran out, ``stop(delay)`` said to stop, or a daemon refused us (another version,
    a bad config), where trying again cannot help."""
    for delay in delays(seconds):
        if stop(delay):
            return None
        try:
            return open_()
        except (OSError, DaemonUnavailable):
            continue
        except WarmdError:
            return None
    return None


def since(handles: list[Any]) -> int:
    """The last event any of a job's handles has seen: the re-attach asks for what follows."""
    return max((h._last_seq for h in handles), default=0)


def unknown_after_reconnect(job_id: str, pid: Any) -> JobLost:
    return JobLost(job_id, f"job {job_id} is lost: the daemon went away while it ran, and the "
                           f"daemon now on the socket (pid {pid}) does not know it; its result and "
                           "the rest of its output are gone. Submit it again")
