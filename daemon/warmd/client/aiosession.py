"""``AsyncClient.session()``: ``warmd.client.session.Session`` for asyncio code, with the
same verbs (``submit``, ``submit_call``, ``map``, ``cancel``, ``close``), awaited."""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from ..channel import take_socket
from ..errors import ProtocolError
from ..receiver import BufferedReceiver
from ..unixtransport import UnixTransport
from . import jobspec
from .asyncjob import AsyncJob
from ..errors import SessionClosed
from .sessioncore import SessionCore, SessionFacts, check_options


class _Channel(BufferedReceiver):
    def __init__(self, session: "AsyncSession") -> None:
        self.session = session

    def received(self, data: memoryview, files: list) -> None:
        self.session._received(data, files)

    def connection_lost(self, exc: Exception | None) -> None:
        self.session._lost()


class AsyncSession(SessionFacts):
    """A warm worker held for this client's calls (see ``Client.session``)."""

    def __init__(self, client: Any, reply: Any) -> None:
        sock = take_socket(reply.files)
        if sock is None:
            raise ProtocolError("the daemon's answer to a session request did not carry its channel")
        self._client = client
        self._core = SessionCore(reply, client._core)
        self._jobs: dict[str, AsyncJob] = {}
        self._closing: SessionClosed | None = None
        self._ended = asyncio.Event()
        self._transport = UnixTransport(asyncio.get_running_loop(), sock, _Channel(self))

    @classmethod
    async def open(cls, client: Any, name: str, device: int | None) -> "AsyncSession":
        reply = await client._call("session", name=str(name), device=client.device if device is None else device)
        return cls(client, reply)

    async def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> AsyncJob:
        return self._send(self._client._core.call(fn, args, kwargs, self._client._modules))

    async def submit_call(self, fn: Callable[..., Any], args: tuple = (), kwargs: dict | None = None,
                          **options: Any) -> AsyncJob:
        check_options(options)
        request = self._client._core.call(fn, args, kwargs or {}, self._client._modules)
        return self._send(request.with_options(jobspec.JobOptions(**options)))

    async def map(self, fn: Callable[..., Any], *iterables: Any) -> list[Any]:
        """Results in order, raising at the first failing call (the rest still run)."""
        jobs = [self._send(self._client._core.call(fn, args, {}, self._client._modules))
                for args in zip(*iterables)]
        return [await job.result() for job in jobs]

    def _send(self, request: jobspec.JobRequest) -> AsyncJob:
        if self._closing is not None:
            raise self._closing
        job_id, data = self._core.call(request)
        job = self._jobs[job_id] = AsyncJob(self, job_id)
        for piece in data:
            self._transport.write(piece)
        return job

    async def cancel(self, job_id: str, mode: str = "interrupt") -> str:
        frame = await self._client._call("cancel", job=job_id, mode=mode, session=self.id)
        outcome = frame.header["outcome"]
        if outcome == "removed_from_queue":
            job = self._jobs.pop(job_id, None)
            if job is not None:
                job._add(self._core.skipped(job_id))
        return outcome

    def _received(self, data: memoryview, files: list) -> None:
        try:
            ends = self._core.receive_data(data, files)
        except ProtocolError:
            self._transport.close()
            return
        for end in ends:
            job = self._jobs.pop(end.job, None)
            if job is not None:
                job._add(end)

    def _lost(self) -> None:
        self._closing = self._closing or self._core.gone()
        lost, self._jobs = self._jobs, {}
        for job_id, job in lost.items():
            job._fail(self._core.lost(job_id))
        self._ended.set()

    async def close(self, *, cancel_futures: bool = False) -> None:
        """No more calls; once those sent have ended, let the worker go."""
        self._closing = self._closing or self._core.closed()
        pending = list(self._jobs.values())
        if cancel_futures:
            for job in pending:
                try:
                    await job.cancel()
                except Exception:
                    pass  # ended meanwhile, or the daemon is gone: the close below still runs
        for job in pending:
            try:
                await job.wait()
            except Exception:
                pass
        if not self._ended.is_set():
            try:
                await self._client._call("session_close", session=self.id)
            except Exception:
                pass  # the daemon or the session is gone already: nothing is held
        self._transport.close()
        await self._ended.wait()

    async def __aenter__(self) -> "AsyncSession":
        return self

    async def __aexit__(self, exc_type: Any, *exc: object) -> None:
        await self.close(cancel_futures=exc_type is not None)
