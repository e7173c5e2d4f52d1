"""``warmd.aio.AsyncClient``: the client for asyncio front ends (a Textual TUI, say).

It drives the same sans-I/O core as ``warmd.Client``; only the waiting differs.

    async with AsyncClient() as client:
        job = await client.submit(fn, x)
        async for event in job.events():
            ...
        value = await job.result()
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Callable

from .client import jobspec
from .client.aioconn import AsyncConnection
from .client.aiogroup import AsyncJobGroup
from .client.aiosession import AsyncSession
from .client.asyncjob import AsyncJob
from .client.core import cancel_fields, job_rows, status_of
from .client.events import Event, Finished
from .client.info import JobInfo, Status
from .client.outcome import JobCancelled
from .client.watch import WatchEvent, WatchFeed

__all__ = ["AsyncClient", "AsyncJob", "AsyncJobGroup", "JobCancelled"]


class AsyncClient(AsyncConnection):
    """Submit jobs to warm workers from asyncio code; see ``warmd.Client`` for the options."""

    async def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> AsyncJob:
        """Run ``fn(*args, **kwargs)`` on a warm worker; returns once the daemon accepted it."""
        return await self.submit_job(self._core.call(fn, args, kwargs, self._modules))

    async def submit_call(self, fn: Callable[..., Any], args: tuple = (), kwargs: dict | None = None,
                          *, device: int | None = None, **options: Any) -> AsyncJob:
        """See ``warmd.Client.submit_call``: the same options."""
        request = self._core.call(fn, args, kwargs or {}, self._modules)
        return await self.submit_job(request.with_options(jobspec.JobOptions(**options)), device=device)

    async def run_script(self, path: str, argv: list[str] | None = None, *,
                         device: int | None = None, **options: Any) -> AsyncJob:
        request = jobspec.script(path, argv or [])
        return await self.submit_job(request.with_options(jobspec.JobOptions(**options)), device=device)

    async def run_module(self, module: str, argv: list[str] | None = None, *,
                         device: int | None = None, **options: Any) -> AsyncJob:
        request = jobspec.module(module, argv or [])
        return await self.submit_job(request.with_options(jobspec.JobOptions(**options)), device=device)

    async def run_code(self, code: str, argv: list[str] | None = None, *,
                       device: int | None = None, **options: Any) -> AsyncJob:
        request = jobspec.code(code, argv or [])
        return await self.submit_job(request.with_options(jobspec.JobOptions(**options)), device=device)

    async def submit_job(self, request: jobspec.JobRequest, *, device: int | None = None,
                         group: str | None = None) -> AsyncJob:
        device = self.device if device is None else device
        frame = await self._call_with(lambda: self._core.submit(request, device, True, group))
        return self._accepted.pop(frame.header["req"])

    async def group(self, name: str = "group", *, device: int | None = None) -> AsyncJobGroup:
        """A new group of jobs (see ``warmd.Client.group``)."""
        frame = await self._call("group", name=str(name))
        return AsyncJobGroup(self, self._accepted.pop(frame.header["req"]),
                             self.device if device is None else device)

    async def map(self, fn: Callable[..., Any], *iterables: Any, device: int | None = None) -> list[Any]:
        """The jobs of one call form a group; results in order, raising at the first failing
        item (the rest are then cancelled)."""
        group = await self.group(name=f"map {getattr(fn, '__qualname__', None) or 'call'}", device=device)
        try:
            jobs = await group.submit_each(fn, iterables)
        finally:
            await group.close()
        return await group.results(jobs)

    async def session(self, name: str = "session", *, device: int | None = None) -> AsyncSession:
        """A warm worker held for this client's calls (see ``warmd.Client.session``); use it
        with ``async with``, or ``await session.close()``."""
        return await AsyncSession.open(self, name, device)

    async def attach(self, job_id: str) -> AsyncJob:
        """Follow a job submitted elsewhere (by id or unique prefix): output so far, the rest
        live, and its result."""
        frame = await self._call("attach", job=job_id)
        return self._accepted.pop(frame.header["req"])

    async def detach(self, job_id: str) -> None:
        """See ``warmd.Client.detach``."""
        self._jobs.pop(job_id, None)
        await self._call("detach", job=job_id)

    async def resolve(self, job_id: str) -> str:
        """The full id of the job ``job_id`` names (an id, or a unique prefix of one)."""
        return (await self._call("resolve", job=job_id)).header["job"]

    async def restart(self, job_id: str) -> str:
        """See ``warmd.Client.restart``."""
        return (await self._call("restart", job=job_id)).header["job"]

    async def forget(self, job_ids: list[str]) -> dict[str, Any]:
        """See ``warmd.Client.forget``."""
        reply = (await self._call("forget", jobs=list(job_ids))).header
        return {"jobs": list(reply.get("jobs") or []), "kept": dict(reply.get("kept") or {})}

    async def cancel(self, job_id: str, mode: str = "interrupt", *, interrupt_grace: float | None = None,
                     terminate_grace: float | None = None) -> str:
        fields = cancel_fields(job_id, mode, interrupt_grace, terminate_grace)
        return (await self._call("cancel", **fields)).header["outcome"]

    async def ping(self) -> dict[str, Any]:
        return (await self._call("ping")).header

    async def logs(self, job_id: str) -> list[Event]:
        """The events a job has produced so far, without following it."""
        job = self._follow(AsyncJob(self, await self.resolve(job_id)))
        try:
            await self._call("logs", job=job.id)  # the reply comes after the replayed events
        finally:
            self._unfollow(job)
        return list(job._events)

    async def wait(self, job_id: str) -> Finished:
        """Wait for a job submitted elsewhere to end; its end record (no output)."""
        frame = await self._call("wait", job=job_id)
        return await self._accepted.pop(frame.header["req"]).wait()

    async def status(self) -> Status:
        """See ``warmd.Client.status``."""
        return status_of(await self._call("status"))

    async def jobs(self) -> list[JobInfo]:
        """See ``warmd.Client.jobs``."""
        return job_rows(await self._call("jobs"))

    async def shutdown_daemon(self) -> None:
        """Ask the daemon to stop (it cancels what runs and exits)."""
        await self._call("shutdown")

    async def watch(self) -> AsyncIterator[WatchEvent]:
        """See ``warmd.Client.watch``: ``async for event in client.watch()``."""
        if self._watching is None:
            self._feed = WatchFeed()
            self._watching = asyncio.ensure_future(self._call("watch"))
        try:
            await asyncio.shield(self._watching)  # the snapshot that answers it fills the feed
        except BaseException:
            if self._watching.done():
                self._feed = self._watching = None
            raise
        async for event in self._feed.iterate(self._broken):
            yield event
