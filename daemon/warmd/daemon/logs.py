"""Where the daemon's own log and its jobs' output lines go.

Under systemd (a journal stream or a notify socket) records go to journald with
structured fields (JOB_ID, WORKER_PID, JOB_STATE, CLIENT_PID) so that
``journalctl --user-unit warmd JOB_ID=...`` finds one job. Elsewhere the daemon
logs to stderr (a terminal, or the state-dir file an autostarted daemon writes).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any

FIELDS = ("JOB_ID", "WORKER_PID", "JOB_STATE", "CLIENT_PID")

# journald priorities
PRIORITY_ERR, PRIORITY_WARNING, PRIORITY_INFO, PRIORITY_DEBUG = 3, 4, 6, 7


def under_systemd() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("NOTIFY_SOCKET"))


class _FieldsFormatter(logging.Formatter):
    """Plain-text lines that still show the job and worker a record is about."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        tags = [f"{name.lower()}={getattr(record, name)}" for name in FIELDS if hasattr(record, name)]
        return f"{text} [{' '.join(tags)}]" if tags else text


def setup(level: str) -> logging.Logger:
    log = logging.getLogger("warmd")
    log.setLevel(level.upper())
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
    if under_systemd() and _journal_available():
        from systemd.journal import JournalHandler
        log.addHandler(JournalHandler(SYSLOG_IDENTIFIER="warmd"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_FieldsFormatter("%(asctime)s warmd[%(process)d] %(levelname)s %(message)s"))
        log.addHandler(handler)
    return log


def _journal_available() -> bool:
    try:
        import systemd.journal  # noqa: F401
        return True
    except ImportError:
        return False


class JobOutputLog:
    """Sends each line of a job's output and logging to the journal, tagged with JOB_ID.

    Outside systemd job output is not copied into the daemon's log: clients
    have it, and ``warmctl logs`` replays it.
    """

    def __init__(self) -> None:
        self.enabled = under_systemd() and _journal_available()
        self._partial: dict[tuple[str, str], bytes] = {}
        if self.enabled:
            from systemd import journal
            self._send = journal.send

    def output(self, job_id: str, worker_pid: int | None, stream: str, data: bytes) -> None:
        if not self.enabled:
            return
        key = (job_id, stream)
        buf = self._partial.pop(key, b"") + data
        *lines, rest = buf.split(b"\n")
        if rest:
            self._partial[key] = rest
        priority = PRIORITY_WARNING if stream == "stderr" else PRIORITY_INFO
        for line in lines:
            self._line(job_id, worker_pid, stream, line.decode(errors="replace"), priority)

    def record(self, job_id: str, worker_pid: int | None, level: int, name: str, message: str) -> None:
        if self.enabled:
            self._line(job_id, worker_pid, "logging", f"{name}: {message}", _priority(level),
                       LOGGER=name)

    def finished(self, job_id: str, worker_pid: int | None) -> None:
        """Flush a last line that had no newline."""
        for stream in ("stdout", "stderr"):
            rest = self._partial.pop((job_id, stream), None)
            if rest and self.enabled:
                priority = PRIORITY_WARNING if stream == "stderr" else PRIORITY_INFO
                self._line(job_id, worker_pid, stream, rest.decode(errors="replace"), priority)

    def _line(self, job_id: str, worker_pid: int | None, stream: str, text: str, priority: int,
              **extra: Any) -> None:
        fields = {"JOB_ID": job_id, "JOB_STREAM": stream, "PRIORITY": str(priority),
                  "SYSLOG_IDENTIFIER": "warmd-job"}
        if worker_pid is not None:
            fields["WORKER_PID"] = str(worker_pid)
        self._send(text, **fields, **extra)


def _priority(level: int) -> int:
    if level >= logging.ERROR:
        return PRIORITY_ERR
    if level >= logging.WARNING:
        return PRIORITY_WARNING
    if level >= logging.INFO:
        return PRIORITY_INFO
    return PRIORITY_DEBUG
