"""Coverage-guided fuzzing of the daemon's frame reader and request handlers (atheris).

Each input is one client connection to a fresh supervisor, in this process: a
hello, then bytes made from the input, fed to the same ``ClientConnection``
the daemon uses. The supervisor holds a queued job and a finished one with
output, so requests that name jobs (by id or prefix) reach real ones. There are
no workers: what is tested is everything between the socket and a worker.

A crash is any exception that escapes the connection, any record the daemon logs
at ERROR (a handler's internal error), or an ``internal_error`` reply.

    python tests/fuzz/fuzz_requests.py -runs=1000000      # make fuzz
    python tests/fuzz/fuzz_requests.py -runs=20000 -seed=1  # the short run in make test

It prints the process's RSS after the first 10,000 inputs and at the end.
"""
from __future__ import annotations

import json
import logging
import socket
import sys

import atheris
import psutil

with atheris.instrument_imports(include=["warmd"]):
    from warmd import config
    from warmd.daemon.connections import ClientConnection
    from warmd.daemon.jobs import Job
    from warmd.daemon.listener import Listener
    from warmd.daemon.logs import JobOutputLog
    from warmd.daemon.notify import Notifier
    from warmd.daemon.placement import Placement
    from warmd.daemon.supervisor import Supervisor
    from warmd.protocol import CLIENT_MESSAGES, PREFIX, PROTOCOL_VERSION, FrameReader, encode, hello

MESSAGES = sorted(CLIENT_MESSAGES) + ["bogus", "event", "done"]
KEYS = ["t", "req", "job", "kind", "name", "path", "cwd", "argv", "device", "attach", "modules",
        "since", "mode", "interrupt_grace", "terminate_grace", "sha", "proto", "python", "group",
        "needs", "buffers", "paths", "session"]


class _Handle:
    def cancel(self) -> None:
        pass


class InstantLoop:
    """Timers and tasks are noted and dropped: one input is one instant of the daemon."""

    def call_later(self, delay: float, callback, *args) -> _Handle:
        float(delay)  # a delay the real loop could not take would fail here too
        return _Handle()

    def call_soon(self, callback, *args) -> _Handle:
        return _Handle()

    def create_task(self, coro) -> _Handle:
        coro.close()
        return _Handle()

    def time(self) -> float:
        return 0.0


