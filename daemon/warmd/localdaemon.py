"""A warmd daemon started as a child of this process, on a private socket.

Tests, benchmarks and ``warmd.dask`` (one per Dask worker) start daemons this way.
It is not detached, reports readiness through ``--ready-fd`` (no polling), keeps its
socket, config and log in one directory (and, with ``private_dirs``, its state and
XDG directories too), and ``stop()`` ends it and every process it left behind. With
``lifeline`` it also stops itself when this process exits, even by SIGKILL.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

# The service manager's and the user's settings must not leak into a private daemon.
_PRIVATE = ("NOTIFY_SOCKET", "JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID", "WARMD_CONFIG",
            "WATCHDOG_USEC", "WATCHDOG_PID")


class LocalDaemon:
    """``root`` holds run/warmd.sock, warmd.toml (``config``), daemon.log and, with
    ``private_dirs`` (the default), state/ and config/ as the daemon's XDG directories.

    ``root`` should be short: a Unix socket path is limited to 108 bytes.
    ``pythonpath`` entries are put first on the daemon's (and so its workers') path.
    """

    def __init__(self, root: Path, config: str = "", args: tuple[str, ...] = (), *,
                 pythonpath: tuple[str | os.PathLike, ...] = (), remove_root: bool = False,
                 private_dirs: bool = True, lifeline: bool = False) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket = self.root / "run" / "warmd.sock"
        self.config = self.root / "warmd.toml"
        self.config.write_text(config)
        self.args = tuple(args)
        self.remove_root = remove_root
        self.lifeline = lifeline
        self.proc: subprocess.Popen | None = None
        self._log: Any = None
        self._lifeline_fd = -1  # the write end: this process holds it until stop() or its exit
        path = [str(p) for p in pythonpath] + [p for p in [os.environ.get("PYTHONPATH")] if p]
        self.env = dict(os.environ, WARMD_SOCKET=str(self.socket), PYTHONUNBUFFERED="1")
        if path:
            self.env["PYTHONPATH"] = os.pathsep.join(path)
        if private_dirs:
            self.env.update(XDG_RUNTIME_DIR=str(self.root / "run"), XDG_STATE_HOME=str(self.root / "state"),
                            XDG_CONFIG_HOME=str(self.root / "config"))
        for key in _PRIVATE:
            self.env.pop(key, None)

    def start(self) -> "LocalDaemon":
        (self.root / "run").mkdir(mode=0o700, exist_ok=True)
        read_end, write_end = os.pipe()
        passed, extra = [write_end], []
        if self.lifeline:
            life_read, self._lifeline_fd = os.pipe()  # both ends close-on-exec here
            passed.append(life_read)
            extra = ["--lifeline-fd", str(life_read)]
        self._log = open(self.root / "daemon.log", "ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "warmd", "--socket", str(self.socket), "--config", str(self.config),
                 "--ready-fd", str(write_end), *extra, *self.args],
                env=self.env, pass_fds=tuple(passed), stdout=self._log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        except BaseException:
            os.close(read_end)
            raise
        finally:
            for fd in passed:
                os.close(fd)
        with os.fdopen(read_end, "rb") as ready:
            answer = ready.read().decode().strip()  # written once the socket is served
        if answer != "ok":
            self.proc.wait(timeout=60)
            raise RuntimeError(f"warmd did not start: {answer!r}\n{self.log_text()}")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "start() first"
        return self.proc.pid

    def log_text(self) -> str:
        """The daemon's log so far. A running daemon is pinged first: it handles events in
        order, so its answer means whatever it logged for earlier events is in the file
        (a client may hold a job's result before the daemon has logged the job's end)."""
        if self.proc is not None and self.proc.poll() is None and self.socket.exists():
            from .errors import WarmdError
            try:
                with self.client() as client:
                    client.ping()
            except (WarmdError, OSError):
                pass  # stopping or stopped: its log is complete
        path = self.root / "daemon.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def client(self, **kwargs: Any):
        """A ``warmd.Client`` on this daemon (no autostart unless asked)."""
        from .client.sync import Client
        kwargs.setdefault("autostart", False)
        return Client(self.socket, **kwargs)

    def rss(self) -> int:
        """The daemon's resident set now, in bytes."""
        return self._status_kib("VmRSS") * 1024

    def peak_rss(self) -> int:
        """The daemon's peak resident set (VmHWM) since it started or ``reset_peak_rss``."""
        return self._status_kib("VmHWM") * 1024

    def reset_peak_rss(self) -> None:
        """Start measuring the peak from the current resident set (/proc/PID/clear_refs);
        OSError where the kernel does not allow it."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def _status_kib(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise LookupError(f"/proc/{self.pid}/status has no {key}")

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def wait_idle(self, count: int) -> dict[int, Any]:
        """Until at least ``count`` workers are live and every live one is idle, as the
        watch stream tells; their rows (``WorkerInfo``) by pid."""
        from .client.watch import Snapshot, WorkerChanged
        with self.client() as client:
            workers: dict[int, Any] = {}
            for event in client.watch():
                if isinstance(event, Snapshot):
                    workers = dict(event.workers)
                elif isinstance(event, WorkerChanged):
                    workers[event.worker.pid] = event.worker
                live = {pid: w for pid, w in workers.items() if w.live}
                if len(live) >= count and all(w.state == "idle" for w in live.values()):
                    return live
        raise RuntimeError(f"warmd's watch stream ended:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 30 s), then kill anything of it still alive."""
        if self.proc is not None:
            stop_process(self.proc, self.descendants())
            self._log.close()
            self.proc = None
        if self._lifeline_fd >= 0:
            os.close(self._lifeline_fd)
            self._lifeline_fd = -1
        if self.remove_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalDaemon":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_process(proc: subprocess.Popen, leftovers: list[psutil.Process], timeout: float = 30) -> int:
    """SIGTERM ``proc`` and wait (SIGKILL after ``timeout``), then kill ``leftovers`` (its
    descendants, listed before) still alive; its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for left in leftovers:
        try:
            left.kill()
        except psutil.Error:
            pass
    return proc.returncode
