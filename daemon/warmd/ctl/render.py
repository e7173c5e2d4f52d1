"""How warmctl shows jobs on a terminal: streamed output, a progress bar, tables."""
from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from typing import Any, TextIO

from ..client.events import ChildProgress, Event, Finished, Gap, Log, Output, Progress, Warming
from ..client.group import GroupProgress


JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "lost")


class JobPrinter:
    """Writes a job's events to this process's stdout/stderr; a progress bar on a terminal."""

    def __init__(self, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
        self.out = out
        self.err = err
        self.bar_shown = False
        self.tty = err.isatty()
        self.warm_step: str | None = None
        self.children: dict[str, ChildProgress] = {}  # the latest news of each job below this one
        self.pace = Pace()

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
        elif isinstance(event, ChildProgress):
            # A job with children (a group, or a job that fans out) gets one bar for them all.
            self.children[event.child] = event
            if self.tty:
                rolled = GroupProgress(event.children_done, event.children_total, self.children)
                self.pace.update(rolled.done, time.time())
                self._bar(group_bar(rolled, event, shutil.get_terminal_size().columns, self.pace))
        elif isinstance(event, Progress) and self.tty and not self.children:
            self.pace.update(event.done, time.time())
            self._bar(progress_bar(event, shutil.get_terminal_size().columns, self.pace))

    def _bar(self, line: str) -> None:
        self.err.write("\r" + line)
        self.err.flush()
        self.bar_shown = True

    def stop(self) -> None:
        """Take the progress bar off the terminal: this printer shows no more."""
        self._clear_bar()
        self.err.flush()

    def _clear_bar(self) -> None:
        if self.bar_shown:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self.bar_shown = False

    def finish(self, end: Finished) -> None:
        self._clear_bar()
        error = end.error or {}
        if end.info.get("timed_out"):  # where it was when it was stopped, then why
            self.err.write(error.get("traceback") or "")
            self.err.write(f"warmctl: {error.get('message', f'job {end.job} timed out')}\n")
        elif end.state == "failed" and error.get("type") != "SystemExit":
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


class Pace:
    """How fast a count goes: elapsed time since the first report, items a second, and the
    time left at that rate; and a spinner's frame for a count without a total."""

    FRAMES = "|/-\\"

    def __init__(self) -> None:
        self.start: float | None = None
        self.first = 0.0
        self.ticks = 0

    def update(self, done: float, now: float) -> None:
        if self.start is None:
            self.start, self.first = now, done
        self.ticks += 1

    def describe(self, done: float, total: float | None, now: float) -> str:
        if self.start is None:
            return ""
        elapsed = now - self.start
        rate = (done - self.first) / elapsed if elapsed > 0 else 0.0
        parts = [duration(elapsed)]
        if rate > 0:
            parts.append(f"{_num(round(rate, 2))}/s")
            if total:
                parts.append(f"ETA {duration(max(0.0, total - done) / rate)}")
        return " " + " ".join(parts)

    def spinner(self) -> str:
        return self.FRAMES[self.ticks % len(self.FRAMES)]


def progress_bar(p: Progress, columns: int, pace: Pace | None = None, now: float | None = None) -> str:
    """``[####....] 40/100 40% 12.00s 3.3/s ETA 18.00s message``; with no total, a spinner
    and the count."""
    message = f" {p.message}" if p.message else ""
    now = time.time() if now is None else now
    timing = pace.describe(p.done, p.total, now) if pace is not None else ""
    if p.total:
        frac = max(0.0, min(1.0, p.done / p.total))
        count = f" {_num(p.done)}/{_num(p.total)} {100 * frac:.0f}%{timing}"
        return bar_line(frac, count, message, columns)
    spin = pace.spinner() + " " if pace is not None else ""
    return f"{spin}{_num(p.done)}{timing}{message}"[: max(1, columns - 1)]


def group_bar(rolled: GroupProgress, last: ChildProgress, columns: int, pace: Pace | None = None,
              now: float | None = None) -> str:
    """One bar for the jobs below: ended ones plus the running ones' own fractions."""
    where = " ".join(f"{k}={v}" for k, v in last.fields.items()) or last.message
    now = time.time() if now is None else now
    timing = pace.describe(rolled.done, rolled.total, now) if pace is not None else ""
    count = f" {rolled.done}/{rolled.total} jobs {100 * rolled.fraction:.0f}%{timing}"
    return bar_line(rolled.fraction, count, f" {where}" if where else "", columns)


def bar_line(frac: float, count: str, message: str, columns: int) -> str:
    width = max(10, min(40, columns - len(count) - len(message) - 4))
    filled = int(frac * width)
    return f"[{'#' * filled}{'.' * (width - filled)}]{count}{message}"[: max(1, columns - 1)]


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
    """The jobs as a tree: each under its group, else its parent, in submission order."""
    now = time.time()
    rows = []
    for depth, j in job_tree(jobs):
        children = j.get("children")
        progress = f"{children['done']}/{children['total']}" if children else own_progress(j)
        elapsed = duration((j["finished"] or now) - j["started"]) if j["started"] else "-"
        state = j["state"] + (" (timed out)" if j.get("timed_out") else "")
        rows.append([("  " * (depth - 1) + "└ " if depth else "") + j["id"], state, j["kind"],
                     shown_name(j["name"]), progress, j["exit_status"], j["worker_pid"], elapsed,
                     duration(now - j["submitted"]) if j.get("submitted") else "-"])
    return table(rows, ["JOB", "STATE", "KIND", "NAME", "PROGRESS", "EXIT", "WORKER", "TIME", "AGE"])


NAME_WIDTH = 40


def shown_name(name: str, width: int = NAME_WIDTH) -> str:
    """A job's name for a terminal: control characters escaped (a name is the user's text
    and must not move the cursor or change colours), cut with an ellipsis past ``width``."""
    safe = "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)
    return safe if len(safe) <= width else safe[:width - 1] + "…"


def select_jobs(jobs: list[dict[str, Any]], states: list[str] | None, name: str | None,
                limit: int | None) -> list[dict[str, Any]]:
    """``jobs --state/--name/--limit``: the jobs in those states whose name matches the
    shell pattern, the newest ``limit`` of them (still shown oldest first)."""
    import fnmatch
    out = [j for j in jobs if (not states or j["state"] in states)
           and (name is None or fnmatch.fnmatchcase(j["name"], name))]
    out.sort(key=lambda j: j.get("submitted") or 0)
    return out[-limit:] if limit is not None else out


def job_tree(jobs: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(depth, job) in tree order; a job whose owner is not listed is a root."""
    ids = {j["id"] for j in jobs}
    below: dict[str | None, list[dict[str, Any]]] = {}
    for j in sorted(jobs, key=lambda j: j["submitted"] or 0):
        owner = j.get("group") or j.get("parent")
        below.setdefault(owner if owner in ids else None, []).append(j)
    out: list[tuple[int, dict[str, Any]]] = []
    stack = [(0, j) for j in reversed(below.get(None, []))]
    while stack:
        depth, j = stack.pop()
        out.append((depth, j))
        stack.extend((depth + 1, c) for c in reversed(below.get(j["id"], [])))
    return out


def own_progress(j: dict[str, Any]) -> str | None:
    p = j.get("progress")
    if not p:
        return None
    return f"{_num(p['done'])}/{_num(p['total'])}" if p.get("total") else _num(p["done"])
