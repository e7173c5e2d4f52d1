"""sd_notify: tell the service manager what the daemon is doing.

The daemon goes through three phases, and each message means something only in
some of them:

- starting: until READY=1. EXTEND_TIMEOUT_USEC pushes back TimeoutStartSec.
- serving: READY=1 is sent as soon as the socket is served (workers may still
  be warming; jobs queue meanwhile). STATUS= follows the one-line summary and
  WATCHDOG=1 comes from the event loop. EXTEND_TIMEOUT_USEC is not sent here:
  in this phase systemd would apply it to RuntimeMaxSec, prolonging the
  service's life instead of a warm-up.
- stopping: STOPPING=1, then EXTEND_TIMEOUT_USEC pushes back TimeoutStopSec
  while running jobs are cancelled or drained; no more watchdog pings.

With no $NOTIFY_SOCKET (autostart, by hand) every call is a no-op.
"""
from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from typing import Callable


class Phase(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    STOPPING = "stopping"


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None,
                 send: Callable[[str], object] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self.phase = Phase.STARTING
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID")
        watchdog_ours = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        # Ping at half the deadline, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval = int(usec) / 2e6 if self.enabled and watchdog_ours else None
        self._last_status: str | None = None
        self._notify: Callable[[str], object] = send or _no_op
        if self.enabled and send is None:
            from systemd import daemon  # systemd-python
            self._notify = daemon.notify

    def _send(self, text: str) -> None:
        if self.enabled:
            self._notify(text)

    def ready(self, status: str) -> None:
        """The socket is served: systemd may consider the start finished."""
        self.phase = Phase.SERVING
        self._last_status = status
        self._send(f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._last_status = status
            self._send(f"STATUS={status}")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for ``seconds`` more to finish starting or stopping (ignored while serving)."""
        if self.phase != Phase.SERVING:
            self._send(f"EXTEND_TIMEOUT_USEC={_usec(seconds)}")

    def watchdog(self) -> None:
        """Called from the event loop: proof that it still turns. Only while serving."""
        if self.phase == Phase.SERVING:
            self._send("WATCHDOG=1")

    def stopping(self, status: str, expect_seconds: float | None = None) -> None:
        """Stopping has begun; ``expect_seconds`` bounds how long ending the jobs may take."""
        self.phase = Phase.STOPPING
        self._last_status = status
        message = f"STOPPING=1\nSTATUS={status}"
        if expect_seconds is not None:
            message += f"\nEXTEND_TIMEOUT_USEC={_usec(expect_seconds)}"
        self._send(message)


def _usec(seconds: float) -> int:
    return max(1, int(seconds * 1e6))


def _no_op(text: str) -> None:
    pass
