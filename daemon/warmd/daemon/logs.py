"""Where the daemon's own log and its jobs' output lines go.

Under systemd (a journal stream or a notify socket) records go to journald with
structured fields (JOB_ID, WORKER_PID, JOB_STATE, CLIENT_PID) so that
``journalctl --user-unit warmd JOB_ID=...`` finds one job. Elsewhere the daemon
logs to stderr (a terminal, or the state-dir file an autostarted daemon writes).
"""
from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any, Callable

# What journald accepts as a field name. LogRecord's own attributes are lowercase, so an
# attribute named like this came from ``extra={...}`` and is meant as a journal field.
_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")

# journald priorities (syslog levels)
PRIORITY_CRIT, PRIORITY_ERR, PRIORITY_WARNING, PRIORITY_INFO, PRIORITY_DEBUG = 2, 3, 4, 6, 7

# A job that writes without newlines still reaches the journal in pieces of this size.
MAX_LINE = 64 * 1024
PROGRESS_INTERVAL = 1.0  # seconds between a job's progress entries in the journal


def under_systemd() -> bool:
    """Whether a service manager runs us: it gave us a notify socket, or our
    stderr/stdout is the journal stream it names (an inherited JOURNAL_STREAM,
    such as an autostarted daemon's, names some other stream)."""
    if os.environ.get("NOTIFY_SOCKET"):
        return True
    stream = os.environ.get("JOURNAL_STREAM", "")
    for fd in (2, 1):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if stream == f"{st.st_dev}:{st.st_ino}":
            return True
    return False


class _FieldsFormatter(logging.Formatter):
    """Plain-text lines that still show the job and worker a record is about."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        tags = [f"{name.lower()}={value}" for name, value in extra_fields(record).items()]
        return f"{text} [{' '.join(tags)}]" if tags else text


def setup(level: str) -> logging.Logger:
    log = logging.getLogger("warmd")
    log.setLevel(level.upper())
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
    if under_systemd() and _journal_available():
        from systemd import journal
        log.addHandler(StructuredJournalHandler(journal.send, "warmd"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_FieldsFormatter("%(asctime)s warmd[%(process)d] %(levelname)s %(message)s"))
        log.addHandler(handler)
    return log


def extra_fields(record: logging.LogRecord) -> dict[str, str]:
    """The journal fields a record carries (JOB_ID, WORKER_PID, ...), None values left out."""
    return {name: str(value) for name, value in vars(record).items()
            if value is not None and _FIELD_NAME.fullmatch(name)}


class StructuredJournalHandler(logging.Handler):
    """Sends each record to journald with its structured fields as journal fields.

    systemd.journal.JournalHandler copies every LogRecord attribute into the
    entry: lowercase names that journald throws away, and a field given as
    None arrives as the text "None". This handler sends what a reader filters
    on: the message, its priority, the logger, where it was logged, and the
    fields passed with ``extra={...}`` (JOB_ID, WORKER_PID, JOB_STATE,
    CLIENT_PID, ...), leaving out those that are None.
    """

    def __init__(self, send: Callable[..., Any], identifier: str) -> None:
        super().__init__()
        self._send = send
        self.identifier = identifier
        self._exceptions = logging.Formatter()  # formats exc_info the way stderr shows it

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = extra_fields(record)
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + self._exceptions.formatException(record.exc_info)
            fields.update(PRIORITY=str(_priority(record.levelno)), LOGGER=record.name,
                          SYSLOG_IDENTIFIER=self.identifier)
            self._send(message, CODE_FILE=record.pathname, CODE_LINE=record.lineno,
                       CODE_FUNC=record.funcName, **fields)
        except Exception:
            self.handleError(record)


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
        self._progress_at: dict[str, float] = {}  # job id -> when its last progress was written
        if self.enabled:
            from systemd import journal
            self._send = journal.send

    def output(self, job_id: str, worker_pid: int | None, stream: str, data: bytes) -> None:
        if not self.enabled:
            return
        key = (job_id, stream)
        buf = self._partial.pop(key, b"") + data
        *lines, rest = buf.split(b"\n")
        while len(rest) >= MAX_LINE:
            lines.append(rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        if rest:
            self._partial[key] = rest
        priority = PRIORITY_WARNING if stream == "stderr" else PRIORITY_INFO
        for line in lines:
            self._line(job_id, worker_pid, stream, line.decode(errors="replace"), priority)

    def record(self, job_id: str, worker_pid: int | None, level: int, name: str, message: str) -> None:
        if self.enabled:
            self._line(job_id, worker_pid, "logging", f"{name}: {message}", _priority(level),
                       LOGGER=name)

    def progress(self, job_id: str, worker_pid: int | None, report: dict[str, Any]) -> None:
        """A progress report as one entry with its fields (PROGRESS_DONE, PROGRESS_WELL...):
        at most one a second per job, and always the one that reaches its total."""
        if not self.enabled:
            return
        now = time.monotonic()
        done, total = report.get("done"), report.get("total")
        if now - self._progress_at.get(job_id, -PROGRESS_INTERVAL) < PROGRESS_INTERVAL and done != total:
            return
        self._progress_at[job_id] = now
        fields = {f"PROGRESS_{_field_name(k)}": str(v) for k, v in (report.get("fields") or {}).items()}
        text = f"progress {done:g}" + (f"/{total:g}" if total is not None else "")
        text += f" {report['message']}" if report.get("message") else ""
        self._line(job_id, worker_pid, "progress", text, PRIORITY_INFO, PROGRESS_DONE=str(done),
                   **({"PROGRESS_TOTAL": str(total)} if total is not None else {}), **fields)

    def finished(self, job_id: str, worker_pid: int | None) -> None:
        """Flush a last line that had no newline."""
        self._progress_at.pop(job_id, None)
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


def _field_name(key: str) -> str:
    """A progress field's name as journald allows one: A-Z, 0-9 and _."""
    return re.sub(r"[^A-Z0-9_]", "_", key.upper())[:48]


