"""``AsyncJobGroup``: ``JobGroup`` for asyncio front ends (see ``warmd.client.group``)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any, Callable, Protocol

from . import jobspec
from .events import Event, Finished
from .group import GroupProgress, rollup


class _AsyncClient(Protocol):
    _modules: jobspec.UserModules
    _core: Any  # client.core.ClientCore

    async def submit_job(self, request: jobspec.JobRequest, *, device: int | None = None,
                         group: str | None = None) -> Any: ...
    async def cancel(self, job_id: str, mode: str = "interrupt") -> str: ...
    async def _call(self, message: str, payload: bytes = b"", /, **fields: Any) -> Any: ...


class AsyncJobGroup:
    """Jobs submitted as one group: ``submit``, ``map``, ``cancel()``, ``progress``,
    ``wait()``. ``async with`` closes it and waits, or cancels it if the block raised."""

    def __init__(self, client: _AsyncClient, job: Any, device: int | None) -> None:
        self._client = client
        self._job = job      # the group's own AsyncJob: roll-up events and its end
        self._device = device
        self._closed = False

    @property
    def job_id(self) -> str:
        return self._job.job_id

    async def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return await self.submit_job(self._client._core.call(fn, args, kwargs, self._client._modules))

    async def submit_call(self, fn: Callable[..., Any], args: tuple = (), kwargs: dict | None = None,
                          *, device: int | None = None, **options: Any) -> Any:
        """See ``JobGroup.submit_call``."""
        request = self._client._core.call(fn, args, kwargs or {}, self._client._modules)
        return await self.submit_job(request.with_options(jobspec.JobOptions(**options)), device=device)

    async def submit_job(self, request: jobspec.JobRequest, *, device: int | None = None) -> Any:
        if self._closed:
            raise RuntimeError(f"group {self.job_id} is closed: it takes no more jobs")
        return await self._client.submit_job(request, device=self._device if device is None else device,
                                             group=self.job_id)

    async def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
                  device: int | None = None) -> list[Any]:
        """Results in order; raises at the first failing item, cancelling the rest."""
        return await self.results(await self.submit_each(fn, iterables, device))

    async def submit_each(self, fn: Callable[..., Any], iterables: tuple[Iterable[Any], ...],
                          device: int | None = None) -> list[Any]:
        core, modules = self._client._core, self._client._modules
        return [await self.submit_job(core.call(fn, args, {}, modules), device=device)
                for args in zip(*iterables)]

    async def results(self, jobs: list[Any]) -> list[Any]:
        try:
            return [await job.result() for job in jobs]
        except BaseException:
            if any(not job.done() for job in jobs):
                await self.cancel()
            raise

    @property
    def progress(self) -> GroupProgress:
        return rollup(self._job._events)

    def events(self) -> AsyncIterator[Event]:
        return self._job.events()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client._call("group_close", job=self.job_id)

    async def cancel(self, force: bool = False) -> bool:
        self._closed = True
        outcome = await self._client.cancel(self.job_id, mode="kill" if force else "interrupt")
        await self._job.wait()
        return outcome in ("cancelled", "removed_from_queue")

    async def wait(self, timeout: float | None = None) -> Finished:
        await self.close()
        return await asyncio.wait_for(self._job.wait(), timeout)

    async def __aenter__(self) -> "AsyncJobGroup":
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            await self.cancel()
        else:
            await self.wait()
