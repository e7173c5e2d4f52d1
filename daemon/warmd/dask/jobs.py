"""``DaskJob`` and ``DaskGroup``: a warmd job on Dask, and jobs run and cancelled as one.

They keep ``warmd.JobFuture``'s and ``warmd.JobGroup``'s surface: a job is a
``concurrent.futures.Future`` with ``job_id``, ``events()``, ``output()``,
``finished``, a ``result()`` unpickled here when asked for, and a ``cancel()`` that
returns once the job's processes are gone; a group is an Executor with ``submit``,
``map``, ``cancel()``, ``progress``, ``events()`` and ``wait()``. A Dask group lives
in this client (Dask has no such thing): its roll-up is made here from its jobs'
events.
"""
from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Callable, Protocol

from ..client.events import ChildProgress, Event, Finished, Gap, Progress, Rerun, follow, output_text
from ..client.group import GroupExecutor, GroupProgress, results_in_order, rollup
from .carry import CarriedEnd, event_of

EVENT_GRACE = 5.0   # seconds to wait for events sent before a job's end but not yet here


class _Client(Protocol):
    def _cancel(self, jobs: list["DaskJob"], mode: str) -> None: ...
    def _call(self, fn: Callable[..., Any], args: tuple, kwargs: dict | None,
              options: dict[str, Any], group: "DaskGroup | None" = None) -> "DaskJob": ...


class DaskJob(concurrent.futures.Future):
    """One warmd job on a Dask cluster; ``job_id`` is its Dask key."""

    def __init__(self, client: _Client, key: str, name: str, group: "DaskGroup | None" = None) -> None:
        super().__init__()
        self._client = client
        self.key = key
        self.name = name
        self.group = group
        self.dask_future: Any = None
        self._events: list[Event] = []
        self._attempt_from = 0  # where the running attempt's events begin (after a Rerun)
        self._stream = threading.Condition()
        self._end: CarriedEnd | None = None
        self._loaded = False
        self._value: Any = None

    @property
    def job_id(self) -> str:
        return self.key

    def __reduce__(self) -> tuple:
        raise TypeError(f"job {self.key} cannot be an argument of another job: pass its value "
                        "(job.result()) instead")

    @property
    def finished(self) -> Finished | None:
        """The job's end record once it ended (``info`` has ``dask_worker`` too)."""
        end = self._end
        if end is None:
            return None
        return Finished(self.key, end.state, end.exit_status, end.error, end.payload,
                        {**end.info, "dask_worker": end.worker})

    def result(self, timeout: float | None = None) -> Any:
        super().result(timeout)
        with self._stream:
            if not self._loaded:
                self._value = self._end.value(self.key)
                self._loaded = True
        return self._value

    def events(self, start: int = 0) -> Iterator[Event]:
        """Output, log, progress and state events from index ``start``, until the job ends."""
        return follow(self._since, start)

    def _since(self, start: int) -> tuple[list[Event], bool]:
        with self._stream:
            self._stream.wait_for(lambda: start < len(self._events) or self.done())
            return self._events[start:], self.done()

    def output(self, stream: str = "stdout") -> str:
        with self._stream:
            return output_text(self._events, stream)

    def cancel(self, force: bool = False) -> bool:
        """Cancel the job, wherever it is: True once it ended cancelled (its processes gone),
        False if it had already ended."""
        if self.done():
            return self.cancelled()
        self._client._cancel([self], "kill" if force else "interrupt")
        concurrent.futures.wait([self])
        return self.cancelled()

    # -- fed by the client: events on its Dask event loop, the end on Dask's callback thread
    def _event(self, messages: list[dict[str, Any]]) -> None:
        found = [e for e in map(event_of, messages) if e is not None]
        with self._stream:
            for event in found:
                self._events.append(event)
                if isinstance(event, Rerun):  # the task's count of events sent starts again
                    self._attempt_from = len(self._events)
            self._stream.notify_all()
        if self.group is not None:
            for event in found:
                self.group._news(self, event)

    def _ended(self, end: CarriedEnd | None, error: BaseException | None = None) -> None:
        if end is not None:
            self._catch_up(end.events)
            self._event(end.tail)
        with self._stream:
            self._end = end
        if error is not None:
            self.set_exception(error)
        elif end.state == "succeeded":
            self.set_result(None)  # the value itself: see result()
        elif end.state == "cancelled":
            super().cancel()
            self.set_running_or_notify_cancel()
        else:
            try:
                end.value(self.key)
            except BaseException as exc:
                self.set_exception(exc)
        with self._stream:
            self._stream.notify_all()
        if self.group is not None:
            self.group._news(self, None)

    def _catch_up(self, sent: int) -> None:
        """Wait a little for events the task sent before it returned (they come by another
        path); a ``Gap`` stands for any that do not come."""
        deadline = time.monotonic() + EVENT_GRACE
        with self._stream:
            while len(self._events) - self._attempt_from < sent and time.monotonic() < deadline:
                self._stream.wait(deadline - time.monotonic())
            missing = sent - (len(self._events) - self._attempt_from)
            if missing > 0:
                self._events.append(Gap(self.key, -1, missing, None, 0, None))


