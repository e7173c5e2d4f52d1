"""Capture file descriptors 1 and 2 of the worker and forward them as frames.

Capturing the descriptors (not sys.stdout) also catches C code and child
processes. A pump thread forwards data as it arrives; ``flush`` drains the pipes
under the channel's send lock, so a progress event or a job's end never
overtakes output the job wrote before it.

A frame can also wait to be sent (``send_later``): a session's call says it began
only when it first writes, reports, or has run ``LATER`` seconds, or else with its
end, so a short call wakes the daemon once, after its caller has the result. While
such a frame may be waiting, the pump thread wakes every ``LATER`` seconds.
"""
from __future__ import annotations

import os
import select
import sys
import threading
import time

from ..channel import Channel, send_wire
from ..protocol import encode_parts

_CHUNK = 1 << 16
LATER = 0.05  # seconds a frame given to send_later may wait


class OutputPump:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._readers: dict[int, int] = {}  # read fd -> target fd (1 or 2)
        # The write ends stay open here (close-on-exec) so a job that closes or
        # redirects fd 1 or 2 can neither end the stream nor keep it: see restore().
        self._writers: dict[int, int] = {}  # target fd -> write end
        for target in (1, 2):
            r, w = os.pipe()
            os.set_blocking(r, False)
            self._readers[r] = target
            self._writers[target] = w
        self.restore()
        # Line-buffer Python's own streams so prints stream live, a line in one write
        # (also under PYTHONUNBUFFERED, which would split print()'s pieces).
        sys.stdout.reconfigure(line_buffering=True, write_through=False)
        sys.stderr.reconfigure(line_buffering=True, write_through=False)
        self._poll = select.poll()
        self._pending = select.poll()  # flush's own (a poll object serves one thread at a time)
        for r in self._readers:
            self._poll.register(r, select.POLLIN)
            self._pending.register(r, select.POLLIN)
        self._later: tuple[float, dict] | None = None  # (since, frame) waiting to be sent
        self._timed = False  # the pump thread wakes every LATER seconds (a session holds us)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll.register(self._wake_r, select.POLLIN)
        self._thread = threading.Thread(target=self._run, name="warmd-output", daemon=True)
        self._thread.start()

    def restore(self) -> None:
        """Point fds 1 and 2 back at the pipes, whatever the last job did to them."""
        for target, w in self._writers.items():
            os.dup2(w, target)

    def timed(self, on: bool) -> None:
        """Wake every LATER seconds (for frames given to ``send_later``), or only for output."""
        self._timed = on
        if on:
            os.write(self._wake_w, b"x")  # the thread may be waiting with no timeout

    def _run(self) -> None:
        while True:
            if self._poll.poll(LATER * 1000 if self._timed else None) and self._drain_wake():
                continue
            with self.channel.send_lock:
                if self._later is not None and time.monotonic() - self._later[0] >= LATER:
                    self._send_later_locked()
                self._drain_locked()

    def _drain_wake(self) -> bool:
        try:
            return bool(os.read(self._wake_r, 64))
        except BlockingIOError:
            return False

    def send_later(self, header: dict) -> None:
        """Send ``header`` before anything else sent from now on, or after LATER seconds."""
        self._later = (time.monotonic(), header)

    def _send_later_locked(self) -> None:
        if self._later is not None:
            header, self._later = self._later[1], None
            self.channel.send_locked(header)

    def _drain_locked(self) -> None:
        for r, target in self._readers.items():
            while True:
                try:
                    data = os.read(r, _CHUNK)
                except BlockingIOError:
                    break
                if not data:
                    break
                self._send_later_locked()
                self.channel.send_locked({"t": "out", "fd": target}, data)

    def flush_then_send(self, header: dict | None, payload: bytes = b"", files: tuple = ()) -> None:
        """Send ``header`` after everything written to fds 1 and 2 so far (None: only that)."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        with self.channel.send_lock:
            if self._pending.poll(0):  # one system call when nothing waits, not a read per pipe
                self._drain_locked()
            if header is not None:
                self._send_later_locked()
                self.channel.send_locked(header, payload, files)

    def send(self, header: dict, payload: bytes = b"", files: tuple = ()) -> None:
        """Send ``header`` now, after the output already forwarded: for what is said between
        jobs, when no output of theirs can be waiting."""
        with self.channel.send_lock:
            if self._later is None or files:
                self._send_later_locked()
                self.channel.send_locked(header, payload, files)
            else:  # the waiting frame and this one in one write: the daemon wakes once
                later, self._later = self._later[1], None
                send_wire(self.channel.sock, encode_parts(later) + encode_parts(header, payload, files))
