"""The Dask worker's side: a warmd daemon of its own, and the task that runs a job on it.

``WarmWorkers`` is a Dask worker plugin. On each Dask worker process it starts a
private warmd daemon (``warmd.localdaemon``) with the client's configuration and as
many warm workers as the Dask worker has threads, so a job on Dask runs exactly as
it runs locally: on a warm worker process in its own process group, with the same
warm-up, the same freshness of the user's modules, the same cancel. The daemon is
tied to the Dask worker by a lifeline pipe: when the Dask worker exits, even by
SIGKILL, the daemon stops and takes its workers with it.

``run_job`` is the Dask task: it submits the job to that daemon, forwards each event
with ``Worker.log_event`` to the client's topic, and returns the job's end. Cancel
reaches it three ways: ``cancel_here`` (what ``warmd.dask`` calls, on every worker,
and returns once the job's processes are gone), a key cancelled before its task
started here (refused when it starts), and Dask's own cancel or release of a running
task (the plugin sees the transition and cancels the job).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from distributed import SchedulerPlugin, WorkerPlugin, get_worker

from ..localdaemon import LocalDaemon
from .carry import CarriedEnd, CarriedJob, event_message

log = logging.getLogger("warmd.dask")

_REMEMBERED = 10000        # keys cancelled before they came here, kept to refuse them
_SOCKET_MAX = 100          # a Unix socket path must fit in 108 bytes
_TASK_LEFT = ("cancelled", "released", "forgotten")
FLUSH_SECONDS = 0.02       # how long an event may wait to travel with the next ones
FLUSH_EVENTS = 256
KEY_PREFIX = "warmd-"       # every warmd job's Dask key starts so
ATTEMPT = "warmd_attempt"  # the task annotation RerunMarks sets on a rerun
FLUSH_BYTES = 64 << 10     # of output per message: the scheduler keeps a topic's last 1000 messages


def plugin_name(config_text: str, pythonpath: tuple[str, ...] = (), spares: int | None = 0) -> str:
    """One plugin, so one daemon per Dask worker, for each distinct configuration."""
    made = repr((config_text, pythonpath, spares)).encode()
    return "warmd-" + hashlib.sha256(made).hexdigest()[:12]


class WarmWorkers(WorkerPlugin):
    """Keeps a warmd daemon with warm workers beside each Dask worker (see the module)."""

    idempotent = True  # a second client with the same configuration shares the daemons

    def __init__(self, config_text: str, pythonpath: tuple[str, ...] = (), spares: int | None = 0) -> None:
        self.config_text = config_text
        self.pythonpath = tuple(pythonpath)
        self.spares = spares
        self.name = plugin_name(config_text, self.pythonpath, spares)

    # -- the plugin's life, on the Dask worker's event loop
    async def setup(self, worker: Any) -> None:
        self.address = worker.address
        self._lock = threading.Lock()
        self._running: dict[str, Any] = {}                     # key -> JobFuture
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self.daemon: LocalDaemon | None = None
        self.client: Any = None
        await asyncio.to_thread(self._start, worker.local_directory, worker.state.nthreads)

    def _start(self, local_directory: str, threads: int) -> None:
        root = Path(local_directory) / self.name
        if len(str(root / "run" / "warmd.sock")) > _SOCKET_MAX:
            root = Path(tempfile.mkdtemp(prefix="warmd-dask-"))
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        args = ["--workers", str(threads)]
        if self.spares is not None:
            args += ["--spares", str(self.spares)]
        self.daemon = LocalDaemon(root, self.config_text, tuple(args),
                                  pythonpath=(*self.pythonpath, local_directory),
                                  private_dirs=False, lifeline=True, remove_root=True).start()
        self.client = self.daemon.client(reconnect=False)
        log.info("warmd daemon %d for Dask worker %s: %d workers, socket %s",
                 self.daemon.pid, self.address, threads, self.daemon.socket)

    async def teardown(self, worker: Any) -> None:
        await asyncio.to_thread(self._stop)

    def _stop(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.daemon is not None:
            self.daemon.stop()

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        # Dask cancelled or released a task while it ran: its job must not run on unseen.
        if start == "executing" and finish in _TASK_LEFT and str(key) in self._running:
            threading.Thread(target=self.cancel, args=(str(key), "interrupt"), daemon=True,
                             name="warmd-dask-cancel").start()

    # -- jobs, in the Dask worker's task threads
    def run(self, job: CarriedJob, key: str, send: Callable[[dict], None]) -> CarriedEnd:
        with self._lock:
            if key in self._cancelled:
                return CarriedEnd.refused("cancelled", f"job {key} was cancelled before it started",
                                          "JobCancelled", self.address)
            future = self.client.submit_job(job.request(), device=job.device)
            self._running[key] = future
        try:
            sent, tail = forward(future, key, send)
            try:
                future.exception()
            except BaseException:
                pass  # a cancelled future raises here; its end record says how it ended
            end = future.finished
            if end is None:  # the daemon went away under it
                reason = future.exception() if not future.cancelled() else None
                return CarriedEnd.refused("lost", f"the warmd daemon beside Dask worker {self.address} "
                                          f"went away while job {key} ran: {reason}", "JobLost", self.address)
            return CarriedEnd.of(end, sent, self.address, tail)
        finally:
            with self._lock:
                self._running.pop(key, None)

    def cancel(self, key: str, mode: str = "interrupt") -> str:
        """Cancel ``key`` here: "cancelled" once its processes are gone, "finished" if it
        ended first, "marked" when it is not running here (refused if it comes)."""
        with self._lock:
            future = self._running.get(key)
            if future is None:
                self._cancelled[key] = None
                while len(self._cancelled) > _REMEMBERED:
                    self._cancelled.popitem(last=False)
                return "marked"
        return "cancelled" if future.cancel(mode=mode) else "finished"

    def status(self) -> dict[str, Any]:
        """The daemon's pid, socket, log file and workers (``Client.daemons``)."""
        status = self.client.status()
        return {"pid": self.daemon.pid, "socket": str(self.daemon.socket),
                "log": str(self.daemon.root / "daemon.log"),
                "workers": [{"pid": w.pid, "state": w.state, "jobs_run": w.jobs_run, "token": w.token,
                             "warmup_seconds": w.warmup_seconds} for w in status.workers]}