class Transport:
    """What the daemon writes, kept to be checked; as asyncio's transport offers it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.out += data

    def get_extra_info(self, name: str, default=None):
        return self.sock if name == "socket" else default

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        pass

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


class Harness:
    def __init__(self) -> None:
        self.config = config.load(None)
        self.listener = Listener(socket.socket(socket.AF_UNIX), None, activated=True)
        self.placement = Placement(1, 0)
        self.notifier = Notifier(environ={})
        self.joblog = JobOutputLog()
        self.loop = InstantLoop()
        self.peer, self.peer_other = socket.socketpair()  # SO_PEERCRED: this user
        self.hello = encode(hello("fuzz", 1))
        self.errors = ErrorRecords()
        log = logging.getLogger("warmd")
        log.handlers[:] = [self.errors]
        log.setLevel(logging.WARNING)
        log.propagate = False

    def supervisor(self) -> tuple[Supervisor, list[str]]:
        sup = Supervisor(self.config, self.listener, "fuzz", self.placement, self.notifier, self.joblog)
        sup.bind_loop(self.loop)
        sup.pool.spawn = lambda device: None  # no workers: a session asked for waits, none starts
        queued = sup.submit(Job(sup.jobs.new_id(), "code", "queued", {"kind": "code"}, b"pass", 1, None))
        ended = sup.submit(Job(sup.jobs.new_id(), "code", "ended", {"kind": "code"}, b"pass", 1, None))
        sup.job_event(ended, {"kind": "stdout"}, b"output\n")
        sup.cancels.cancel(ended, "interrupt", None, None)
        group = Job(sup.jobs.new_id(), "group", "group", {"kind": "group"}, b"", 1, None)
        sup.families.open_group(group, None)
        return sup, [queued.id, ended.id, group.id]

    def one_input(self, data: bytes) -> None:
        sup, ids = self.supervisor()
        conn = ClientConnection(sup, 1 << 20)
        transport = Transport(self.peer)
        conn.connection_made(transport)
        stream = self.hello + frames(atheris.FuzzedDataProvider(data), ids)
        # In pieces, as a socket delivers them: frames cut across reads must work too.
        for start in range(0, len(stream), 4096):
            conn.received(memoryview(stream[start:start + 4096]), [])
        conn.connection_lost(None)
        self.check(transport)

    def check(self, transport: Transport) -> None:
        if self.errors.records:
            records, self.errors.records = self.errors.records, []
            raise AssertionError("the daemon logged an error:\n" + "\n".join(records))
        reader = FrameReader(1 << 32)
        reader.receive_data(bytes(transport.out))
        for frame in reader.frames():
            if frame.type == "error" and frame.get("code") == "internal_error":
                raise AssertionError(f"internal error reply: {frame.header}")


def frames(fdp: atheris.FuzzedDataProvider, ids: list[str]) -> bytes:
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 0:  # raw bytes after the hello
        return fdp.ConsumeBytes(fdp.remaining_bytes())
    out = []
    while fdp.remaining_bytes() and len(out) < 32:
        if mode == 1:  # a header of the input's own bytes behind a valid prefix
            head = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 512))
        else:  # a JSON object of known message types and field names, with values of any type
            head = _header(fdp, ids)
        payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
        out.append(PREFIX.pack(PROTOCOL_VERSION, 0, len(head), len(payload)) + head + payload)
    return b"".join(out)


def _header(fdp: atheris.FuzzedDataProvider, ids: list[str]) -> bytes:
    header: dict = {"t": fdp.PickValueInList(MESSAGES)}
    if fdp.ConsumeBool():
        header["req"] = fdp.ConsumeIntInRange(0, 1000)
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        key = fdp.PickValueInList(KEYS) if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(8)
        header[key] = _value(fdp, ids, 0)
    text = json.dumps(header)  # NaN and Infinity spelled out, as a client could send them
    if fdp.ConsumeIntInRange(0, 15) == 0:  # nesting deeper than any parser recurses
        depth = fdp.ConsumeIntInRange(1, 5000)
        text = text[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    return text.encode()[:0xFFFF]


def _value(fdp: atheris.FuzzedDataProvider, ids: list[str], depth: int):
    kind = fdp.ConsumeIntInRange(0, 9 if depth < 3 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 12))  # up to 96 bits: beyond 64 too
    if kind == 3:
        return fdp.ConsumeFloat()  # NaN and the infinities among them
    if kind == 4:
        return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 40))
    if kind == 5:
        return fdp.PickValueInList(ids)[:fdp.ConsumeIntInRange(0, 12)]  # an id or a prefix
    if kind == 6:
        return fdp.PickValueInList(["call", "script", "code", "interrupt", "terminate", "kill", "/",
                                    "/tmp", "\0", "a" * 5000])
    if kind == 7:
        return fdp.ConsumeIntInRange(-3, 3)
    if kind == 8:
        return [_value(fdp, ids, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    return {fdp.ConsumeUnicodeNoSurrogates(6): _value(fdp, ids, depth + 1)
            for _ in range(fdp.ConsumeIntInRange(0, 4))}


def main() -> None:
    harness = Harness()
    runs = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("-runs=")), 0)
    count = [0]

    def test_one_input(data: bytes) -> None:
        harness.one_input(data)
        count[0] += 1
        if count[0] in (10_000, runs):
            rss = psutil.Process().memory_info().rss / 2**20
            print(f"fuzz_requests: {count[0]} inputs, RSS {rss:.1f} MiB", flush=True)

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
