"""Each job's whole output in a file of its own, when ``daemon.job_output_dir`` is set.

The daemon keeps only the last few MiB of a job's output in memory; under systemd
the journal has all of it. Elsewhere (an autostarted daemon, one started by hand)
this directory does: ``DIR/JOB.log`` gets the job's stdout and stderr bytes as
they arrive, and its logging records as lines. The daemon never deletes these
files; clean the directory as you would any log directory.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import UnsafePath
from ..paths import open_private_dir, open_private_file

log = logging.getLogger("warmd")


class JobOutputFiles:
    def __init__(self, directory: str) -> None:
        self.directory = Path(directory).expanduser() if directory else None
        self._dir_fd: int | None = None
        self._files: dict[str, int] = {}   # job id -> open file
        self._failed: set[str] = set()     # jobs whose file could not be written: logged once

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def open(self) -> None:
        """Check (and create, 0700) the directory; UnsafePath if another user could control it."""
        if self.directory is not None and self._dir_fd is None:
            self._dir_fd = open_private_dir(self.directory, create=True)

    def path(self, job_id: str) -> Path | None:
        return self.directory / f"{job_id}.log" if self.directory is not None else None

    def write(self, job_id: str, data: bytes) -> None:
        if self._dir_fd is None or job_id in self._failed or not data:
            return
        try:
            fd = self._files.get(job_id)
            if fd is None:
                fd = self._files[job_id] = open_private_file(self._dir_fd, f"{job_id}.log",
                                                             os.O_WRONLY | os.O_APPEND, self.path(job_id))
            os.write(fd, data)
        except (OSError, UnsafePath) as exc:
            # Output still reaches attached clients and the replay: the file is a copy.
            self._failed.add(job_id)
            log.warning("cannot write the output of job %s to %s: %s", job_id, self.path(job_id), exc,
                        extra={"JOB_ID": job_id})

    def record(self, job_id: str, level: int, name: str, message: str) -> None:
        self.write(job_id, f"{logging.getLevelName(level)}:{name}:{message}\n".encode(errors="replace"))

    def finished(self, job_id: str) -> None:
        self._failed.discard(job_id)
        fd = self._files.pop(job_id, None)
        if fd is not None:
            os.close(fd)
