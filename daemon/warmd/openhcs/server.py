"""``WarmdExecutionServer``: OpenHCS's own execution server, with warmd's warm workers
where it would start a process pool, and runs that stop one at a time.

A subclass of OpenHCS's ``ZMQExecutionServer`` (runtime/zmq_execution_server.py in
OpenHCS 0.8.6), so OpenHCS's GUI, its ``Session`` and its MCP server talk to it as to
their own: same handshake, same requests, the pipeline sent as source and compiled
here, progress on the same channel. What differs:

- the worker lanes of a run are jobs of one warmd group (see ``executor``); nothing
  is ever killed after a run, and a second Run finds the workers warm;
- Stop cancels that run's group: its processes are gone when the reply goes, other
  runs go on; the server's shutdown request cancels every run, and its force variant
  also stops the endpoint, at once;
- runs go at the same time (up to ``max_runs``), where the stock server takes them
  one by one: their work in this process (compile, the plate-level finish) takes
  turns, their wells overlap on warmd;
- the address is bound before warm-up (see ``endpoint``), and while OpenHCS's catalog
  and warmd's workers warm, the GUI's server list says so;
- an edited user step module is read again before the next run compiles;
- it sleeps until a request or a progress event comes: no polling.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import replace
from typing import Any, Callable

import psutil
import zmq
from openhcs.runtime.zmq_execution_server import ZMQExecutionServer
from openhcs.runtime.zmq_server_hooks import ZMQWorkerCleanup
from zmqruntime.messages import ExecutionStatus, MessageFields, ResponseType, WorkerState
from zmqruntime.server import ZMQServer

from . import caches, executor, rehearsal
from .freshness import Freshness
from .link import Link

log = logging.getLogger("warmd.openhcs")

_STOP = None  # on the execution queue: the queue worker ends


class Wake:
    """An eventfd the serving loop sleeps on beside the control socket."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def set(self) -> None:
        os.eventfd_write(self.fd, 1)

    def clear(self) -> None:
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass


class WakingQueue(queue.Queue):
    """The server's progress queue: every put wakes the loop that publishes it."""

    def __init__(self, wake: Wake) -> None:
        super().__init__()
        self.wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self.wake.set()


