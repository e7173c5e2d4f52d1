"""The watch stream on the client side: typed events, the tables they keep current, and
the fan-out to each ``watch()`` iterator.

A client watches once per connection, however many iterators it hands out. The
reader applies each event to one ``WatchState`` (jobs by id, workers by pid, the
summary) and passes it to every iterator's queue. Each iterator starts with a
``Snapshot`` of that state, so it is consistent from its first event; one whose
consumer falls ``MAX_QUEUED`` events behind is given a fresh ``Snapshot`` (``resync``)
in place of what it had not read, so a stalled front end costs the client a
bounded queue, as a stalled watcher costs the daemon a bounded buffer.
"""
from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Callable, Union

from ..protocol import Frame, load_json
from .info import JobInfo, Status, WorkerInfo

MAX_QUEUED = 10_000


@dataclass(frozen=True)
class Snapshot:
    """Everything at once: first on every watch, and again after a ``resync``."""
    status: Status
    jobs: dict[str, JobInfo]
    workers: dict[int, WorkerInfo]
    resync: bool = False


@dataclass(frozen=True)
class JobChanged:
    """A job was submitted, started, ended (or ``dropped``: expired or forgotten). Changes
    within one interval come as one event: ``changes`` in order, ``change`` the last, and
    ``job`` the row after them."""
    change: str
    job: JobInfo
    changes: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobProgress:
    """A job's progress report, or its children's count, moved (at most 10 a second)."""
    job: JobInfo            # its row with the new progress in it


@dataclass(frozen=True)
class WorkerChanged:
    """A worker started warming, became idle or busy, was recycled or exited."""
    worker: WorkerInfo


@dataclass(frozen=True)
class StatusChanged:
    summary: str
    jobs: dict[str, int]    # counts by state


@dataclass(frozen=True)
class Disconnected:
    """The connection to the daemon ended. ``reconnecting``: the client is connecting again
    (``Reconnected`` and a ``Snapshot`` follow when it has); else the iterator ends here."""
    error: BaseException | None = field(default=None, compare=False)
    reconnecting: bool = False


@dataclass(frozen=True)
class Reconnected:
    """Connected again, to a daemon on the same socket (perhaps a new one: ``pid``); a
    ``Snapshot`` with ``resync`` follows."""
    pid: int | None = None


WatchEvent = Union[Snapshot, JobChanged, JobProgress, WorkerChanged, StatusChanged, Disconnected,
                   Reconnected]


class WatchState:
    """The tables the watch stream keeps current: what a front end shows."""

    def __init__(self) -> None:
        self.status: Status | None = None
        self.jobs: dict[str, JobInfo] = {}
        self.workers: dict[int, WorkerInfo] = {}
        self.summary = ""
        self.counts: dict[str, int] = {}

    def apply(self, frame: Frame) -> WatchEvent | None:
        """The event a "watch" frame stands for, after updating the tables with it."""
        kind = frame.get("event")
        if kind == "snapshot":
            self.status = Status.from_row(frame.get("status") or {})
            self.jobs = {row["id"]: JobInfo.from_row(row) for row in load_json(frame.payload or b"[]")}
            self.workers = {w.pid: w for w in self.status.workers}
            self.summary, self.counts = self.status.summary, dict(self.status.jobs)
            return self.snapshot(bool(frame.get("resync")))
        if kind == "job":
            row = frame.get("job") or {}
            if frame.get("change") == "dropped":
                info = self.jobs.pop(row.get("id"), None) or JobInfo.from_row(
                    {"id": row.get("id"), "state": "dropped", "kind": "", "name": "", "submitted": 0})
            else:
                info = self.jobs[row["id"]] = JobInfo.from_row(row)
            change = str(frame.get("change"))
            return JobChanged(change, info, tuple(frame.get("changes") or (change,)))
        if kind == "progress":
            job = self.jobs.get(frame.get("job"))
            if job is None:
                return None
            job = self.jobs[job.id] = job.with_progress(frame.get("progress"), frame.get("children"))
            return JobProgress(job)
        if kind == "worker":
            worker = WorkerInfo.from_row(frame.get("worker") or {})
            if worker.live:
                self.workers[worker.pid] = worker
            else:
                self.workers.pop(worker.pid, None)
            return WorkerChanged(worker)
        if kind == "status":
            self.summary, self.counts = str(frame.get("summary")), dict(frame.get("jobs") or {})
            return StatusChanged(self.summary, self.counts)
        return None  # a kind a newer daemon sends: skipped

    def snapshot(self, resync: bool = False) -> Snapshot:
        return Snapshot(self.status, dict(self.jobs), dict(self.workers), resync)  # type: ignore[arg-type]


