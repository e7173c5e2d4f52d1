"""Typed exceptions. Every message says what went wrong and what to do."""
from __future__ import annotations


class WarmdError(Exception):
    """Base class of every error warmd raises on purpose."""


class ConfigError(WarmdError):
    """A configuration file or command-line value is invalid."""


class UnsafePath(WarmdError):
    """A socket, lock or log path that another user could control: warmd refuses to use it."""


class ProtocolError(WarmdError):
    """The peer sent bytes that are not a valid warmd frame."""


class FrameTooLarge(WarmdError):
    """A job or its result is larger than the daemon's frame limit (daemon.max_frame)."""


class VersionMismatch(ProtocolError):
    """Client and daemon cannot talk: protocol, Python or cloudpickle differ."""


class DaemonUnavailable(WarmdError):
    """No daemon answers on the socket and none could be started."""


class ClientClosed(WarmdError, RuntimeError):
    """The client was shut down (``shutdown()``, ``close()``, the end of its ``with``): it
    takes no more work. A RuntimeError, as ``Executor.submit`` after shutdown raises."""

    def __init__(self, message: str = "this warmd client was shut down (shutdown(), close() or "
                                      "the end of its 'with'): make a new one to submit more") -> None:
        super().__init__(message)

    @classmethod
    def while_waiting(cls) -> "ClientClosed":
        """For a request that was waiting for its answer when another thread closed the client."""
        return cls("this warmd client was closed (close() or shutdown(), from another thread) while "
                   "the request waited for the daemon's answer; the daemon and its jobs go on")


class AlreadyRunning(WarmdError):
    """A live daemon already answers on the socket this daemon wanted."""


class RequestFailed(WarmdError):
    """The daemon refused a request; ``code`` is the machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple:
        # Raised in a job (a child refused, say), it reaches the job's client as itself.
        return type(self), (self.code, str(self))


class UnknownJob(RequestFailed):
    """No job with this id is known to the daemon (never existed, or expired)."""


class AmbiguousJob(RequestFailed):
    """A job id prefix matches several jobs; ``candidates`` are their ids."""

    def __init__(self, code: str, message: str, candidates: list[str]) -> None:
        super().__init__(code, message)
        self.candidates = candidates

    def __reduce__(self) -> tuple:
        return type(self), (self.code, str(self), self.candidates)


class JobLost(WarmdError):
    """The worker running the job died (signal, crash, out of memory)."""

    def __init__(self, job_id: str, message: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class ResultElsewhere(WarmdError):
    """A session's call succeeded, but its result went to its caller alone: the daemon
    keeps the end of a session's call, never its value."""

    def __init__(self, job_id: str, message: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class SessionClosed(WarmdError, RuntimeError):
    """The session takes no more calls: it was closed, cancelled, or its worker died.
    A RuntimeError, as ``Executor.submit`` after shutdown raises."""


class JobExit(WarmdError):
    """The job called ``sys.exit(n)`` with a non-zero status."""

    def __init__(self, job_id: str, exit_status: int) -> None:
        super().__init__(f"job {job_id} exited with status {exit_status}")
        self.job_id = job_id
        self.exit_status = exit_status


class JobTimedOut(WarmdError, TimeoutError):
    """The job ran past its timeout and was cancelled (exit status 124, as timeout(1))."""

    def __init__(self, job_id: str, message: str = "") -> None:
        super().__init__(message or f"job {job_id} ran past its timeout and was cancelled")
        self.job_id = job_id


class RemoteTraceback(Exception):
    """Carries the worker-side traceback text as the ``__cause__`` of a re-raised error."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n\nRemote traceback (in the warmd worker):\n" + self.tb


class RemoteError(WarmdError):
    """A job raised an exception whose type cannot be rebuilt in this process."""

    def __init__(self, type_name: str, message: str, traceback: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback = traceback

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}\n\nRemote traceback (in the warmd worker):\n{self.traceback}"
