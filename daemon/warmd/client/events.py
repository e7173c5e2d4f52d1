"""What a job streams to its clients, as plain values."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Union

from .. import progressreport
from ..protocol import Frame


@dataclass(frozen=True)
class Output:
    """Bytes the job wrote to file descriptor 1 ("stdout") or 2 ("stderr")."""
    job: str
    seq: int
    stream: str
    data: bytes
    time: float | None = field(default=None, compare=False)  # when the daemon received it

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")


@dataclass(frozen=True)
class Log:
    """A ``logging`` record emitted by the job."""
    job: str
    seq: int
    level: int
    name: str
    message: str
    time: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Progress:
    """``warmd.progress(done, total, message, detail=..., **fields)`` called by the job;
    ``detail`` is the report's whole record as the job gave it (JSON), or None."""
    job: str
    seq: int
    done: float
    total: float | None
    message: str
    fields: dict[str, Any] = field(default_factory=dict)
    detail: Any = None


@dataclass(frozen=True)
class ChildProgress:
    """News of a job below this one (a child, or a job of this group): it was submitted,
    started, reported progress (``done``, ``total``, ``message``, ``fields``) or ended
    (``state``). ``children_done`` of ``children_total`` jobs below this one have ended.
    A progress report's ``detail`` comes with the news it made (None otherwise)."""
    job: str
    seq: int
    child: str
    name: str
    state: str
    done: float
    total: float | None
    message: str
    fields: dict[str, Any]
    children_done: int
    children_total: int
    detail: Any = None

    @property
    def ended(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled", "lost")


@dataclass(frozen=True)
class Warming:
    """The job waits for a worker to warm up: the step running now and the seconds so far."""
    job: str
    seq: int
    step: str
    seconds: float
    worker_pid: int | None = None


@dataclass(frozen=True)
class Gap:
    """Events of the job this client will not get: dropped from the daemon's replay (which
    keeps the last ``kept_bytes``) before this client read them. ``missed_bytes`` counts
    their output (None when unknown); ``where`` names where the whole output is, if anywhere."""
    job: str
    seq: int
    missed_events: int
    missed_bytes: int | None
    kept_bytes: int
    where: str | None

    def describe(self) -> str:
        """One line for a person: how much is missing and where the whole output is."""
        missed = f"{_mib(self.missed_bytes)} of output" if self.missed_bytes is not None else "output"
        where = (f"the whole output is in {self.where}" if self.where else
                 "it is not kept anywhere else (set daemon.job_output_dir, or run the daemon under "
                 "systemd, to keep whole outputs; or raise daemon.replay_max_bytes)")
        return (f"[{missed} missed here ({self.missed_events} events): the daemon keeps the last "
                f"{_mib(self.kept_bytes)} of a job's output for late and slow readers; {where}]")


def follow(since: "Callable[[int], tuple[list[Any], bool]]", start: int = 0) -> "Iterator[Any]":
    """Iterate a stream from index ``start`` until it ends: ``since(i)`` waits for the items
    from ``i`` (or the end) and returns them and whether the stream has ended."""
    i = start
    while True:
        batch, over = since(i)
        yield from batch
        i += len(batch)
        if over and not batch:
            return


def output_text(events: "list[Event]", stream: str = "stdout") -> str:
    """The text of the ``Output`` events of ``stream`` among ``events``, joined."""
    return "".join(e.text for e in events if isinstance(e, Output) and e.stream == stream)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@dataclass(frozen=True)
class StateChange:
    job: str
    seq: int
    state: str
    worker_pid: int | None = None
    device: int | None = None


@dataclass(frozen=True)
class Finished:
    """The job's end: its final state, exit status, error and (pickled) result."""
    job: str
    state: str
    exit_status: int
    error: dict[str, str] | None
    payload: bytes = field(repr=False, default=b"")
    info: dict[str, Any] = field(default_factory=dict)
    files: tuple = field(repr=False, default=())  # the result's buffers' memfds (warmd.oob)

    @property
    def worker_pid(self) -> int | None:
        return self.info.get("worker_pid")

    @property
    def token(self) -> str | None:
        """The warm-up token of the worker that ran the job: equal tokens, same warm state."""
        return self.info.get("token")


@dataclass(frozen=True)
class Rerun:
    """warmd.dask only: Dask started the job again, attempt ``attempt`` on ``worker``,
    after the Dask worker running it died (``warmd.dask.Client(reruns=True)`` allows it);
    the events before this one came from the attempt that died."""
    job: str
    seq: int
    attempt: int
    worker: str


Event = Union[Output, Log, Progress, ChildProgress, StateChange, Warming, Gap, Rerun]


def from_frame(frame: Frame) -> Event | Finished | None:
    h = frame.header
    if h["t"] == "done":
        info = {k: v for k, v in h.items() if k not in ("t", "job", "state", "exit_status", "error")}
        return Finished(h["job"], h["state"], int(h.get("exit_status") or 0), h.get("error"),
                        frame.payload, info, frame.files)
    kind = h.get("kind")
    job, seq = h["job"], int(h.get("seq", 0))
    if kind in ("stdout", "stderr"):
        return Output(job, seq, kind, frame.payload, h.get("ts"))
    if kind == "log":
        return Log(job, seq, int(h.get("level") or 0), str(h.get("name") or ""), str(h.get("message") or ""),
                   h.get("ts"))
    if kind == "progress":
        return Progress(job, seq, h.get("done") or 0, h.get("total"), str(h.get("message") or ""),
                        dict(h.get("fields") or {}), _detail(h, frame.payload))
    if kind == "child":
        return ChildProgress(job, seq, str(h.get("child") or ""), str(h.get("name") or ""),
                             str(h.get("state") or ""), h.get("done") or 0, h.get("total"),
                             str(h.get("message") or ""), dict(h.get("fields") or {}),
                             int(h.get("children_done") or 0), int(h.get("children_total") or 0),
                             _detail(h, frame.payload))
    if kind == "gap":
        return Gap(job, seq, int(h.get("missed_events") or 0), h.get("missed_bytes"),
                   int(h.get("kept_bytes") or 0), h.get("where"))
    if kind == "warmup":
        return Warming(job, seq, str(h.get("step") or ""), float(h.get("seconds") or 0),
                       h.get("worker_pid"))
    if kind == "state":
        return StateChange(job, seq, h.get("state", ""), h.get("worker_pid"), h.get("device"))
    return None


def _detail(header: dict[str, Any], payload: bytes) -> Any:
    return progressreport.decode_detail(payload) if header.get("detail") else None


def echo(item: Output | Gap) -> None:
    """Copy a job's output to this process's own stdout or stderr (``Client(echo=True)``)."""
    if isinstance(item, Gap):
        print(f"warmd: job {item.job}: {item.describe()}", file=sys.stderr, flush=True)
        return
    out = sys.stdout if item.stream == "stdout" else sys.stderr
    if hasattr(out, "buffer"):
        out.buffer.write(item.data)
    else:
        out.write(item.text)
    out.flush()
