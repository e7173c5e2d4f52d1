"""The timer that drops finished jobs' results once they are older than daemon.result_ttl."""
from __future__ import annotations

import asyncio
import time
from typing import Callable

from .jobs import JobTable


class ResultExpiry:
    def __init__(self, jobs: JobTable, call_later: Callable[..., asyncio.TimerHandle]) -> None:
        self.jobs = jobs
        self.call_later = call_later
        self._handle: asyncio.TimerHandle | None = None
        self._when: float | None = None

    def schedule(self) -> None:
        """Arm the timer for the oldest retained result, after a job ended or results went."""
        when, armed = self.jobs.next_expiry(), self._when
        if when == armed or (when is not None and armed is not None and armed <= when):
            # The armed timer is due first (results expire in the order they finished): it
            # stands, and re-arms for what is then the oldest. Most job ends stop here.
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._when = when
        if when is not None:
            self._handle = self.call_later(max(0.0, when - time.time()) + 0.01, self._expire)

    def _expire(self) -> None:
        self._handle = None
        self._when = None
        self.jobs.evict()
        self.schedule()
