"""The ledger of running jobs: files beside the socket that outlive the daemon.

Jobs live in the daemon's memory. When the daemon dies without ending them
(SIGKILL, the OOM killer, a watchdog abort), systemd starts a new one on the
same socket and clients re-attach by job id; without a record the new daemon
could only answer "unknown job". The ledger names each job while it runs, so
the next daemon reports those jobs as ``lost``, saying why. Queued jobs are
recorded too: a crash forgets them as surely as the running ones.

Each daemon appends to its own file (``warmd.sock.jobs.PID`` for
``warmd.sock``): a first line naming the daemon (pid and start time), then one
JSON line per job that is queued (``{"queue": {...}}``), starts (``{"start": {...}}``)
or ends (``{"end": ID}``).
One ``write`` per event, with no lock and no rewrite, keeps it off the
dispatch path's costs; a line cut short by a crash is ignored. The file is
emptied whenever nothing runs and it has grown, and removed on a clean exit. A
new daemon takes over the files of daemons no longer alive, and leaves those of
a daemon still stopping (an autostart right after an idle exit) alone.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import psutil

from ..protocol import dump_json, load_json
from .jobs import LOST, RUNNING, Job

log = logging.getLogger("warmd")

SUFFIX = ".jobs"
_COMPACT_LINES = 1000  # empty the file once this many lines are written and nothing runs


class Ledger:
    def __init__(self, base: Path | None, owner: dict[str, Any] | None = None) -> None:
        if owner is None:
            me = psutil.Process()
            owner = {"pid": me.pid, "created": me.create_time()}
        self.owner = owner
        self.base = base
        self.path = base.with_name(f"{base.name}.{owner['pid']}") if base else None
        self._fd: int | None = None
        self._open: set[str] = set()  # queued or running: not yet ended
        self._lines = 0
        self._held: list[bytes] | None = None  # lines of one batch (see daemon.batch)
        self.news = False  # the held lines name a job for the first time

    @classmethod
    def beside(cls, socket_path: Path | None) -> "Ledger":
        """The ledger for the daemon serving ``socket_path`` (none for an unnamed socket)."""
        return cls(socket_path.with_name(socket_path.name + SUFFIX) if socket_path else None)

    # ------------------------------------------------------------ the daemon's hooks

    def recover(self, exit_status: int) -> list[Job]:
        """Jobs that daemons no longer alive left: those they left running as finished
        ``lost`` jobs, and the finished ones a clean stop kept, as they ended."""
        if self.base is None:
            return []
        lost: list[Job] = []
        for path in sorted(self.base.parent.glob(self.base.name + ".*")):
            if path == self.path:
                continue
            try:
                lines = path.read_bytes().splitlines()
            except OSError:
                continue
            owner, running, kept = _replay(lines)
            if owner is not None and _alive(owner):
                continue
            lost += [_kept_job(entry) for entry in kept]
            lost += [_lost_job(entry, owner, exit_status) for entry in running.values()]
            path.unlink(missing_ok=True)
        return lost

    def queued(self, job: Job) -> None:
        """``job`` was accepted: record it until it ends."""
        self._record_open(job, {"queue": _entry(job)})

    def started(self, job: Job) -> None:
        """``job`` now runs on a worker."""
        self._record_open(job, {"start": _entry(job)})

    def _record_open(self, job: Job, record: dict[str, Any]) -> None:
        if job.id not in self._open:
            self._open.add(job.id)
            self.news = self._held is not None  # held: a job's first line waits to be written
        self._append(record)

    def finished(self, job: Job) -> None:
        """``job`` ended (any state): strike it off."""
        if job.id not in self._open:
            return
        self._open.discard(job.id)
        if not self._open and self._lines >= _COMPACT_LINES and self._fd is not None:
            os.ftruncate(self._fd, 0)  # nothing runs: nothing to keep
            if self._held:
                self._held.clear()  # lines of jobs that have all ended
            self._lines = 0
            self._append({"owner": self.owner})
        else:
            self._append({"end": job.id})

    def hold(self) -> None:
        """Collect lines until ``flush``: one write for a batch of events."""
        if self._held is None:
            self._held = []

    def flush(self, *, keep_holding: bool = False) -> None:
        """Write the collected lines; stop collecting unless ``keep_holding``."""
        held = self._held
        self._held = [] if keep_holding else None
        self.news = False
        if held:
            self._write(b"".join(held))

    def close(self, kept: list[Job] = ()) -> None:
        """A clean exit: nothing is left running. The finished jobs the daemon still held
        (``kept``: ended by this stop, or retained) are written for the next daemon, their
        records without output or result; with none, the file goes."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.path is None:
            return
        if not kept:
            self.path.unlink(missing_ok=True)
            return
        try:
            with open(self.path, "wb", opener=_private) as f:
                f.write(_line({"owner": self.owner}))
                f.writelines(_line({"kept": _kept_entry(job)}) for job in kept)
        except OSError as exc:
            log.warning("cannot keep the finished jobs for the next daemon in %s: %s",
                        self.path, exc.strerror)

    # ------------------------------------------------------------ the file

    def _append(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        self._lines += 1
        if self._held is not None:
            self._held.append(_line(record))
        else:
            self._write(_line(record))

    def _write(self, data: bytes) -> None:
        # A ledger that cannot be written is logged and skipped: it only improves what
        # clients learn after a crash, so it never stops a job.
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_NOFOLLOW
                                   | os.O_CLOEXEC, 0o600)
                os.write(self._fd, _line({"owner": self.owner}))
            os.write(self._fd, data)
        except OSError as exc:
            log.warning("cannot write the job ledger %s: %s", self.path, exc.strerror)


