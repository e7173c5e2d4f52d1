"""The asyncio client's connection: greeting, reading on the event loop, delivering
replies and job events, reconnecting when the daemon goes away, and sending
(``warmd.aio.AsyncClient`` is this plus its verbs)."""
from __future__ import annotations

import asyncio
import os
from typing import Any, Callable

from ..errors import ClientClosed, DaemonUnavailable, WarmdError
from ..protocol import Frame
from ..receiver import BufferedReceiver
from ..unixtransport import UnixTransport
from . import jobspec
from . import reconnect as reconnects
from .asyncjob import AsyncJob
from .connect import connect, socket_path
from .core import ClientCore, JobItem, Reply, WatchItem, raise_for
from .events import Finished
from .watch import WatchFeed


class _Connection(BufferedReceiver):
    def __init__(self, client: "AsyncConnection") -> None:
        self.client = client

    def received(self, data: memoryview, files: list) -> None:
        if self.client._connection is self:
            self.client._received(data, files)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client._connection is self:  # not one replaced by a reconnect
            self.client._lost(exc)


class AsyncConnection:
    """One connection at a time (a new one after a reconnect), on the running event loop."""

    def __init__(self, socket: str | os.PathLike | None = None, autostart: bool = True, *,
                 device: int | None = None, name: str = "asyncio",
                 daemon_args: list[str] | None = None, reconnect: bool | float = True) -> None:
        self.socket_path = socket_path(socket)
        self.autostart = autostart
        self.device = device
        self.daemon_args = daemon_args
        self._name = name
        self._reconnect_for = reconnects.window(reconnect)
        self._online: asyncio.Event | None = None     # clear while connecting again
        self._reattaching: dict[int, str] = {}        # req -> job re-attached after a reconnect
        self._connection: _Connection | None = None
        self._core = ClientCore(name)
        self._modules = jobspec.UserModules()
        self._transport: asyncio.Transport | None = None
        self._welcome: asyncio.Future | None = None
        self._requests: dict[int, asyncio.Future] = {}
        self._jobs: dict[str, list[AsyncJob]] = {}
        self._accepted: dict[int, AsyncJob] = {}  # req -> job made when its reply was routed
        self._broken: BaseException | None = None
        self._closing = False
        self._feed: WatchFeed | None = None      # this connection's watch, once asked for
        self._watching: asyncio.Future | None = None
        self._gone = asyncio.Event()  # the current connection's end

    async def connect(self) -> "AsyncConnection":
        self._online = asyncio.Event()
        await self._open()
        self._online.set()
        return self

    async def _open(self) -> None:
        """A new connection, greeted (starting a daemon if allowed and needed)."""
        loop = asyncio.get_running_loop()
        # Connecting may start a daemon (a blocking wait on its ready pipe): keep it off the loop.
        sock = await asyncio.to_thread(connect, self.socket_path, self.autostart, self.daemon_args)
        self._core, self._welcome = ClientCore(self._name), loop.create_future()
        self._connection = _Connection(self)
        self._gone = asyncio.Event()  # set when this connection ends
        # Held here too: losing the connection while the welcome is awaited clears the
        # client's reference (``_lost``), and this attempt must still close its own.
        transport = self._transport = UnixTransport(loop, sock, self._connection)
        transport.write(self._core.greeting())
        try:
            await self._welcome
        except BaseException:
            self._connection = None
            transport.close()
            raise
        self._modules.warm_packages = frozenset(self._core.welcome.get("warm_packages", ()))

    async def _reconnect(self, error: BaseException) -> None:
        """Connect again and pick up what this client follows (see warmd.client.reconnect)."""
        for delay in reconnects.delays(self._reconnect_for):
            await asyncio.sleep(delay)
            if self._closing:
                break
            try:
                await self._open()
            except (OSError, DaemonUnavailable):
                continue
            except WarmdError:
                break  # a daemon that refuses us (another version, a bad config)
            if self._feed is not None:
                self._feed.reconnected(self._core.welcome.get("pid"))
            self._online.set()
            for job_id, jobs in self._jobs.items():  # the rest of their streams, or JobLost
                req, data = self._core.request("attach", job=job_id, since=reconnects.since(jobs))
                self._reattaching[req] = job_id
                self._write(data)
            if self._feed is not None:
                self._write(self._core.request("watch")[1])
            return
        self._fail_all(error)

    async def __aenter__(self) -> "AsyncConnection":
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
            transport = self._transport
            self._lost(exc)
            if transport is not None:
                transport.close()
            return
        if self._core.welcome is not None and self._welcome is not None and not self._welcome.done():
            self._welcome.set_result(self._core.welcome)
        for delivery in deliveries:
            if isinstance(delivery, Reply) and delivery.req in self._reattaching:
                self._reattached(self._reattaching.pop(delivery.req), delivery.frame)
            elif isinstance(delivery, WatchItem):
                if self._feed is not None:
                    self._feed.received(delivery.frame)
            elif isinstance(delivery, JobItem):
                jobs = self._jobs.get(delivery.job, [])
                if isinstance(delivery.item, Finished):
                    self._jobs.pop(delivery.job, None)
                for job in jobs:  # each unpickles its own result: its arrays are its own
                    job._add(delivery.item)
            else:
                waiter = self._requests.pop(delivery.req, None)
                frame = delivery.frame
                if frame.type in ("accepted", "attached", "group", "waiting"):
                    # Follow the job now, by the id the daemon gives (the request may have named
                    # a prefix): its first events may be in this same read.
                    self._accepted[delivery.req] = self._follow(AsyncJob(self, frame.header["job"]))
                if waiter is not None and not waiter.done():
                    waiter.set_result(frame)

    def _reattached(self, job_id: str, frame: Frame) -> None:
        if frame.type == "error":  # the daemon now on the socket does not know it
            lost = reconnects.unknown_after_reconnect(job_id, self._core.welcome.get("pid"))
            for job in self._jobs.pop(job_id, []):
                job._fail(lost)

    def _lost(self, exc: BaseException | None) -> None:
        error = exc if isinstance(exc, WarmdError) else self._core.eof()
        self._connection, self._transport = None, None
        self._gone.set()
        if self._welcome is not None and not self._welcome.done():
            self._welcome.set_exception(error)  # the handshake failed: connect() or _open() raises
            if self._online is not None and not self._online.is_set():
                return  # an attempt of a reconnect, which goes on
        welcomed = self._welcome is not None and self._welcome.done() and not self._welcome.exception()
        if (welcomed and not self._closing and self._reconnect_for and reconnects.worth_it(error)
                and self._online is not None):
            self._online.clear()
            for waiter in self._requests.values():  # their fate is not known
                if not waiter.done():
                    waiter.set_exception(error)
            self._requests.clear()
            self._reattaching.clear()
            if self._feed is not None:
                self._feed.disconnected(error, reconnecting=True)
            asyncio.ensure_future(self._reconnect(error))
            return
        self._fail_all(error)

    def _fail_all(self, error: BaseException) -> None:
        self._broken = error
        if self._online is not None:
            self._online.set()  # callers waiting for a reconnect see the error
        for waiter in self._requests.values():
            if not waiter.done():
                waiter.set_exception(ClientClosed.while_waiting() if self._closing else error)
        self._requests.clear()
        if self._feed is not None:
            self._feed.disconnected(error)
        for job_id, jobs in self._jobs.items():
            why = self._core.followed_job_error(job_id, error, self._closing)
            for job in jobs:
                job._fail(why)
        self._jobs.clear()

    # -- requests
    async def _call(self, message: str, payload: bytes = b"", /, **fields: Any) -> Frame:
        return await self._call_with(lambda: self._core.request(message, payload, **fields))

    async def _call_with(self, encode: Callable[[], tuple[int, list]]) -> Frame:
        while True:
            if self._online is not None and not self._online.is_set():
                try:  # connecting again: this goes to the new daemon
                    await asyncio.wait_for(self._online.wait(), self._reconnect_for)
                except asyncio.TimeoutError:
                    pass
            if self._closing:
                raise ClientClosed()
            if self._broken is not None:
                raise self._broken
            if self._transport is None:
                raise DaemonUnavailable("not connected: use 'async with AsyncClient()' or await connect()")
            req, data = encode()
            waiter = asyncio.get_running_loop().create_future()
            self._requests[req] = waiter
            gone = self._gone
            self._write(data)
            frame = await waiter
            if not reconnects.for_the_next_daemon(frame, self._reconnect_for, self._closing):
                return raise_for(frame)
            # The daemon is stopping (a restart): ask the next one, once this one has let go.
            await gone.wait()

    def _write(self, data: list) -> None:
        for piece in data:  # a large payload as its own piece, not joined to its header
            self._transport.write(piece)

    def _follow(self, job: AsyncJob) -> AsyncJob:
        self._jobs.setdefault(job.id, []).append(job)
        return job

    def _unfollow(self, job: AsyncJob) -> None:
        jobs = self._jobs.get(job.id, [])
        if job in jobs:
            jobs.remove(job)
        if not jobs:
            self._jobs.pop(job.id, None)

    @property
    def daemon_info(self) -> dict[str, Any]:
        """What the daemon said in its welcome: version, pid, started_by."""
        return dict(self._core.welcome.header) if self._core.welcome else {}