class DaskGroup(GroupExecutor):
    """Jobs submitted as one run on Dask: ``submit``, ``map``, ``cancel()``, ``progress``,
    ``events()`` (a ``ChildProgress`` for each job's news) and ``wait()``. As a context
    manager it waits for its jobs, or cancels them if the block raised."""

    def __init__(self, client: _Client, key: str, name: str) -> None:
        self._client = client
        self.key = key
        self.name = name
        self.jobs: list[DaskJob] = []
        self._news_events: list[ChildProgress] = []
        self._latest: dict[str, Any] = {}  # job key -> its last Progress
        self._stream = threading.Condition()
        self._closed = False

    @property
    def job_id(self) -> str:
        return self.key

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> DaskJob:
        return self.submit_call(fn, args, kwargs)

    def submit_call(self, fn: Callable[..., Any], args: tuple = (), kwargs: dict | None = None,
                    **options: Any) -> DaskJob:
        if self._closed:
            raise RuntimeError(f"group {self.key} is closed: it takes no more jobs")
        job = self._client._call(fn, args, kwargs, options, group=self)
        with self._stream:
            if job not in self.jobs:  # its news may have come first
                self.jobs.append(job)
        return job

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """Like ``Executor.map``: results in order; raises at the first failing item, and
        then (as the iterator is dropped) cancels the jobs not yet done."""
        jobs = [self.submit_call(fn, args) for args in zip(*iterables)]
        return results_in_order(jobs, timeout, self.cancel)

    @property
    def progress(self) -> GroupProgress:
        with self._stream:
            return rollup(self._news_events)

    def events(self, start: int = 0) -> Iterator[ChildProgress]:
        """A ``ChildProgress`` for each job's news (progress, end), until every job ended."""
        return follow(self._since, start)

    def _since(self, start: int) -> tuple[list[ChildProgress], bool]:
        with self._stream:
            self._stream.wait_for(lambda: start < len(self._news_events) or self._over())
            return self._news_events[start:], self._over()

    def _over(self) -> bool:
        return self._closed and all(job.done() for job in self.jobs)

    def close(self) -> None:
        """Take no more jobs."""
        with self._stream:
            self._closed = True
            self._stream.notify_all()

    def cancel(self, force: bool = False) -> bool:
        """Cancel every job of the group in one go; returns once their processes are gone."""
        self.close()
        pending = [job for job in self.jobs if not job.done()]
        if pending:
            self._client._cancel(pending, "kill" if force else "interrupt")
            concurrent.futures.wait(pending)
        return any(job.cancelled() for job in self.jobs)

    def wait(self, timeout: float | None = None) -> Finished:
        """Close the group and block until its jobs have ended: succeeded if they all did,
        cancelled if any was, else failed."""
        self.close()
        done, pending = concurrent.futures.wait(self.jobs, timeout)
        if pending:
            raise TimeoutError(f"group {self.key}: {len(pending)} of {len(self.jobs)} jobs had not "
                               f"ended within {timeout} s")
        if all(not j.cancelled() and j.exception() is None for j in self.jobs):
            state = "succeeded"
        else:
            state = "cancelled" if any(j.cancelled() for j in self.jobs) else "failed"
        return Finished(self.key, state, 0, None)

    def _news(self, job: DaskJob, event: Event | None) -> None:
        """A job's progress report or end, as the ``ChildProgress`` a local group sends."""
        if event is not None and not isinstance(event, Progress):
            return
        with self._stream:
            if job not in self.jobs:
                self.jobs.append(job)
            if event is not None:
                self._latest[job.key] = event
            last = self._latest.get(job.key)
            end = job._end
            state = end.state if end is not None else ("failed" if job.done() else "running")
            done = sum(1 for j in self.jobs if j.done())
            self._news_events.append(ChildProgress(
                self.key, len(self._news_events) + 1, job.key, job.name, state,
                last.done if last else 0, last.total if last else None,
                last.message if last else "", dict(last.fields) if last else {},
                done, len(self.jobs), event.detail if event is not None else None))
            self._stream.notify_all()