def _entry(job: Job) -> dict[str, Any]:
    return {"id": job.id, "kind": job.kind, "name": job.name, "submitted": job.submitted,
            "started": job.started, "worker_pid": job.worker_pid, "client_pid": job.client_pid,
            "device": job.device}


def _line(record: dict[str, Any]) -> bytes:
    return dump_json(record) + b"\n"


def _replay(lines: list[bytes]) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]],
                                         list[dict[str, Any]]]:
    """The owner a ledger file names, the jobs it left queued or running, and the finished
    ones a clean stop kept."""
    owner = None
    running: dict[str, dict[str, Any]] = {}
    kept: list[dict[str, Any]] = []
    for raw in lines:
        try:
            record = load_json(raw)
        except ValueError:
            continue  # a line cut short by the crash
        if not isinstance(record, dict):
            continue
        if isinstance(record.get("owner"), dict):
            owner = record["owner"]
            running.clear()  # the file was emptied here
        elif isinstance(record.get("start") or record.get("queue"), dict):
            entry = record.get("start") or record.get("queue")
            if "id" in entry:
                running[str(entry["id"])] = entry
        elif "end" in record:
            running.pop(str(record["end"]), None)
        elif isinstance(record.get("kept"), dict) and "id" in record["kept"]:
            kept.append(record["kept"])
    return owner, running, kept


def _alive(owner: dict[str, Any]) -> bool:
    """Whether the daemon that wrote a file still runs (the pid alone may have been reused)."""
    try:
        proc = psutil.Process(int(owner["pid"]))
        return abs(proc.create_time() - float(owner["created"])) < 1.0 and \
            proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def _private(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


_END_FIELDS = ("state", "exit_status", "error", "timed_out", "device")


def _kept_entry(job: Job) -> dict[str, Any]:
    end = {k: v for k, v in (job.done_header or {}).items() if k in _END_FIELDS}
    # A call's result is not kept across the restart: the next daemon says so when asked.
    if job.kind == "call" and job.state == "succeeded" and (job.result or job.result_files):
        end["result_lost"] = True
    return {**_entry(job), "finished": job.finished, "end": end}


def _kept_job(entry: dict[str, Any]) -> Job:
    job = Job(str(entry["id"]), str(entry.get("kind", "call")), str(entry.get("name", "")), {}, b"",
              entry.get("client_pid"), entry.get("device"),
              submitted=entry.get("submitted") or 0.0, state=RUNNING, started=entry.get("started"),
              worker_pid=entry.get("worker_pid"))
    end = entry.get("end") if isinstance(entry.get("end"), dict) else {}
    header = {"state": str(end.get("state", LOST)), "exit_status": int(end.get("exit_status") or 0),
              "error": end.get("error"), "restored": True,
              **{k: end[k] for k in ("timed_out", "result_lost") if k in end}}
    job.finish(header, at=entry.get("finished"))
    return job


def _lost_job(entry: dict[str, Any], owner: dict[str, Any] | None, exit_status: int) -> Job:
    job = Job(str(entry["id"]), str(entry.get("kind", "call")), str(entry.get("name", "")), {}, b"",
              entry.get("client_pid"), entry.get("device"),
              submitted=entry.get("submitted") or 0.0, state=RUNNING, started=entry.get("started"),
              worker_pid=entry.get("worker_pid"))
    pid = (owner or {}).get("pid")
    where = "running" if entry.get("started") else "queued"
    job.finish({"state": LOST, "exit_status": exit_status,
                "error": {"type": "DaemonRestarted", "traceback": "",
                          "message": f"warmd restarted while job {job.id} was {where}: the daemon "
                                     f"(pid {pid}) ended without finishing it, so its result and "
                                     "the rest of its output are lost; submit it again"}})
    return job
