"""``warmctl logs`` and ``attach``: a job's output as lines, cut to ``--tail`` and
``--since``, stamped with ``--timestamps``, and followed until Ctrl-C, which stops
following and leaves the job running (as ``docker logs -f`` does)."""
from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Iterable, Iterator

from ..client.events import Log, Output
from . import exitcodes, render

_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since(text: str, now: float | None = None) -> float:
    """A point in time from "90s", "10m", "2h", "1d" (that long ago) or an ISO 8601 time."""
    now = time.time() if now is None else now
    m = _AGO.match(text)
    if m:
        return now - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r}: expected a duration such as 10m or 2h, or a time "
                         "such as 2026-12-02T14:30") from None
    return (moment if moment.tzinfo else moment.astimezone()).timestamp()


@dataclass(frozen=True)
class View:
    tail: int | None = None     # lines to keep from the end of what is there already
    since: float | None = None  # drop what came before this time
    timestamps: bool = False


def lines(events: Iterable[Any]) -> Iterator[Any]:
    """Events with output cut at line ends, one Output per line (a last partial line
    stays one piece); other events as they are."""
    for event in events:
        if not isinstance(event, Output) or event.data.count(b"\n") <= 1:
            yield event
            continue
        for piece in event.data.splitlines(keepends=True):
            yield replace(event, data=piece)


def cut(events: list[Any], view: View) -> list[Any]:
    """What a view shows of events already there: those since ``since``, then the last
    ``tail`` lines of output and logging (other events are kept, being no lines)."""
    out = [e for e in lines(events)
           if view.since is None or getattr(e, "time", None) is None or e.time >= view.since]
    if view.tail is None:
        return out
    shown = [i for i, e in enumerate(out) if isinstance(e, (Output, Log))]
    drop = set(shown[:max(0, len(shown) - view.tail)])
    return [e for i, e in enumerate(out) if i not in drop]


class StampedPrinter(render.JobPrinter):
    """A JobPrinter that starts each line of output with the time it reached the daemon."""

    def __init__(self) -> None:
        super().__init__()
        self.at_line_start = {"stdout": True, "stderr": True}

    def show(self, event: Any) -> None:
        if isinstance(event, Output) and event.time is not None:
            out = bytearray()
            for piece in event.data.splitlines(keepends=True):
                if self.at_line_start[event.stream]:
                    out += f"{stamp(event.time)} ".encode()
                out += piece
                self.at_line_start[event.stream] = piece.endswith(b"\n")
            event = replace(event, data=bytes(out))
        elif isinstance(event, Log) and event.time is not None:
            self.stop()
            self.err.write(f"{stamp(event.time)} ")
        super().show(event)


def stamp(moment: float) -> str:
    return datetime.fromtimestamp(moment).astimezone().isoformat(timespec="milliseconds")


def show_logs(client: Any, job_id: str, view: View) -> int:
    """Print what a job has produced so far (its end too, a failed job's traceback with it)."""
    job_id = client.resolve(job_id)
    printer = _printer(view)
    printer.tty = False  # no progress bar for a replay
    for event in cut(client.logs(job_id), view):
        printer.show(event)
    state = next((j.state for j in client.jobs() if j.id == job_id), None)
    if state in ("succeeded", "failed", "cancelled", "lost"):
        printer.finish(client.wait(job_id))
    return exitcodes.OK


def follow_detachable(client: Any, job_id: str, view: View, *, exit_with_job: bool) -> int:
    """Print a job's output so far (as ``view`` cuts it), then live until it ends. Ctrl-C
    stops following and leaves the job running, saying how to come back."""
    job_id = client.resolve(job_id)
    known = next((j.events for j in client.jobs() if j.id == job_id), 0)
    future = client.attach(job_id)
    printer = _printer(view)
    try:
        replayed: list[Any] = []
        events = future.events()
        if known:  # the output already there comes first, up to event ``known``: cut as a whole
            for event in events:
                replayed.append(event)
                if getattr(event, "seq", 0) >= known:
                    break
        for shown in cut(replayed, view):
            printer.show(shown)
        for event in events:
            printer.show(event)
    except KeyboardInterrupt:
        printer.stop()
        sys.stderr.write(f"\nwarmctl: stopped following job {job_id}; it goes on. Follow it again "
                         f"with 'warmctl logs -f {job_id[:8]}', or cancel it with "
                         f"'warmctl cancel {job_id[:8]}'\n")
        return exitcodes.JOB_CANCELLED  # 130: interrupted, as a shell says of Ctrl-C
    end = future.finished
    if end is None:
        future.result()  # JobLost, when the daemon went away
    printer.finish(end)
    return exitcodes.of_job(end) if exit_with_job else exitcodes.OK


def _printer(view: View) -> render.JobPrinter:
    return StampedPrinter() if view.timestamps else render.JobPrinter()
