"""Clients across daemon restarts: a watch stream read on a thread, a stand-in for a
daemon that goes away while a welcome is awaited, waiting for a job's line."""
from __future__ import annotations

import os
import queue
import socket
import threading

import warmd
from warmd.client.events import Output
from warmd.client.watch import Snapshot

DEADLINE = 60


def wait_for_output(future, text: str) -> None:
    for event in future.events():
        if isinstance(event, Output) and text in event.text:
            return
    raise AssertionError(f"the job ended without printing {text!r}")


class Events:
    """Watch events put on a queue by another thread (None once the stream ended)."""

    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()

    def next(self):
        return self.events.get(timeout=DEADLINE)

    def until(self, kind) -> list:
        seen = []
        while not seen or not isinstance(seen[-1], kind):
            seen.append(self.next())
            assert seen[-1] is not None, f"the watch ended before a {kind.__name__}: {seen}"
        return seen


class Watching(Events):
    """A ``warmd.Client``'s watch stream, read on a thread."""

    def __init__(self, client: warmd.Client) -> None:
        super().__init__()
        self.thread = threading.Thread(target=self._run, args=(client,), daemon=True)
        self.thread.start()
        assert isinstance(self.next(), Snapshot)

    def _run(self, client) -> None:
        for event in client.watch():
            self.events.put(event)
        self.events.put(None)  # the iterator ended


class HangUp:
    """Something on the daemon's socket that accepts ``times`` connections and closes
    each once its greeting came, unanswered: a daemon gone while a welcome was awaited."""

    def __init__(self, path: str, times: int) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.path, self.times, self.done = path, times, threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        for _ in range(self.times):
            conn, _ = self.sock.accept()
            conn.recv(65536)
            conn.close()
        self.done.set()

    def close(self) -> None:
        self.sock.close()
        os.unlink(self.path)