def _priority(level: int) -> int:
    """A logging level as a journald priority (levels between the standard ones round down)."""
    if level >= logging.CRITICAL:
        return PRIORITY_CRIT
    if level >= logging.ERROR:
        return PRIORITY_ERR
    if level >= logging.WARNING:
        return PRIORITY_WARNING
    if level >= logging.INFO:
        return PRIORITY_INFO
    return PRIORITY_DEBUG


def log_end(job: Any, header: dict[str, Any], to_journal: bool) -> None:
    """A job's end in the daemon's log. Every end goes to the journal (searchable by JOB_ID);
    a plain log file keeps the ones worth reading, or a busy client would grow it by a line
    per job."""
    log = logging.getLogger("warmd")
    failed = job.state in ("failed", "lost")  # `journalctl -p err` finds them, traceback and all
    level = (logging.ERROR if failed else
             logging.INFO if job.state != "succeeded" or to_journal else logging.DEBUG)
    if not log.isEnabledFor(level):
        return
    gpu = header.get("gpu") if isinstance(header.get("gpu"), dict) else {}
    error = header.get("error") if isinstance(header.get("error"), dict) else {}
    why = ""
    if failed and error:
        why = f": {error.get('type', 'error')}: {error.get('message', '')}"
        if error.get("traceback"):
            why += "\n" + str(error["traceback"]).rstrip()
    log.log(level, "job %s %s (%s)%s", job.id, job.state, job.name, why,
            extra={"JOB_ID": job.id, "JOB_STATE": job.state, "JOB_NAME": job.name,
                   **({"JOB_ERROR": error.get("type")} if failed and error.get("type") else {}),
                   **({"JOB_TIMED_OUT": 1} if job.timed_out else {}),
                   **({"WORKER_PID": job.worker_pid} if job.worker_pid else {}),
                   **({"CLIENT_PID": job.client_pid} if job.client_pid else {}),
                   **({"DEVICE": header["device"]} if header.get("device") is not None else {}),
                   **({"GPU_PEAK_BYTES": gpu["peak_bytes"]} if "peak_bytes" in gpu else {})})