class Subscriber:
    """One ``watch()`` iterator's queue. ``wake`` is called after each push (from the thread
    or task that reads the socket): a condition's notify, or an asyncio event's set."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.queue: deque[WatchEvent] = deque()
        self.wake = wake
        self.ended = False

    def push(self, event: WatchEvent, state: WatchState) -> None:
        if len(self.queue) >= MAX_QUEUED and not isinstance(event, Disconnected):
            self.queue.clear()
            event = state.snapshot(resync=True)
        self.queue.append(event)
        if isinstance(event, Disconnected) and not event.reconnecting:
            self.ended = True
        self.wake()

    def take(self) -> WatchEvent | None:
        """The next event; None at the end (after a final ``Disconnected``)."""
        if not self.queue:
            return None
        return self.queue.popleft()


class WatchFeed:
    """What one connection's watch gives out: the state, and its subscribers."""

    def __init__(self) -> None:
        self.state = WatchState()
        self.subscribers: list[Subscriber] = []
        self.started = False   # the daemon has sent the first snapshot
        self.resync = False    # the next snapshot follows a reconnect

    def received(self, frame: Frame) -> None:
        event = self.state.apply(frame)
        if event is None:
            return
        if isinstance(event, Snapshot) and not event.resync:
            if not self.started:
                self.started = True  # each subscriber began with its own snapshot (subscribe)
                return
            if self.resync:
                self.resync = False
                event = self.state.snapshot(resync=True)
        self._push(event)

    def subscribe(self, wake: Callable[[], None], broken: BaseException | None = None) -> Subscriber:
        subscriber = Subscriber(wake)
        subscriber.queue.append(self.state.snapshot())
        if broken is not None:  # the connection ended before this subscriber came
            subscriber.push(Disconnected(broken), self.state)
        self.subscribers.append(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)

    def disconnected(self, error: BaseException | None, reconnecting: bool = False) -> None:
        self._push(Disconnected(error, reconnecting))
        if not reconnecting:
            self.subscribers.clear()

    def reconnected(self, pid: int | None) -> None:
        """Connected again; the watch request is sent again, and its snapshot resyncs."""
        self.resync = True
        self._push(Reconnected(pid))

    def _push(self, event: WatchEvent) -> None:
        for subscriber in list(self.subscribers):
            subscriber.push(event, self.state)

    # ------------------------------------------------------------- iterating
    def blocking(self, lock: threading.Lock, broken: Callable[[], BaseException | None]) -> Iterator[WatchEvent]:
        """A subscriber's events for a thread; ``lock`` guards the feed (the client's own)."""
        changed = threading.Condition(lock)
        with lock:
            subscriber = self.subscribe(changed.notify_all, broken())
        try:
            while True:
                with lock:
                    while (event := subscriber.take()) is None and not subscriber.ended:
                        changed.wait()
                if event is None:
                    return
                yield event
        finally:
            with lock:
                self.unsubscribe(subscriber)

    async def iterate(self, broken: BaseException | None) -> AsyncIterator[WatchEvent]:
        """A subscriber's events for asyncio (the feed is fed on the loop's thread)."""
        changed = asyncio.Event()
        subscriber = self.subscribe(changed.set, broken)
        try:
            while True:
                while (event := subscriber.take()) is None and not subscriber.ended:
                    changed.clear()
                    await changed.wait()
                if event is None:
                    return
                yield event
        finally:
            self.unsubscribe(subscriber)
