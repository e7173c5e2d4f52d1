"""The blocking client's connection: its reader thread, delivery of what the daemon
sends to the waiting callers and job handles, reconnecting when the daemon goes away,
and sending (``warmd.Client`` is this plus its verbs)."""
from __future__ import annotations

import os
import threading
from typing import Any, Callable

from .. import fdpass
from ..channel import Channel, send_wire
from ..errors import ClientClosed, DaemonUnavailable, WarmdError
from ..protocol import RECV_SIZE, Frame, Wire
from . import jobspec
from . import reconnect as reconnects
from .connect import connect, socket_path
from .core import ClientCore, JobItem, Reply, WatchItem, raise_for
from .events import Finished, Gap, Output, echo
from .future import JobFuture
from .watch import WatchFeed
from .waiters import Pending, Reattach, fail_waiting


class SyncConnection:
    """One connection to the daemon at a time (a new one after a reconnect), read by one
    thread; callers send from any thread."""

    def __init__(self, socket: str | os.PathLike | None = None, autostart: bool = True, *,
                 echo: bool = False, device: int | None = None, name: str = "python",
                 daemon_args: list[str] | None = None, reconnect: bool | float = True) -> None:
        self.socket_path = socket_path(socket)
        self.echo = echo
        self.device = device
        self._name, self._autostart, self._daemon_args = name, autostart, daemon_args
        self._reconnect_for = reconnects.window(reconnect)
        self._online = threading.Event()    # clear while connecting again
        self._stopping = threading.Event()  # close() ends a reconnect's backoff
        self._modules = jobspec.UserModules()
        self._lock = threading.Lock()
        self._requests: dict[int, Pending | JobFuture] = {}
        self._parked: list[JobFuture] = []  # refused by a stopping daemon: for the next one
        self._jobs: dict[str, list[JobFuture]] = {}  # job id -> futures following it
        self._closed = False
        self._shut = False  # shutdown() was called: no new jobs, the rest may still end
        self._broken: BaseException | None = None
        self._feed: WatchFeed | None = None      # this connection's watch, once asked for
        self._sessions: set[Any] = set()         # sessions open (warmd.client.session), closed with it
        self._watch_start = threading.Lock()
        self._channel, self._core = self._open()
        self._online.set()
        self._reader = threading.Thread(target=self._read_loop, name="warmd-client", daemon=True)
        self._reader.start()

    @property
    def daemon_info(self) -> dict[str, Any]:
        """What the daemon said in its welcome: version, pid, started_by."""
        return dict(self._core.welcome.header) if self._core.welcome else {}

    def _open(self) -> tuple[Channel, ClientCore]:
        """A new connection, greeted (starting a daemon if allowed and needed)."""
        channel, core = Channel(connect(self.socket_path, self._autostart, self._daemon_args)), ClientCore(self._name)
        try:
            channel.sock.sendall(core.greeting())
            while core.welcome is None:
                data = channel.sock.recv(65536)
                if not data:
                    raise core.eof()
                core.receive_data(data)
        except BaseException:
            channel.close()
            raise
        self._modules.warm_packages = frozenset(core.welcome.get("warm_packages", ()))
        return channel, core

    # ---------------------------------------------------------------- I/O thread
    def _read_loop(self) -> None:
        while True:
            error = self._read_until_lost()
            if not self._reconnected_after(error):
                break
        self._fail_all(error)

    def _read_until_lost(self) -> BaseException:
        sock, buffer = self._channel.sock, bytearray(RECV_SIZE)
        try:
            while True:
                n, files = fdpass.recv_into(sock, buffer)
                if not n:
                    error = self._core.eof()
                    break
                with memoryview(buffer) as view:
                    deliveries = self._core.receive_data(view[:n], files)
                for delivery in deliveries:
                    self._deliver(delivery)
                # Not kept until the next read: a result dropped by its caller goes now.
                files = deliveries = delivery = None
        except BaseException as exc:  # a protocol error or a reset
            error = exc if isinstance(exc, WarmdError) else DaemonUnavailable(f"connection to warmd lost: {exc}")
        return error

    def _reconnected_after(self, error: BaseException) -> bool:
        """Connect again and pick up what this client follows; False: not allowed, or the
        daemon did not come back in time."""
        if self._closed or not self._reconnect_for or not reconnects.worth_it(error):
            return False
        self._online.clear()
        with self._lock:
            waiting = list(self._requests.values())
            self._requests.clear()
            if self._feed is not None:
                self._feed.disconnected(error, reconnecting=True)
        fail_waiting(waiting, error)
        opened = reconnects.connect_again(self._open, self._reconnect_for, self._stopping.wait)
        if opened is None:
            return False
        channel, core = opened
        with self._lock:
            if self._closed:  # close() came while this connected: it shut the old one
                channel.close()
                return False
            old, self._channel, self._core = self._channel, channel, core
            followed = {job: reconnects.since(fs) for job, fs in self._jobs.items()}
            parked, self._parked = self._parked, []
            if self._feed is not None:
                self._feed.reconnected(core.welcome.get("pid"))
        old.close()
        self._online.set()
        try:
            for future in parked:
                self._send_with(future._resend, future)
            for job_id, seen in followed.items():  # the rest of their streams, or JobLost
                self._send_with(lambda j=job_id, n=seen: core.request("attach", job=j, since=n),
                                Reattach(job_id))
            if self._feed is not None:
                self._send_with(lambda: core.request("watch"), Pending())
        except OSError:
            pass  # gone again: the read loop finds out
        return True

    def _fail_all(self, error: BaseException) -> None:
        with self._lock:
            self._broken = error
            followed = [(job_id, f) for job_id, fs in self._jobs.items() for f in fs]
            waiting = list(self._requests.values()) + self._parked
            self._requests.clear()
            self._parked.clear()
            closed = self._closed
            if self._feed is not None:
                self._feed.disconnected(error)
        self._online.set()  # senders waiting for a reconnect see the error
        for job_id, future in followed:
            if not future.done():
                future._fail(self._core.followed_job_error(job_id, error, closed))
        # A request that waited when this client was closed (from another thread) ends
        # saying so, not that the daemon went away: it may be fine.
        fail_waiting(waiting, ClientClosed.while_waiting() if closed else error)

    def _deliver(self, delivery: Reply | JobItem | WatchItem) -> None:
        if isinstance(delivery, WatchItem):
            with self._lock:
                if self._feed is not None:
                    self._feed.received(delivery.frame)
            return
        if isinstance(delivery, JobItem):
            item = delivery.item
            with self._lock:
                futures = list(self._jobs.get(delivery.job, ()))
                if isinstance(item, Finished):
                    self._jobs.pop(delivery.job, None)
            if self.echo and isinstance(item, (Output, Gap)):
                echo(item)
            for future in futures:  # each unpickles its own result: its arrays are its own
                future._add(item)
            return
        with self._lock:
            waiter = self._requests.pop(delivery.req, None)
        if isinstance(waiter, Reattach):
            if delivery.frame.type == "error":  # the daemon now on the socket does not know it
                with self._lock:
                    futures = self._jobs.pop(waiter.job_id, [])
                lost = reconnects.unknown_after_reconnect(waiter.job_id, self.daemon_info.get("pid"))
                for future in futures:
                    future._fail(lost)
            return
        if isinstance(waiter, JobFuture):
            if reconnects.for_the_next_daemon(delivery.frame, self._reconnect_for, self._closed):
                with self._lock:  # sent again once connected to the next daemon
                    self._parked.append(waiter)
                return
            try:
                frame = raise_for(delivery.frame)
            except BaseException as exc:
                waiter._fail(exc)
                return
            if not waiter._detached:
                self._follow(frame.header["job"], waiter)
            waiter._accept(frame.header["job"])
        elif waiter is not None:
            waiter.frame = delivery.frame
            waiter.event.set()

    def _send(self, message: str, waiter: Pending | JobFuture, payload: bytes = b"", /,
              **fields: Any) -> None:
        self._send_with(lambda: self._core.request(message, payload, **fields), waiter)

    def _send_with(self, encode: Callable[[], tuple[int, Wire]], waiter: Any) -> None:
        if not self._online.is_set():
            self._online.wait(self._reconnect_for)  # connecting again: this goes to the new daemon
        # Encoded and sent under one lock: frames leave in the order the core made them.
        with self._channel.send_lock:
            with self._lock:
                if self._closed:
                    raise ClientClosed()
                if self._broken is not None:
                    raise self._broken
                req, data = encode()
                self._requests[req] = waiter
                if isinstance(waiter, JobFuture):
                    waiter._resend = encode  # to the next daemon, if this one is stopping
            send_wire(self._channel.sock, data)

    def _follow(self, job_id: str, future: JobFuture) -> None:
        with self._lock:
            self._jobs.setdefault(job_id, []).append(future)

    def _unfollow(self, job_id: str, future: JobFuture) -> None:
        with self._lock:
            futures = self._jobs.get(job_id, [])
            if future in futures:
                futures.remove(future)
            if not futures:
                self._jobs.pop(job_id, None)

    def _call(self, message: str, /, **fields: Any) -> Frame:
        pending = Pending()
        self._send(message, pending, **fields)
        pending.event.wait()
        if pending.error is not None:
            raise pending.error
        return raise_for(pending.frame)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            channel = self._channel  # a reconnect that swaps it after this sees _closed
        self._stopping.set()
        try:
            channel.sock.shutdown(2)
        except OSError:
            pass
        self._reader.join()
        self._channel.close()
