"""What clients ask of the daemon: the handshake, then one ``on_<type>`` per message type.

Handlers check a request, act through the supervisor, and answer on the
client's connection. A malformed request is answered with an error and the
connection stays open; see warmd-protocol(7).
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..protocol import (CLIENT_MESSAGES, E_BAD_REQUEST, E_NO_WORKERS, E_SHUTTING_DOWN, E_UNKNOWN_JOB,
                        E_UNKNOWN_TYPE, E_VERSION, Frame, check_hello, encode, source_digest,
                        source_frame)
from .connections import ClientConnection
from .jobs import Job, ModuleCopy
from .pool import LIVE

if TYPE_CHECKING:
    from .supervisor import Supervisor

log = logging.getLogger("warmd")

CANCEL_STAGES = ("interrupt", "terminate", "kill")
JOB_KINDS = ("call", "script", "code")


class Requests:
    def __init__(self, supervisor: "Supervisor") -> None:
        self.sup = supervisor

    def handle(self, conn: ClientConnection, frame: Frame) -> None:
        kind = frame.type
        req = frame.get("req")
        if not conn.greeted:
            self._greet(conn, frame)
            return
        if kind not in CLIENT_MESSAGES:
            conn.send({"t": "error", "req": req, "code": E_UNKNOWN_TYPE,
                       "message": f"unknown message type {kind!r}"})
            return
        handler = getattr(self, f"on_{kind}")
        try:
            handler(conn, frame, req)
        except (KeyError, TypeError, ValueError) as exc:
            conn.send({"t": "error", "req": req, "code": E_BAD_REQUEST,
                       "message": f"bad {kind} request: {type(exc).__name__}: {exc}"})

    def _greet(self, conn: ClientConnection, frame: Frame) -> None:
        sup = self.sup
        if frame.type != "hello":
            conn.fail(E_BAD_REQUEST, 'the first frame must be "hello" (handshake)')
            return
        problem = check_hello(frame.header, sup.python, sup.cloudpickle)
        if problem:
            log.warning("refused client pid %s: %s", conn.pid, problem, extra={"CLIENT_PID": conn.pid})
            conn.fail(E_VERSION, problem)
            return
        conn.greeted = True
        conn.send({"t": "welcome", "version": __version__, "pid": os.getpid(),
                   "started_by": sup.started_by, "warm_packages": sup.warm_packages,
                   "max_frame": sup.max_payload})

    def _job_or_error(self, conn: ClientConnection, frame: Frame, req: Any) -> Job | None:
        job_id = frame.header["job"]
        job = self.sup.jobs.get(str(job_id))
        if job is None:
            conn.send({"t": "error", "req": req, "code": E_UNKNOWN_JOB, "job": job_id,
                       "message": f"no job {job_id!r}: it never existed here or its result expired "
                                  "(see 'warmctl jobs')"})
        return job

    def _deliver_end(self, conn: ClientConnection, job: Job, listeners: set) -> None:
        """Send the job's end now if it has one, else add ``conn`` to those told at the end."""
        if job.finished_state:
            conn.write(job.done_frame)
            job.fetched = True
        else:
            listeners.add(conn)

    def on_hello(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        conn.send({"t": "error", "req": req, "code": E_BAD_REQUEST, "message": "already greeted"})

    def on_ping(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        conn.send({"t": "pong", "req": req, "pid": os.getpid(), "version": __version__})

    def on_source(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        """Keep a module's source for this connection's later submits. No reply: a bad one
        is answered with an error, which ends a client's connection."""
        h = frame.header
        name, path, sha = h["name"], h["path"], h["sha"]
        if not (isinstance(name, str) and isinstance(path, str) and isinstance(sha, str)):
            raise TypeError("name, path and sha must be strings")
        if source_digest(path, frame.payload) != sha:
            raise ValueError(f"module {name}: sha does not match its path and source")
        conn.modules[name] = ModuleCopy(name, sha, source_frame(name, path, sha, frame.payload))

    def on_submit(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        sup = self.sup
        if sup.stopping:
            conn.send({"t": "error", "req": req, "code": E_SHUTTING_DOWN,
                       "message": "the daemon is shutting down; submit again in a moment"})
            return
        h = frame.header
        kind = h["kind"]
        if kind not in JOB_KINDS:
            raise ValueError(f"kind must be call, script or code, not {kind!r}")
        device = h.get("device")
        problem = sup.placement.check_request(device)
        if problem:
            conn.send({"t": "error", "req": req, "code": E_BAD_REQUEST, "message": problem})
            return
        if sup.warmup_error and not any(w.state in LIVE for w in sup.workers.values()):
            conn.send({"t": "error", "req": req, "code": E_NO_WORKERS,
                       "message": sup.no_worker_message()})
            return
        run = {"kind": kind, "argv": list(h.get("argv") or []), "cwd": h.get("cwd"),
               "path": h.get("path"), "name": h.get("name")}
        modules = _modules(conn, h.get("modules") or {})
        if modules:
            run["modules"] = {m.name: m.sha for m in modules}
        job = sup.submit(Job(sup.jobs.new_id(), kind, str(h.get("name") or kind), run, frame.payload,
                             conn.pid, device, modules=modules))
        # The job may already run: the worker got it first. The client learns the id,
        # then the events so far, in one write.
        accepted = encode({"t": "accepted", "req": req, "job": job.id})
        if h.get("attach", True):
            conn.write(b"".join([accepted, *job.events]))
            job.subscribers.add(conn)
        else:
            conn.write(accepted)
        sup.update_status()

    def on_attach(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        job = self._job_or_error(conn, frame, req)
        if job is not None:
            conn.send({"t": "attached", "req": req, "job": job.id, "state": job.state})
            for data in job.events[int(frame.get("since", 0)):]:
                conn.write(data)
            self._deliver_end(conn, job, job.subscribers)

    def on_detach(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        job = self.sup.jobs.get(str(frame.header["job"]))
        if job is not None:
            job.subscribers.discard(conn)
            job.waiters.discard(conn)
        conn.send({"t": "detached", "req": req, "job": frame.header["job"]})

    def on_wait(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        job = self._job_or_error(conn, frame, req)
        if job is not None:
            conn.send({"t": "waiting", "req": req, "job": job.id, "state": job.state})
            self._deliver_end(conn, job, job.waiters)

    def on_logs(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        job = self._job_or_error(conn, frame, req)
        if job is not None:
            # One reply, after the replay: the client knows it has everything when it arrives.
            for data in job.events:
                conn.write(data)
            conn.send({"t": "logs_end", "req": req, "job": job.id, "state": job.state})

    def on_cancel(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        job = self._job_or_error(conn, frame, req)
        if job is None:
            return
        mode = frame.get("mode", "interrupt")
        if mode not in CANCEL_STAGES:
            raise ValueError(f"mode must be one of {', '.join(CANCEL_STAGES)}, not {mode!r}")
        result = self.sup.cancel(job, mode, _grace(frame.get("interrupt_grace")),
                                 _grace(frame.get("terminate_grace")), (conn, req))
        outcome = {"finished": "already_finished", "removed": "removed_from_queue"}.get(result)
        if outcome:  # else the answer comes when the job's processes are gone
            conn.send({"t": "cancelled", "req": req, "job": job.id, "outcome": outcome,
                       "state": job.state})

    def on_status(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        conn.send({"t": "status", "req": req, **self.sup.status()})

    def on_jobs(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        conn.send({"t": "jobs", "req": req, "jobs": [j.summary() for j in self.sup.jobs.jobs.values()]})

    def on_shutdown(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        conn.send({"t": "ok", "req": req})
        self.sup.request_stop(f"shutdown requested by pid {conn.pid}")


def _modules(conn: ClientConnection, named: Any) -> tuple[ModuleCopy, ...]:
    """The sources a submit names (module name -> sha), as this connection sent them."""
    if not isinstance(named, dict):
        raise TypeError("modules must map module names to source digests")
    out = []
    for name, sha in named.items():
        module = conn.modules.get(name)
        if module is None or module.sha != sha:
            raise ValueError(f"module {name}: no source with this sha was sent on this connection "
                             "before the submit")
        out.append(module)
    return tuple(out)


def _grace(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    if value < 0:
        raise ValueError("a grace must be >= 0 seconds")
    return value
