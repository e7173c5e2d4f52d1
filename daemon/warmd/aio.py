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
import os
from collections.abc import AsyncIterator
from typing import Any, Callable

from .client import jobspec
from .client.aiogroup import AsyncJobGroup
from .client.connect import connect, socket_path
from .client.core import ClientCore, JobItem, cancel_fields, raise_for
from .client.events import Event, Finished, output_text
from .client.outcome import JobCancelled, result_of
from .errors import DaemonUnavailable, WarmdError
from .protocol import Frame
from .receiver import BufferedReceiver
from .unixtransport import UnixTransport

__all__ = ["AsyncClient", "AsyncJob", "AsyncJobGroup", "JobCancelled"]


class AsyncJob:
    """One job: its id, its events, its result, and cancel."""

    def __init__(self, client: "AsyncClient", job_id: str) -> None:
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


class _Connection(BufferedReceiver):
    def __init__(self, client: "AsyncClient") -> None:
        self.client = client

    def received(self, data: memoryview, files: list) -> None:
        self.client._received(data, files)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._lost(exc)


class AsyncClient:
    """Submit jobs to warm workers from asyncio code; see ``warmd.Client`` for the options."""

    def __init__(self, socket: str | os.PathLike | None = None, autostart: bool = True, *,
                 device: int | None = None, name: str = "asyncio",
                 daemon_args: list[str] | None = None) -> None:
        self.socket_path = socket_path(socket)
        self.autostart = autostart
        self.device = device
        self.daemon_args = daemon_args
        self._core = ClientCore(name)
        self._modules = jobspec.UserModules()
        self._transport: asyncio.Transport | None = None
        self._welcome: asyncio.Future | None = None
        self._requests: dict[int, asyncio.Future] = {}
        self._jobs: dict[str, list[AsyncJob]] = {}
        self._accepted: dict[int, AsyncJob] = {}  # req -> job made when its reply was routed
        self._broken: BaseException | None = None
        self._closing = False

    async def connect(self) -> "AsyncClient":
        loop = asyncio.get_running_loop()
        # Connecting may start a daemon (a blocking wait on its ready pipe): keep it off the loop.
        sock = await asyncio.to_thread(connect, self.socket_path, self.autostart, self.daemon_args)
        self._welcome = loop.create_future()
        self._transport = UnixTransport(loop, sock, _Connection(self))
        self._transport.write(self._core.greeting())
        await self._welcome
        self._modules.warm_packages = frozenset(self._core.welcome.get("warm_packages", ()))
        return self

    async def __aenter__(self) -> "AsyncClient":
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # -- bytes in
    def _received(self, data: bytes, files: list) -> None:
        try:
            deliveries = self._core.receive_data(data, files)
        except BaseException as exc:
            self._lost(exc)
            if self._transport is not None:
                self._transport.close()
            return
        if self._core.welcome is not None and self._welcome is not None and not self._welcome.done():
            self._welcome.set_result(self._core.welcome)
        for delivery in deliveries:
            if isinstance(delivery, JobItem):
                jobs = self._jobs.get(delivery.job, [])
                if isinstance(delivery.item, Finished):
                    self._jobs.pop(delivery.job, None)
                for job in jobs:  # each unpickles its own result: its arrays are its own
                    job._add(delivery.item)
            else:
                waiter = self._requests.pop(delivery.req, None)
                frame = delivery.frame
                if frame.type in ("accepted", "attached", "group"):
                    # Follow the job now, by the id the daemon gives (the request may have named
                    # a prefix): its first events may be in this same read.
                    self._accepted[delivery.req] = self._follow(AsyncJob(self, frame.header["job"]))
                if waiter is not None and not waiter.done():
                    waiter.set_result(frame)

    def _lost(self, exc: BaseException | None) -> None:
        error = exc if isinstance(exc, WarmdError) else self._core.eof()
        self._broken = error
        if self._welcome is not None and not self._welcome.done():
            self._welcome.set_exception(error)
        for waiter in self._requests.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._requests.clear()
        for job_id, jobs in self._jobs.items():
            why = self._core.followed_job_error(job_id, error, self._closing)
            for job in jobs:
                job._fail(why)
        self._jobs.clear()

    # -- requests
    async def _call(self, message: str, payload: bytes = b"", /, **fields: Any) -> Frame:
        return await self._call_with(lambda: self._core.request(message, payload, **fields))

    async def _call_with(self, encode: Callable[[], tuple[int, list]]) -> Frame:
        if self._broken is not None:
            raise self._broken
        if self._transport is None:
            raise DaemonUnavailable("not connected: use 'async with AsyncClient()' or await connect()")
        req, data = encode()
        waiter = asyncio.get_running_loop().create_future()
        self._requests[req] = waiter
        for piece in data:  # a large payload as its own piece, not joined to its header
            self._transport.write(piece)
        return raise_for(await waiter)

    def _follow(self, job: AsyncJob) -> AsyncJob:
        self._jobs.setdefault(job.id, []).append(job)
        return job

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

    async def attach(self, job_id: str) -> AsyncJob:
        """Follow a job submitted elsewhere (by id or unique prefix): output so far, the rest
        live, and its result."""
        frame = await self._call("attach", job=job_id)
        return self._accepted.pop(frame.header["req"])

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

    async def status(self) -> dict[str, Any]:
        return {k: v for k, v in (await self._call("status")).header.items() if k not in ("t", "req")}

    async def jobs(self) -> list[dict[str, Any]]:
        return (await self._call("jobs")).header["jobs"]
