"""``JobFuture``: one job as a concurrent.futures.Future, with its id, its event stream, a
cancel that reaches running jobs, and a result unpickled only when asked for."""
from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator
from typing import Any, Protocol

from ..errors import WarmdError
from .events import Event, Finished, StateChange, follow, output_text
from .outcome import JobCancelled, result_of


class _Client(Protocol):
    def cancel(self, job_id: str, mode: str = "interrupt") -> str: ...


_STAGE = {False: "interrupt", True: "kill"}


class JobFuture(concurrent.futures.Future):
    """A Future for one job, with its id, its event stream and a cancel that reaches running jobs."""

    def __init__(self, client: _Client) -> None:
        super().__init__()
        self._client = client
        self._accepted = threading.Event()
        self._detached = False  # submitted without following (warmctl submit)
        self._job_id: str | None = None
        self._error: BaseException | None = None
        self._events: list[Event] = []
        self._released = 0  # events before _events[0], let go by release()
        self._last_seq = 0
        self._end: Finished | None = None
        self._stream = threading.Condition()
        self._loaded = False   # the result is unpickled when first asked for, not on arrival
        self._value: Any = None
        self._cancelled: JobCancelled | None = None  # why, when the job ended cancelled
        self._resend: Any = None  # how the client encodes this job's request again

    # -- identity
    @property
    def job_id(self) -> str:
        """The daemon's id for this job (waits for the daemon to accept it)."""
        self._accepted.wait()
        if self._job_id is None:
            raise self._error or WarmdError("the job was not accepted")
        return self._job_id

    def __warmd_ref__(self) -> str:
        return self.job_id  # passed to another job, this future stands for its result

    @property
    def finished(self) -> Finished | None:
        """The job's end record once it ended: state, exit status, worker pid, warm-up token."""
        return self._end

    def result(self, timeout: float | None = None) -> Any:
        """The job's return value, unpickled here on the first call (a future whose result
        only goes on to other jobs never needs to unpickle it). A cancelled job raises
        JobCancelled (a concurrent.futures.CancelledError) saying why."""
        try:
            super().result(timeout)
        except concurrent.futures.CancelledError as exc:
            raise self._cancelled or exc from None
        with self._stream:
            if not self._loaded:
                self._value = result_of(self._end)
                self._loaded = True
        return self._value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            exc = super().exception(timeout)
        except concurrent.futures.CancelledError as cancelled:
            raise self._cancelled or cancelled from None
        if self._cancelled is not None:  # cancelled while it ran: it raises, as any cancelled one
            raise self._cancelled
        return exc

    def cancelled(self) -> bool:
        """True when the job ended cancelled: before it started, as with any Future, or
        while it ran (a cancel here reaches running jobs; ``running()`` was True then)."""
        return super().cancelled() or self._cancelled is not None

    # -- streaming
    def events(self, start: int = 0) -> Iterator[Event]:
        """The job's output, log, progress and state events from index ``start``, until it ends."""
        return follow(self.events_since, max(start, self._released))

    def events_since(self, start: int, timeout: float | None = None) -> tuple[list[Event], bool]:
        """The events from index ``start`` that have come, waiting up to ``timeout`` seconds
        (None: until one comes or the job ends) when there are none yet; and whether the
        job's stream has ended (then the list holds all that is left)."""
        with self._stream:
            if start >= self._released + len(self._events) and self._end is None and self._error is None:
                self._stream.wait_for(lambda: start < self._released + len(self._events)
                                      or self._end is not None or self._error is not None, timeout)
            ended = self._end is not None or self._error is not None
            return self._events[max(0, start - self._released):], ended

    def release(self, upto: int) -> None:
        """Let go of the events before index ``upto``, for the one reader of this future that
        hands each batch of ``events_since`` on and needs it no more (a Dask task forwarding
        a job's events): what it holds is then what it has not read. ``events()`` and
        ``output()`` begin at the oldest event kept."""
        with self._stream:
            n = min(max(0, upto - self._released), len(self._events))
            del self._events[:n]
            self._released += n

    def output(self, stream: str = "stdout") -> str:
        """All text the job wrote to ``stream`` that this client received (a ``Gap`` event
        in ``events()`` marks output it missed by reading more slowly than the job wrote)."""
        with self._stream:
            return output_text(self._events, stream)

    # -- cancel
    def cancel(self, force: bool = False, *, mode: str | None = None) -> bool:
        """Cancel the job, queued or running; return once its processes are gone.

        True when the job ended cancelled, False when it had already finished.
        """
        if self.done():
            return self.cancelled()
        outcome = self._client.cancel(self.job_id, mode=mode or _STAGE[force])
        if outcome in ("cancelled", "removed_from_queue"):
            with self._stream:
                while self._end is None and self._error is None:
                    self._stream.wait()
            return self.cancelled()
        return False

    # -- fed by the client's reader thread
    def _accept(self, job_id: str) -> None:
        self._job_id = job_id
        self._accepted.set()

    def _add(self, item: Event | Finished) -> None:
        with self._stream:
            if isinstance(item, Finished):
                if self._end is not None:
                    return
                self._end = item
            else:
                if item.seq <= self._last_seq:
                    return  # a replay of what this future already has
                self._last_seq = item.seq
                self._events.append(item)
            self._stream.notify_all()
        if isinstance(item, Finished):
            self._settle(item)
        elif isinstance(item, StateChange) and item.state == "running":
            if not self.running() and not self.done():  # only this reader moves the state
                self.set_running_or_notify_cancel()

    def _settle(self, end: Finished) -> None:
        if end.state == "succeeded":
            self.set_result(None)  # the value itself: see result()
            return
        try:
            result_of(end)
        except JobCancelled as exc:
            if self.running():  # a Future cannot be cancelled once running: it ends raising
                self._cancelled = exc
                self.set_exception(exc)
            else:
                self._cancelled = exc
                super().cancel()
                self.set_running_or_notify_cancel()
        except BaseException as exc:
            self.set_exception(exc)

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        self._accepted.set()
        with self._stream:
            self._stream.notify_all()
        if not self.done():
            self.set_exception(exc)
