"""The ledger of running jobs: a file beside the socket that outlives the daemon.

Jobs live in the daemon's memory. When the daemon dies without ending them
(SIGKILL, the OOM killer, a watchdog abort), systemd starts a new one on the
same socket and clients re-attach by job id; without a record the new daemon
could only answer "unknown job". The ledger names each job while it runs, so
the next daemon reports those jobs as ``lost``, saying why.

The file (``warmd.sock.jobs`` for ``warmd.sock``) holds JSON:
``{"jobs": {JOB_ID: {...}}}``. Each entry names the daemon that ran the job
(pid and start time), so a daemon that starts while an old one is still
stopping (an autostart right after an idle exit) leaves the old one's jobs
alone. Every change is a read-modify-write under an flock that replaces the
file whole, so a daemon killed in the middle leaves the previous version.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from .jobs import LOST, RUNNING, Job

log = logging.getLogger("warmd")

SUFFIX = ".jobs"


class Ledger:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        me = psutil.Process()
        self.owner = {"pid": me.pid, "created": me.create_time()}
        self._recorded: set[str] = set()  # ids this daemon wrote, so finishing others costs nothing

    @classmethod
    def beside(cls, socket_path: Path | None) -> "Ledger":
        """The ledger for the daemon serving ``socket_path`` (none for an unnamed socket)."""
        return cls(socket_path.with_name(socket_path.name + SUFFIX) if socket_path else None)

    # ------------------------------------------------------------ the daemon's hooks

    def recover(self, exit_status: int) -> list[Job]:
        """Jobs that a daemon no longer alive left running, as finished ``lost`` jobs.

        Their entries leave the file; entries of a daemon still alive stay.
        """
        lost: list[dict[str, Any]] = []
        with self._edit() as jobs:
            for job_id, entry in list(jobs.items()):
                if not _alive(entry.get("owner") or {}):
                    lost.append(entry)
                    del jobs[job_id]
        return [_lost_job(entry, exit_status) for entry in lost]

    def started(self, job: Job) -> None:
        """``job`` now runs on a worker: record it until it finishes."""
        entry = {"id": job.id, "kind": job.kind, "name": job.name, "submitted": job.submitted,
                 "started": job.started, "worker_pid": job.worker_pid, "client_pid": job.client_pid,
                 "device": job.device, "owner": self.owner}
        with self._edit(job.id) as jobs:
            jobs[job.id] = entry
        self._recorded.add(job.id)

    def finished(self, job: Job) -> None:
        """``job`` ended (any state): its entry goes."""
        if job.id not in self._recorded:
            return
        self._recorded.discard(job.id)
        with self._edit(job.id) as jobs:
            jobs.pop(job.id, None)

    # ------------------------------------------------------------ the file

    @contextlib.contextmanager
    def _edit(self, job_id: str | None = None) -> Iterator[dict[str, dict[str, Any]]]:
        """The ledger's jobs, for changing in place; written back when the block ends.

        A ledger that cannot be read or written is logged and skipped: it only
        improves what clients learn after a crash, so it never stops a job.
        """
        if self.path is None:
            yield {}
            return
        try:
            fd = self._open_locked()
        except OSError as exc:
            log.warning("cannot open the job ledger %s: %s", self.path, exc.strerror,
                        extra={"JOB_ID": job_id})
            yield {}
            return
        try:
            jobs = _parse(os.read(fd, os.fstat(fd).st_size or 1), self.path)
            before = dict(jobs)
            yield jobs
            if jobs != before:
                self._replace(jobs)
        except OSError as exc:
            log.warning("cannot update the job ledger %s: %s", self.path, exc.strerror,
                        extra={"JOB_ID": job_id})
        finally:
            os.close(fd)  # releases the lock

    def _open_locked(self) -> int:
        """An fd of the current ledger file, holding its exclusive lock."""
        assert self.path is not None
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)  # another daemon replaced or removed it while we waited: take the new one

    def _replace(self, jobs: dict[str, dict[str, Any]]) -> None:
        assert self.path is not None
        if not jobs:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        data = json.dumps({"jobs": jobs}, sort_keys=True).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)


def _parse(data: bytes, path: Path) -> dict[str, dict[str, Any]]:
    if not data.strip():
        return {}
    try:
        jobs = json.loads(data)["jobs"]
        if isinstance(jobs, dict) and all(isinstance(v, dict) for v in jobs.values()):
            return jobs
    except (ValueError, KeyError, TypeError):
        pass
    log.warning("the job ledger %s is unreadable; starting a new one", path)
    return {}


def _alive(owner: dict[str, Any]) -> bool:
    """Whether the daemon that wrote an entry still runs (the pid alone may have been reused)."""
    try:
        proc = psutil.Process(int(owner["pid"]))
        return abs(proc.create_time() - float(owner["created"])) < 1.0 and \
            proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def _lost_job(entry: dict[str, Any], exit_status: int) -> Job:
    job = Job(str(entry["id"]), str(entry.get("kind", "call")), str(entry.get("name", "")), {}, b"",
              entry.get("client_pid"), entry.get("device"),
              submitted=entry.get("submitted") or 0.0, state=RUNNING, started=entry.get("started"),
              worker_pid=entry.get("worker_pid"))
    owner = (entry.get("owner") or {}).get("pid")
    job.finish({"state": LOST, "exit_status": exit_status,
                "error": {"type": "DaemonRestarted", "traceback": "",
                          "message": f"warmd restarted while job {job.id} was running: the daemon "
                                     f"(pid {owner}) ended without finishing it, so its result and "
                                     "the rest of its output are lost; submit it again"}})
    return job
