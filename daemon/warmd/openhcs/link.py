"""The endpoint's connection to warmd: a client, what its workers are doing, and whether
they can run OpenHCS at all.

It connects in the background (the endpoint answers OpenHCS's GUI meanwhile), asks one
worker what OpenHCS it imports (``lanes.probe``: a worker of another environment, or
of another OpenHCS release, would fail every run in a way no one could read), then
follows the daemon's watch stream for the worker rows the GUI shows. When the daemon
goes away and does not come back within the client's reconnect window, the next run
connects again (starting a daemon where it may).
"""
from __future__ import annotations

import logging
import threading
from typing import Any

import warmd
from warmd.client.watch import Disconnected, Snapshot, WorkerChanged

from ..errors import WarmdError

log = logging.getLogger("warmd.openhcs")

HOOK = "warmd.openhcs.warmup:warm"


class WarmdUnavailable(WarmdError):
    """The endpoint has no usable warmd: none answers, or its workers cannot run OpenHCS."""


class Link:
    def __init__(self, socket: str | None = None, autostart: bool = True,
                 expected_openhcs: str | None = None) -> None:
        self.socket = socket
        self.autostart = autostart
        self.expected_openhcs = expected_openhcs
        self.ready = threading.Event()
        self.error: str | None = None
        self.notes: list[str] = []
        self.mismatch = False   # its workers import another OpenHCS: never usable
        self._client: Any = None
        self._workers: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._opening = threading.Lock()

    # ---------------------------------------------------------------- connecting

    def start(self) -> None:
        threading.Thread(target=self._open_and_follow, name="warmd link", daemon=True).start()

    def _open_and_follow(self) -> None:
        client = self._open()
        if client is not None:
            self._follow(client)

    def _open(self) -> Any:
        """A connected, checked client, or None with ``error`` saying why (one attempt at a
        time; the endpoint stays up and says why at every run)."""
        with self._opening:
            with self._lock:
                if self._client is not None:
                    return self._client
            try:
                client = warmd.Client(self.socket, autostart=self.autostart, name="warmd-openhcs")
                try:
                    self._check(client)
                except BaseException:
                    client.close()
                    raise
            except BaseException as exc:
                self.error = f"warmd is not usable for OpenHCS runs: {exc}"
                log.error("%s", self.error)
                return None
            finally:
                self.ready.set()
            with self._lock:
                self._client, self.error = client, None
            return client

    def _check(self, client: Any) -> None:
        from . import executor
        probe = executor.submit_probe(client).result()
        if self.expected_openhcs and probe["openhcs"] != self.expected_openhcs:
            self.mismatch = True  # connecting again would not help
            raise WarmdUnavailable(
                f"warmd's workers import OpenHCS {probe['openhcs']} ({probe['python']}), this "
                f"endpoint OpenHCS {self.expected_openhcs}: run the warmd daemon from this "
                "environment (warmctl install-units, run from it)")
        steps = {step.get("step") for w in client.status().workers for step in w.warmup_steps}
        if f"hook {HOOK}" not in steps:
            note = (f"warmd's workers do not warm OpenHCS up before a run: add hooks = "
                    f"[\"{HOOK}\"] under [warmup] in warmd.toml, or each worker builds "
                    "OpenHCS's registry during its first run")
            self.notes.append(note)
            log.warning("%s", note)

    def _follow(self, client: Any) -> None:
        try:
            for event in client.watch():
                with self._lock:
                    if isinstance(event, Snapshot):
                        self._workers = dict(event.workers)
                    elif isinstance(event, WorkerChanged):
                        worker = event.worker
                        if worker.live:
                            self._workers[worker.pid] = worker
                        else:
                            self._workers.pop(worker.pid, None)
                    elif isinstance(event, Disconnected) and not event.reconnecting:
                        self._workers = {}
                        self._client = None  # the next run connects again
        except Exception as exc:
            log.warning("lost warmd's watch stream: %s", exc)
        with self._lock:
            if self._client is client:
                self._client = None

    # ---------------------------------------------------------------- using

    def client(self, timeout: float | None = None) -> Any:
        """A connected client (connecting again if the last one was lost); WarmdUnavailable
        saying why there is none."""
        if not self.ready.wait(timeout):
            raise WarmdUnavailable("warmd is still connecting")
        with self._lock:
            client = self._client
        if client is None and not self.mismatch:
            client = self._open()
            if client is not None:
                threading.Thread(target=self._follow, args=(client,), name="warmd watch",
                                 daemon=True).start()
        if client is None:
            raise WarmdUnavailable(self.error or "warmd is not connected")
        return client

    def workers(self) -> list[Any]:
        with self._lock:
            return sorted(self._workers.values(), key=lambda w: w.slot)

    def status_line(self) -> str | None:
        """While warmd is not ready to run a plate: what it is doing (for the GUI's server list)."""
        if not self.ready.is_set():
            return "connecting to warmd"
        if self.error:
            return self.error
        workers = self.workers()
        warming = sum(1 for w in workers if w.state == "warming")
        if warming:
            return f"warmd: {len(workers) - warming} of {len(workers)} workers warm, {warming} warming"
        return None

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