class WarmdExecutionServer(ZMQExecutionServer):
    def __init__(self, *, config: Any, link: Link, max_runs: int = 4,
                 lane_log_level: str = "INFO", job_log_level: str | None = None,
                 log_file_path: str | None = None, rehearse: bool = True) -> None:
        super().__init__(config=config, log_file_path=log_file_path)
        self.link = link
        self.runs = executor.Runs()
        self.process_lock = threading.Lock()
        self.freshness = Freshness()
        self.wake = Wake()
        self.progress_queue = WakingQueue(self.wake)
        self._run_slots = threading.BoundedSemaphore(max_runs)
        self._openhcs_warm = threading.Event()
        self._rehearse = rehearse
        self._rehearsing = False
        self._procs: dict[int, psutil.Process] = {}
        self._uninstall = executor.install(executor.Backend(
            client=link.client, lock=self.process_lock, runs=self.runs,
            lane_log_level=lane_log_level, job_log_level=job_log_level))

    # ---------------------------------------------------------------- warming, after binding

    def warm_up(self, on_warm: Callable[[str], None] = lambda line: None) -> None:
        """Start connecting to warmd and preparing OpenHCS's catalog and registry in the
        background: the endpoint answers (and queues runs) meanwhile. ``on_warm(line)``
        once both are done (the service's status line)."""
        self.link.start()
        threading.Thread(target=self._warm_openhcs, args=(on_warm,), name="openhcs warm-up",
                         daemon=True).start()

    def _warm_openhcs(self, on_warm: Callable[[str], None]) -> None:
        self._prepare_openhcs()
        self.link.ready.wait()
        if self._rehearse and not self.link.error:
            self._rehearse_first_run()
        on_warm("warm: OpenHCS's registry ready; " + (self.link.error or "warmd connected"))

    def _rehearse_first_run(self) -> None:
        self._rehearsing = True
        try:
            seconds = rehearsal.rehearse(self.config)
        except Exception as exc:  # the endpoint serves all the same; the first Run pays
            log.warning("the rehearsal run did not complete (%s); the first Run warms up "
                        "OpenHCS's compiler instead", exc)
        else:
            log.info("rehearsal run (a two-well synthetic plate) done in %.1f s", seconds)
        finally:
            self._rehearsing = False

    def _prepare_openhcs(self) -> None:
        start = time.perf_counter()
        try:
            self.prepare_runtime_capabilities()
            import openhcs.processing.func_registry as registry
            with registry._registry_lock:
                if not registry._registry_initialized:
                    registry._auto_initialize_registry()
        except Exception:
            log.exception("OpenHCS's function catalog could not be prepared; runs will retry")
        else:
            log.info("OpenHCS's function catalog and registry ready in %.1f s",
                     time.perf_counter() - start)
        finally:
            self._openhcs_warm.set()

    def warming_line(self) -> str | None:
        """What is still warming, for the GUI's server list; None once nothing is."""
        parts = []
        if not self._openhcs_warm.is_set():
            parts.append("OpenHCS catalog warming")
        if self._rehearsing:
            parts.append("rehearsing a first run")
        line = self.link.status_line()
        if line:
            parts.append(line)
        return "; ".join(parts) or None

    def _create_pong_response(self):
        response = super()._create_pong_response()
        line = self.warming_line()
        if line and response.compile_status is None:
            response = replace(response, compile_status="warming", compile_message=line)
        return response

    def _get_worker_info(self):
        """warmd's workers, as the GUI lists a server's workers (state: warming, idle, busy)."""
        states = []
        for worker in self.link.workers():
            proc = self._procs.get(worker.pid)
            try:
                if proc is None:
                    proc = self._procs[worker.pid] = psutil.Process(worker.pid)
                states.append(WorkerState(pid=worker.pid, status=worker.state,
                                          cpu_percent=proc.cpu_percent(interval=None),
                                          memory_mb=proc.memory_info().rss / 2**20,
                                          create_time=proc.create_time()))
            except psutil.Error:
                self._procs.pop(worker.pid, None)
        live = {w.pid for w in states}
        for pid in [p for p in self._procs if p not in live]:
            del self._procs[pid]
        return states

    # ---------------------------------------------------------------- runs at once

    def _queue_worker(self) -> None:
        """Start each queued run on a thread of its own, at most ``max_runs`` at once."""
        try:
            while self._running:
                item = self.execution_queue.get()
                if item is _STOP:
                    self.execution_queue.task_done()
                    break
                execution_id, request = item
                self._run_slots.acquire()
                threading.Thread(target=self._run_one, args=(execution_id, request),
                                 name=f"run {execution_id[:8]}", daemon=True).start()
        finally:
            while True:
                try:
                    item = self.execution_queue.get_nowait()
                except queue.Empty:
                    break
                if item is not _STOP:
                    self._lifecycle.mark_cancelled(item[0])
                self.execution_queue.task_done()

    def _run_one(self, execution_id: str, request: Any) -> None:
        try:
            record = self.active_executions[execution_id]
            if record.status != ExecutionStatus.CANCELLED.value:
                self.run_execution(execution_id, request, record)
        finally:
            self.execution_queue.task_done()
            self._run_slots.release()

    def execute_task(self, execution_id: str, request: Any) -> Any:
        self.runs.begin(execution_id, os.path.basename(str(request.plate_id)))
        try:
            with self.process_lock:  # let go while the run's wells are on warmd
                stale = self.freshness.drop_stale()
                if stale:
                    held = caches.clear_function_caches(stale)
                    log.info("[%s] edited modules %s read again; dropped OpenHCS's cached "
                             "functions %s", execution_id, sorted(stale), held)
                return super().execute_task(execution_id, request)
        finally:
            self.runs.end(execution_id)

    def _resolve_request_config(self, request_payload: Any, pipeline_config: Any) -> Any:
        # Called just after the run's pipeline source ran: note the user modules it imported.
        self.freshness.note()
        return super()._resolve_request_config(request_payload, pipeline_config)

    # ---------------------------------------------------------------- Stop and shutdown

    def _interrupt_execution(self, execution_id: str) -> int:
        """Stop of one run: OpenHCS's own cooperative cancel (its compile or finish stops at
        the next boundary), then the run's warmd group; returns once its processes are gone,
        with how many of its lanes were still running."""
        run = self.runs.get(execution_id)
        going = run.going() if run is not None else 0
        ZMQWorkerCleanup(self.active_executions).cancel_execution(execution_id)
        self.runs.cancel(execution_id)
        return going

    def _kill_worker_processes(self) -> int:
        return 0  # the workers are warmd's, warm for the next run: never killed here

    def _shutdown_workers(self, force: bool = False) -> dict[str, Any]:
        self._cancel_all_executions()
        stopped = sum(self._interrupt_execution(run.execution_id) for run in self.runs.all())
        if force:
            self.request_shutdown()
        message = (f"{stopped} running lane(s) cancelled, warmd's workers kept warm; endpoint "
                   f"{'shutting down' if force else 'alive'}")
        log.info("%s", message)
        return {MessageFields.TYPE: ResponseType.SHUTDOWN_ACK.value, MessageFields.STATUS: "success",
                MessageFields.MESSAGE: message}

    def request_shutdown(self) -> None:
        super().request_shutdown()
        self.wake.set()

    # ---------------------------------------------------------------- serving

    def serve(self) -> None:
        """Answer requests and publish progress until shut down, asleep in between."""
        poller = zmq.Poller()
        poller.register(self.control_socket, zmq.POLLIN)
        poller.register(self.wake.fd, zmq.POLLIN)
        while self.is_running():
            poller.poll()
            self.wake.clear()
            self.process_messages()
        self.stop()

    def stop(self) -> None:
        if self.control_socket is None and self.data_socket is None:
            return
        self._running = False
        ZMQServer.stop(self)  # the sockets first: to clients the endpoint is gone at once
        for run in self.runs.all():
            self._interrupt_execution(run.execution_id)
        self.execution_queue.put(_STOP)
        try:
            super().stop()  # OpenHCS's: its catalog preparation ended, its backends closed
        finally:
            self._uninstall()
            self.link.close()
