"""How warmctl shows jobs on a terminal: streamed output, a progress bar, tables."""
from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from typing import Any, TextIO

from ..client.events import Event, Finished, Gap, Log, Output, Progress, Warming


class JobPrinter:
    """Writes a job's events to this process's stdout/stderr; a progress bar on a terminal."""

    def __init__(self, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
        self.out = out
        self.err = err
        self.bar_shown = False
        self.tty = err.isatty()
        self.warm_step: str | None = None

    def show(self, event: Event) -> None:
        if isinstance(event, Output):
            self._clear_bar()
            stream = self.out if event.stream == "stdout" else self.err
            stream.flush()
            os.write(stream.fileno(), event.data) if _has_fd(stream) else stream.write(event.text)
        elif isinstance(event, Log):
            self._clear_bar()
            self.err.write(f"{logging.getLevelName(event.level)}:{event.name}:{event.message}\n")
            self.err.flush()
        elif isinstance(event, Gap):
            self._clear_bar()
            self.err.write(f"warmctl: {event.describe()}\n")
            self.err.flush()
        elif isinstance(event, Warming):
            line = f"warmctl: waiting for a worker to warm up: {event.step} ({event.seconds:.0f} s so far)"
            if self.tty:
                self.err.write("\r" + line[: max(1, shutil.get_terminal_size().columns - 1)])
                self.bar_shown = True
            elif event.step != self.warm_step:  # a log gets one line per step, not per tick
                self.err.write(line + "\n")
            self.err.flush()
            self.warm_step = event.step
        elif isinstance(event, Progress) and self.tty:
            self.err.write("\r" + progress_bar(event, shutil.get_terminal_size().columns))
            self.err.flush()
            self.bar_shown = True

    def _clear_bar(self) -> None:
        if self.bar_shown:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self.bar_shown = False

    def finish(self, end: Finished) -> None:
        self._clear_bar()
        error = end.error or {}
        if end.state == "failed" and error.get("type") != "SystemExit":
            tb = error.get("traceback") or f"{error.get('type')}: {error.get('message')}\n"
            self.err.write(tb if tb.endswith("\n") else tb + "\n")
        elif end.state in ("cancelled", "lost"):
            self.err.write(f"warmctl: job {end.job} {end.state}: {error.get('message', '')}\n")
        self.err.flush()


def _has_fd(stream: TextIO) -> bool:
    try:
        stream.fileno()
        return True
    except (AttributeError, OSError, ValueError):
        return False


def progress_bar(p: Progress, columns: int) -> str:
    message = f" {p.message}" if p.message else ""
    if p.total:
        frac = max(0.0, min(1.0, p.done / p.total))
        count = f" {_num(p.done)}/{_num(p.total)}"
        width = max(10, min(40, columns - len(count) - len(message) - 4))
        filled = int(frac * width)
        line = f"[{'#' * filled}{'.' * (width - filled)}]{count}{message}"
    else:
        line = f"{_num(p.done)}{message}"
    return line[: max(1, columns - 1)]


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


def size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def table(rows: list[list[Any]], headers: list[str]) -> str:
    cells = [headers] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def status_text(status: dict[str, Any]) -> str:
    d = status["daemon"]
    lines = [f"warmd {d['version']}, pid {d['pid']}, started by {d['started_by']}, "
             f"up {duration(d['uptime'])}, socket {d['socket']}",
             status["summary"]]
    if status.get("devices"):
        lines.append("devices: " + ", ".join(f"GPU{x['index']} {x['name']} ({size(x['memory'])})"
                                             for x in status["devices"]))
    rows = [[w["slot"], w["pid"], w["pgid"], w["state"], "cpu" if w["device"] is None else f"gpu{w['device']}",
             w["jobs_run"], duration(w["warmup_seconds"]), size(w["rss"]), w["job"] or "-"]
            for w in status["workers"]]
    lines.append(table(rows, ["WORKER", "PID", "PGID", "STATE", "DEVICE", "JOBS", "WARMUP", "RSS", "JOB"]))
    for w in status["workers"]:
        if w.get("error"):
            lines.append(f"worker {w['slot']} (pid {w['pid']}): {w['error']}")
    if status.get("warmup_error"):
        lines.append(f"warm-up failing: {status['warmup_error']}")
    return "\n".join(lines)


def jobs_text(jobs: list[dict[str, Any]]) -> str:
    now = time.time()
    rows = [[j["id"], j["state"], j["kind"], j["name"][:40], j["exit_status"], j["worker_pid"],
             duration((j["finished"] or now) - j["started"]) if j["started"] else "-"]
            for j in jobs]
    return table(rows, ["JOB", "STATE", "KIND", "NAME", "EXIT", "WORKER", "TIME"])
