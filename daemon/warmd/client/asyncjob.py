"""``AsyncJob``: one job for asyncio code, with its id, its events, its result and cancel."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

from .events import Event, Finished, output_text
from .outcome import result_of


class _AsyncClient(Protocol):
    """What a job needs of its client (``warmd.aio.AsyncClient``), named here so that this
    module does not import the client that imports it."""

    async def cancel(self, job_id: str, mode: str = "interrupt") -> str: ...


class AsyncJob:
    """One job: its id, its events, its result, and cancel."""

    def __init__(self, client: _AsyncClient, job_id: str) -> None:
        self.client = client
        self.id = job_id
        self._events: list[Event] = []
        self._last_seq = 0
        self._end: Finished | None = None
        self._error: BaseException | None = None
        self._changed = asyncio.Event()

    @property
    def job_id(self) -> str:
        return self.id

    def __warmd_ref__(self) -> str:
        return self.id  # passed to another job, this job stands for its result

    @property
    def finished(self) -> Finished | None:
        return self._end

    def done(self) -> bool:
        return self._end is not None or self._error is not None

    async def events(self) -> AsyncIterator[Event]:
        """Every event of the job from its first, live, until the job ends."""
        i = 0
        while True:
            while i < len(self._events):
                yield self._events[i]
                i += 1
            if self.done():
                return
            self._changed.clear()
            await self._changed.wait()

    async def wait(self) -> Finished:
        while not self.done():
            self._changed.clear()
            await self._changed.wait()
        if self._error is not None:
            raise self._error
        return self._end

    async def result(self) -> Any:
        """The job's return value, or the exception it raised (JobCancelled, JobLost...)."""
        return result_of(await self.wait())

    def output(self, stream: str = "stdout") -> str:
        """All text the job wrote to ``stream`` that this client received so far."""
        return output_text(self._events, stream)

    async def cancel(self, force: bool = False, *, mode: str | None = None) -> bool:
        """Cancel the job and return once its processes are gone; False if it had finished."""
        if self.done():
            return self._end is not None and self._end.state == "cancelled"
        outcome = await self.client.cancel(self.id, mode=mode or ("kill" if force else "interrupt"))
        if outcome in ("cancelled", "removed_from_queue"):
            end = await self.wait()
            return end.state == "cancelled"
        return False

    def _add(self, item: Event | Finished) -> None:
        if isinstance(item, Finished):
            if self._end is None:
                self._end = item
        elif item.seq > self._last_seq:
            self._last_seq = item.seq
            self._events.append(item)
        self._changed.set()

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        self._changed.set()