def forward(future: Any, key: str, send: Callable[[dict], None]) -> tuple[int, list[dict]]:
    """Send ``future``'s events as they come, a batch at most every FLUSH_SECONDS (each
    message on Dask's streams can hold back the next one by their batching interval);
    the events of its last moments go back with its end instead. Returns how many were
    sent and the rest."""
    sent, index, pending, size, since = 0, 0, [], 0, 0.0
    while True:
        wait = None if not pending else max(0.0, since + FLUSH_SECONDS - time.monotonic())
        batch, over = future.events_since(index, wait)
        index += len(batch)
        future.release(index)  # held in ``pending`` until sent: nothing else needs them
        if batch and not pending:
            since = time.monotonic()
        for event in batch:
            pending.append(event_message(key, event))
            size += len(getattr(event, "data", b""))
            if size >= FLUSH_BYTES or len(pending) >= FLUSH_EVENTS:
                send({"key": key, "events": pending})
                sent, pending, size, since = sent + len(pending), [], 0, time.monotonic()
        if over:
            return sent, pending
        if pending and time.monotonic() - since >= FLUSH_SECONDS:
            send({"key": key, "events": pending})
            sent, pending, size = sent + len(pending), [], 0


def _plugin(worker: Any, name: str) -> WarmWorkers:
    plugin = worker.plugins.get(name)
    if plugin is None:
        raise RuntimeError(f"Dask worker {worker.address} has no warmd plugin {name}: it joined "
                           "without it, or its setup failed (see the worker's log)")
    return plugin


def run_job(job: CarriedJob, plugin: str, topic: str, reruns: bool = False) -> CarriedEnd:
    """The Dask task of one warmd job: run it on this worker's daemon, send its events
    to ``topic`` in order, return its end.

    When a Dask worker dies mid-task, Dask starts the task again elsewhere (up to
    ``distributed.scheduler.allowed-failures`` times). A job with side effects must not
    run twice unseen: a second start ends the job lost, unless ``reruns`` allows it, and
    then the client is told with a ``Rerun`` event first."""
    worker = get_worker()
    task = worker.get_current_task()
    key = str(task)
    send = lambda message: worker.log_event(topic, message)  # noqa: E731
    attempt = _attempt(worker, task)
    if attempt > 1:
        if not reruns:
            return CarriedEnd.refused(
                "lost", f"job {key} was lost: the Dask worker running it died, and Dask started it "
                f"again on {worker.address}; warmd does not run a job twice unless asked "
                "(warmd.dask.Client(reruns=True))", "JobLost", worker.address)
        send({"key": key, "events": [{"key": key, "type": "Rerun", "seq": 0, "attempt": attempt,
                                      "worker": worker.address}]})
    return _plugin(worker, plugin).run(job, key, send)


class RerunMarks(SchedulerPlugin):
    """On the scheduler: a warmd job's task sent back to be run again because the Dask
    worker running it died carries its attempt number to the next worker, in its
    annotations, which travel with the task (so the happy path pays no round trip)."""

    name = "warmd-rerun-marks"
    idempotent = True

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if start != "processing" or not str(key).startswith(KEY_PREFIX):
            return
        task = self.scheduler.tasks.get(key)
        if task is not None and task.suspicious:  # a worker died while running it
            task.annotations = {**(task.annotations or {}), ATTEMPT: task.suspicious + 1}


def _attempt(worker: Any, key: Any) -> int:
    """This start's number for the task ``key`` (1 unless ``RerunMarks`` said otherwise)."""
    task = worker.state.tasks.get(key)
    return int(((task.annotations if task is not None else None) or {}).get(ATTEMPT, 1))


async def cancel_here(keys: list[str], plugin: str, mode: str, dask_worker: Any = None) -> dict[str, str]:
    """``Client.run`` target: cancel ``keys`` on this worker (see ``WarmWorkers.cancel``)."""
    found = dask_worker.plugins.get(plugin)
    if found is None:
        return {key: "absent" for key in keys}
    return await asyncio.to_thread(lambda: {key: found.cancel(key, mode) for key in keys})


async def daemon_here(plugin: str, dask_worker: Any = None) -> dict[str, Any]:
    """``Client.run`` target: this worker's daemon and its warm workers."""
    return await asyncio.to_thread(_plugin(dask_worker, plugin).status)
