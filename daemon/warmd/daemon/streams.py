"""A job's event stream as each client gets it: within a memory bound, at the client's pace.

The daemon keeps a job's recent events for replay (``Replay``), within a byte
budget (``daemon.replay_max_bytes``): a late ``attach`` or ``logs`` gets what is
kept, preceded by a "gap" event that says how much was dropped and where the
whole output is. Each following connection has a ``Cursor``, the last event it
was sent. While a connection's socket buffer is over its high-water mark the
daemon sends it nothing and the job runs on; when the buffer drains, the
connection catches up from the replay (with a gap if the events it missed are
no longer kept), and only then gets the job's end. So a client that never reads
costs the daemon its high-water mark, not the job's output, and never holds up
the job or another client.
"""
from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ..protocol import encode

DEFAULT_REPLAY_BYTES = 4 * 1024 * 1024


class Replay:
    """Encoded event frames, seq ``first`` onwards, kept within ``limit`` bytes."""

    def __init__(self, limit: int = DEFAULT_REPLAY_BYTES) -> None:
        self.limit = limit
        self.frames: deque[bytes] = deque()
        self.sizes: deque[int] = deque()  # payload (output) bytes of each frame
        self.first = 1                    # seq of frames[0]
        self.bytes = 0                    # encoded bytes kept
        self.dropped_output = 0           # payload bytes of the events dropped, from seq 1

    @property
    def last(self) -> int:
        """The seq of the newest event (the number of events the job has had)."""
        return self.first - 1 + len(self.frames)

    def add(self, frame: bytes, output: int) -> None:
        self.frames.append(frame)
        self.sizes.append(output)
        self.bytes += len(frame)
        while self.bytes > self.limit and len(self.frames) > 1:  # the newest always stays
            self.bytes -= len(self.frames.popleft())
            self.dropped_output += self.sizes.popleft()
            self.first += 1

    def after(self, seen: int) -> Iterator[tuple[bytes, int]]:
        """The kept frames (and their output bytes) of the events after ``seen``."""
        start = max(0, seen + 1 - self.first)
        return zip(itertools.islice(self.frames, start, None), itertools.islice(self.sizes, start, None))


@dataclass(eq=False)
class Cursor:
    """How far one connection has been sent a job's stream."""
    seen: int = 0               # the seq of the last event sent
    output: int | None = 0      # payload bytes of events 1..seen (None: not known)


class Streamed(Protocol):
    """A job, as far as its stream goes (daemon.jobs.Job)."""
    id: str
    replay: Replay
    subscribers: dict[Any, Cursor]
    done_frame: bytes | None
    fetched: bool

    @property
    def finished_state(self) -> bool: ...


def gap_frame(job: "Streamed", cursor: Cursor, where: str | None) -> bytes:
    """The "gap" event for a reader at ``cursor`` whose next events are no longer kept.
    Its seq is the last dropped one, so the reader's count of events stays right."""
    replay = job.replay
    missed_bytes = None if cursor.output is None else replay.dropped_output - cursor.output
    return encode({"t": "event", "job": job.id, "seq": replay.first - 1, "kind": "gap",
                   "missed_events": replay.first - 1 - cursor.seen, "missed_bytes": missed_bytes,
                   "kept_bytes": replay.limit, "where": where})


def replay_to(conn: Any, job: "Streamed", cursor: Cursor, where: str | None, force: bool = False) -> bool:
    """Send ``conn`` what it has not had of the job's kept events, stopping if its buffer
    fills (unless ``force``); True once it has all of them."""
    replay = job.replay
    if cursor.seen < replay.first - 1:
        conn.write(gap_frame(job, cursor, where))
        cursor.seen = replay.first - 1
        if cursor.output is not None:
            cursor.output = replay.dropped_output
    for frame, size in replay.after(cursor.seen):
        if conn.held_back() and not force:
            return False
        conn.write(frame)
        cursor.seen += 1
        if cursor.output is not None:
            cursor.output += size
    return True


def publish(job: "Streamed", frame: bytes, output: int) -> None:
    """A new event of ``job``: to every follower that has had all before it and has room;
    the others catch up when their buffer drains."""
    seq = job.replay.last
    for conn, cursor in job.subscribers.items():
        if cursor.seen == seq - 1 and not conn.held_back():
            conn.write(frame)
            cursor.seen = seq
            if cursor.output is not None:
                cursor.output += output
        else:
            conn.lagging.add(job)


def catch_up(conn: Any, where_for: Any, force: bool = False) -> None:
    """``conn``'s buffer has drained: send it the events it missed, then the ends of the
    jobs that ended meanwhile. ``where_for(job)`` says where a job's whole output is.
    ``force``: all of it now, full buffer or not (the daemon is closing the connection)."""
    for job in list(conn.lagging):
        cursor = job.subscribers.get(conn)
        if cursor is None:
            conn.lagging.discard(job)
            continue
        if not replay_to(conn, job, cursor, where_for(job), force):
            return  # full again: the next drain goes on from here
        conn.lagging.discard(job)
        _end_if_caught_up(conn, job, cursor)  # its end waited until this reader had all events


def ended(job: "Streamed") -> None:
    """``job`` has ended: its end to every follower that has had all its events; the others
    get it once they have caught up (``catch_up``)."""
    for conn, cursor in list(job.subscribers.items()):
        _end_if_caught_up(conn, job, cursor)


def _end_if_caught_up(conn: Any, job: "Streamed", cursor: Cursor) -> None:
    if job.done_frame is not None and cursor.seen == job.replay.last:
        conn.write(job.done_frame)
        del job.subscribers[conn]
