"""``JobGroup``: jobs submitted as one run, cancelled as one, their progress rolled up.

A group lives in the daemon, listed with its jobs (``warmctl jobs`` shows the
tree; ``warmctl cancel GROUP`` cancels them all). It ends when it is closed and
its jobs have ended: succeeded if they all did, else failed. Created from inside
a job, a group is that job's child, so it and its jobs are cancelled with it.
"""
from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from . import jobspec
from .events import ChildProgress, Finished


class _Client(Protocol):
    """What a group calls back into (``warmd.Client``, which builds groups)."""
    _modules: jobspec.UserModules
    _core: Any  # client.core.ClientCore

    def submit_job(self, request: jobspec.JobRequest, *, device: int | None = None,
                   attach: bool = True, group: str | None = None) -> Any: ...
    def cancel(self, job_id: str, mode: str = "interrupt") -> str: ...
    def wait(self, job_id: str) -> Finished: ...
    def _call(self, message: str, /, **fields: Any) -> Any: ...


@dataclass(frozen=True)
class GroupProgress:
    """A group's roll-up: ``done`` of ``total`` jobs have ended; ``jobs`` holds each job's
    latest news (its own progress report and state)."""
    done: int = 0
    total: int = 0
    jobs: dict[str, ChildProgress] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Ended jobs plus the running ones' own reported fractions, over all jobs."""
        if not self.total:
            return 0.0
        part = sum(min(1.0, c.done / c.total) for c in self.jobs.values()
                   if not c.ended and c.total)
        return min(1.0, (self.done + part) / self.total)


def rollup(events: Iterable[Any]) -> GroupProgress:
    """The roll-up a group's (or a parent's) events add up to."""
    latest: dict[str, ChildProgress] = {}
    last: ChildProgress | None = None
    for event in events:
        if isinstance(event, ChildProgress):
            latest[event.child] = event
            last = event
    if last is None:
        return GroupProgress()
    return GroupProgress(last.children_done, last.children_total, latest)


class GroupExecutor(concurrent.futures.Executor):
    """What every kind of group does with its ``cancel``, ``wait`` and ``close``: the
    Executor's ``shutdown``, and as a context manager, wait for its jobs, or cancel them
    if the block raised."""

    def cancel(self, force: bool = False) -> bool:
        raise NotImplementedError

    def wait(self, timeout: float | None = None) -> Finished:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            self.cancel()
        elif wait:
            self.wait()
        else:
            self.close()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is not None:
            self.cancel()
        else:
            self.wait()
        return False


class JobGroup(GroupExecutor):
    """An Executor whose jobs form one group: ``submit``, ``map``, ``cancel()``,
    ``progress``, ``wait()``. As a context manager it closes the group and waits for
    its jobs, or cancels them if the block raised."""

    def __init__(self, client: _Client, future: Any, device: int | None) -> None:
        self._client = client
        self._future = future   # the group's own stream: roll-up events and its end
        self._device = device
        self._closed = False

    @property
    def job_id(self) -> str:
        return self._future.job_id

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return self.submit_job(self._client._core.call(fn, args, kwargs, self._client._modules))

    def submit_call(self, fn: Callable[..., Any], args: tuple = (), kwargs: dict | None = None, *,
                    device: int | None = None, **options: Any) -> Any:
        """A call into the group with the job's options (name, timeout, priority, log_level,
        env, stdin), as ``Client.submit_call`` takes them."""
        request = self._client._core.call(fn, args, kwargs or {}, self._client._modules)
        return self.submit_job(request.with_options(jobspec.JobOptions(**options)), device=device)

    def submit_job(self, request: jobspec.JobRequest, *, device: int | None = None) -> Any:
        if self._closed:
            raise RuntimeError(f"group {self.job_id} is closed: it takes no more jobs")
        return self._client.submit_job(request, device=self._device if device is None else device,
                                       group=self.job_id)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1, device: int | None = None) -> Iterator[Any]:
        """Like ``Executor.map``: results in order; raises at the first failing item, and
        then (as the iterator is dropped) cancels the jobs not yet done."""
        core, modules = self._client._core, self._client._modules
        futures = [self.submit_job(core.call(fn, args, {}, modules), device=device)
                   for args in zip(*iterables)]
        return results_in_order(futures, timeout, self.cancel)

    @property
    def progress(self) -> GroupProgress:
        return rollup(self._future._events)

    def events(self, start: int = 0) -> Iterator[Any]:
        """The group's events: a ``ChildProgress`` for each job's news, until the group ends."""
        return self._future.events(start)

    def close(self) -> None:
        """Take no more jobs: the group ends when the ones it has have ended."""
        if not self._closed:
            self._closed = True
            self._client._call("group_close", job=self.job_id)

    def cancel(self, force: bool = False) -> bool:
        """Cancel every job of the group; returns once their processes are gone."""
        self._closed = True
        outcome = self._client.cancel(self.job_id, mode="kill" if force else "interrupt")
        self.wait()
        return outcome in ("cancelled", "removed_from_queue")

    def wait(self, timeout: float | None = None) -> Finished:
        """Close the group and block until all its jobs have ended; its end record."""
        self.close()
        if self._future._detached:  # not followed: ask for its end alone
            return self._client.wait(self.job_id)
        concurrent.futures.wait([self._future], timeout)
        end = self._future.finished
        if end is None:
            if self._future.done() and self._future.exception() is not None:
                raise self._future.exception()
            raise TimeoutError(f"group {self.job_id} did not end within {timeout} s")
        return end


def results_in_order(futures: list[Any], timeout: float | None,
                     cancel_rest: Callable[[], Any]) -> Iterator[Any]:
    """``Executor.map``'s iterator over ``futures``: one cancel for all the rest if it
    stops early (an item raised, or the caller dropped it). It holds only the futures
    not yet yielded: a result given is the caller's to keep or let go."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = futures[::-1]
    del futures  # the caller's list is not held either

    def results() -> Iterator[Any]:
        try:
            while pending:
                yield _result(pending.pop(), deadline)
        finally:
            if any(not f.done() for f in pending):
                cancel_rest()

    return results()


def _result(future: Any, deadline: float | None) -> Any:
    return future.result(None if deadline is None else max(0.0, deadline - time.monotonic()))
