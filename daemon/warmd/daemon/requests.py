"""What clients ask of the daemon: the handshake, then one ``on_<type>`` per message type.

Handlers check a request, act through the supervisor, and answer on the
client's connection. A malformed request is answered with an error and the
connection stays open; see warmd-protocol(7).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Protocol

from .._version import __version__
from ..protocol import (CLIENT_MESSAGES, E_AMBIGUOUS_JOB, E_BAD_REQUEST, E_DESCRIPTORS,
                        E_INTERNAL, E_NO_WORKERS,
                        E_SHUTTING_DOWN, E_UNKNOWN_JOB, E_UNKNOWN_TYPE, E_VERSION, Frame, check_hello, dump_json,
                        encode, source_digest, source_frame)
from . import descriptors, fields, rerun, streams
from .cancel import STAGES
from .groups import Families
from .handoff import Handoff, UnknownNeed
from .connections import ClientConnection
from .fields import BadRequest
from .jobs import AmbiguousJob, Job, JobTable, ModuleCopy
from .placement import Placement
from .sessionrequests import SessionRequests
from .sessions import Sessions
from .pool import WorkerProcess
from .streams import Cursor
from .watch import Watchers

log = logging.getLogger("warmd")


JOB_KINDS = ("call", "script", "code", "module")
_CANDIDATES = 20  # jobs an ambiguous prefix lists


class Host(Protocol):
    """What request handlers read and call on the supervisor."""
    jobs: JobTable
    workers: dict[int, WorkerProcess]
    placement: Placement
    sessions: Sessions
    families: Families
    handoff: Handoff
    watch: Watchers
    stopping: str | None
    warmup_error: str | None
    replay_limit: int
    max_payload: int
    job_timeout: float
    buffer_min: int
    buffer_max: int
    started_by: str
    python: str
    cloudpickle: str
    warm_packages: list[str]

    def submit(self, job: Job) -> Job: ...
    def reject(self, job: Job, header: dict[str, Any]) -> None: ...
    def running_job_of(self, pid: int | None) -> Job | None: ...
    def deadlock(self, parent: Job) -> str | None: ...
    def no_worker_message(self) -> str: ...
    def output_location(self, job: Job) -> str | None: ...
    def status(self) -> dict[str, Any]: ...
    def request_stop(self, reason: str, *, drain: bool = False) -> None: ...
    def update_status(self) -> None: ...


class Requests(SessionRequests):
    def __init__(self, supervisor: Host) -> None:
        self.sup = supervisor

    def handle(self, conn: ClientConnection, frame: Frame) -> None:
        kind = frame.type
        if not conn.greeted:
            self._greet(conn, frame)
            return
        try:
            req = fields.request_id(frame.header)
        except BadRequest as exc:
            conn.send({"t": "error", "code": E_BAD_REQUEST, "message": f"bad {kind[:40]!r} request: {exc}"})
            return
        if kind not in CLIENT_MESSAGES:
            conn.refuse(req, E_UNKNOWN_TYPE, f"unknown message type {kind[:40]!r}")
            return
        if frame.files and kind != "submit":
            conn.refuse(req, E_BAD_REQUEST, f"a {kind} request takes no descriptors, and {len(frame.files)} came "
                        "with it (they were closed): only a submit carries them "
                        "(its buffers and stdin)")
            return
        handler = getattr(self, f"on_{kind}")
        try:
            handler(conn, frame, req)
        except BadRequest as exc:
            conn.refuse(req, E_BAD_REQUEST, f"bad {kind} request: {exc}")
        except Exception:  # a bug here must cost one request, not the connection or the daemon
            log.exception("internal error handling a %s request from client pid %s", kind, conn.pid,
                          extra={"CLIENT_PID": conn.pid})
            conn.refuse(req, E_INTERNAL, f"the daemon failed to handle this {kind} request (a bug in warmd: "
                        "its log has the traceback); the connection stays usable")

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
                   "max_frame": sup.max_payload, "buffer_min": sup.buffer_min,
                   "buffer_max": sup.buffer_max})

    def _job_or_error(self, conn: ClientConnection, frame: Frame, req: Any,
                      key: str = "job") -> Job | None:
        """The job a request names by id or unique prefix; else answer with the error."""
        ref = fields.job_ref(frame.header, key)
        try:
            job = self.sup.jobs.find(ref)
        except AmbiguousJob as exc:
            shown = exc.jobs[:_CANDIDATES]
            listed = ", ".join(f"{j.id} ({j.state}, {j.name[:30]})" for j in shown)
            more = f" and {len(exc.jobs) - len(shown)} more" if len(exc.jobs) > len(shown) else ""
            conn.refuse(req, E_AMBIGUOUS_JOB, f"job id prefix {ref!r} matches {len(exc.jobs)} jobs: {listed}{more}; "
                        "type more of the id", job=ref, candidates=[j.id for j in shown])
            return None
        if job is None:
            conn.refuse(req, E_UNKNOWN_JOB, f"no job {ref!r}: it never existed here or its result expired "
                        "(see 'warmctl jobs')", job=ref)
        return job

    def _sent_end(self, conn: ClientConnection, job: Job) -> bool:
        """Send the job's end now if it has one; False when it has not ended yet."""
        if not job.finished_state:
            return False
        conn.write(job.done_frame)
        job.fetched = True
        return True

    def on_hello(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        conn.refuse(req, E_BAD_REQUEST, "already greeted")

    def on_ping(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        conn.send({"t": "pong", "req": req, "pid": os.getpid(), "version": __version__})

    def on_source(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        """Keep a module's source for this connection's later submits. No reply: a bad one
        is answered with an error, which ends a client's connection."""
        h = frame.header
        name = fields.text(h, "name", required=True)
        path = fields.text(h, "path", required=True, path=True)
        sha = fields.text(h, "sha", required=True)
        if source_digest(path, frame.payload) != sha:
            raise BadRequest(f"module {name}: sha does not match its path and source")
        conn.modules[name] = ModuleCopy(name, sha, source_frame(name, path, sha, frame.payload))

    def on_submit(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        sup = self.sup
        if sup.stopping:
            conn.refuse(req, E_SHUTTING_DOWN, "the daemon is shutting down; submit again in a moment")
            return
        refused = descriptors.refusal(frame.files)
        if refused is not None:  # the frame's descriptors close as it is dropped
            log.warning("refused a submit from client pid %s: %s", conn.pid, refused,
                        extra={"CLIENT_PID": conn.pid})
            conn.refuse(req, E_DESCRIPTORS, refused)
            return
        h = frame.header
        kind = fields.choice(h, "kind", JOB_KINDS, "")
        if not kind:
            raise BadRequest("kind is required (call, script, code or module)")
        # Everything the worker will act on is checked here: a bad value must not reach it.
        buffer_files, stdin = fields.stdin(h, frame.files)
        run = fields.run_fields(h, kind, buffer_files, sup.buffer_max)
        if stdin is not None:
            run["stdin"] = True  # the last of the job's descriptors, on its fd 0
        timeout = fields.seconds(h, "timeout")
        priority = fields.priority(h)
        attach = fields.boolean(h, "attach", True)
        named = fields.mapping(h, "modules")
        device = h.get("device")
        if self.refused_placement(conn, req, device):
            return
        modules = _modules(conn, named)
        if modules:
            run["modules"] = {m.name: m.sha for m in modules}
        group = self._open_group(conn, frame, req)
        if group is False:
            return
        try:
            needs = sup.handoff.resolve(fields.texts(h, "needs"))
        except UnknownNeed as exc:
            conn.refuse(req, E_UNKNOWN_JOB, f"this job takes the result of job {exc}, which this daemon does "
                        "not hold (it never existed here or its result expired)", job=str(exc))
            return
        if needs:
            run["results"] = [n.id for n in needs]
        parent = sup.running_job_of(conn.pid)
        problem = sup.deadlock(parent) if parent is not None else None
        if problem:
            conn.refuse(req, E_NO_WORKERS, problem)
            return
        job = Job(sup.jobs.new_id(), kind, run["name"] or kind, run, frame.payload,
                  conn.pid, device, modules=modules, replay_limit=sup.replay_limit,
                  files=frame.files, priority=priority,
                  timeout=sup.job_timeout if timeout is None else timeout)
        sup.families.adopt(job, parent, group)
        sup.handoff.attach(job, needs)
        unmet = sup.handoff.unmet(needs)
        if unmet is not None:
            sup.reject(job, sup.handoff.failure(unmet))  # ended before it was asked for
        else:
            sup.submit(job)
        # The job may already run: the worker got it first. The client learns the id,
        # then the events so far (the batch sends them in one write).
        conn.write(encode({"t": "accepted", "req": req, "job": job.id}))
        if attach:
            self._follow(conn, job, Cursor())
        sup.update_status()

    def _open_group(self, conn: ClientConnection, frame: Frame, req: Any) -> Job | None | bool:
        """The open group a submit names, None if it names none; False once answered
        with why it cannot join the one it names."""
        if frame.header.get("group") is None:
            return None
        group = self._job_or_error(conn, frame, req, key="group")
        if group is None:
            return False
        if group.kind != "group" or not group.open:
            what = "is not a group" if group.kind != "group" else f"is closed ({group.state})"
            conn.refuse(req, E_BAD_REQUEST, f"job {group.id} {what}: submit into an open group", job=group.id)
            return False
        return group

    def on_group(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        """Open a group: a job that runs nowhere, listing the jobs submitted into it."""
        sup = self.sup
        if sup.stopping:
            conn.refuse(req, E_SHUTTING_DOWN, "the daemon is shutting down; open the group again in a moment")
            return
        name = fields.text(frame.header, "name") or "group"
        attach = fields.boolean(frame.header, "attach", True)
        group = Job(sup.jobs.new_id(), "group", name, {"kind": "group", "name": name}, b"", conn.pid,
                    None, replay_limit=sup.replay_limit)
        sup.families.open_group(group, sup.running_job_of(conn.pid))
        sup.watch.job(group, "submitted")
        conn.groups.add(group)
        conn.send({"t": "group", "req": req, "job": group.id})
        if attach:
            self._follow(conn, group, Cursor())
        sup.update_status()

    def on_group_close(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        group = self._job_or_error(conn, frame, req)
        if group is None:
            return
        if group.kind != "group":
            raise BadRequest(f"job {group.id} is not a group")
        conn.groups.discard(group)
        self.sup.families.close_group(group)
        conn.send({"t": "group_closed", "req": req, "job": group.id, "state": group.state})

    def _follow(self, conn: ClientConnection, job: Job, cursor: Cursor) -> None:
        """Send ``conn`` the job's kept events after ``cursor``, then its end if it has one;
        else stream the rest to it."""
        streams.replay_to(conn, job, cursor, self.sup.output_location(job))
        if not self._sent_end(conn, job):
            job.subscribers[conn] = cursor

    def on_attach(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        job = self._job_or_error(conn, frame, req)
        if job is not None:
            since = fields.integer(frame.header, "since", 0)
            conn.send({"t": "attached", "req": req, "job": job.id, "state": job.state})
            # What the client saw of the output before ``since`` is not known here: a gap
            # then reports the events it missed, not their bytes.
            self._follow(conn, job, Cursor(since, 0 if since == 0 else None))

    def on_detach(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        ref = fields.job_ref(frame.header)
        try:
            job = self.sup.jobs.find(ref)
        except AmbiguousJob:
            job = None  # this connection follows neither by that prefix: nothing to detach
        if job is not None:
            job.subscribers.pop(conn, None)
            job.waiters.discard(conn)
            conn.lagging.discard(job)
        conn.send({"t": "detached", "req": req, "job": job.id if job is not None else ref})

    def on_wait(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        job = self._job_or_error(conn, frame, req)
        if job is not None:
            conn.send({"t": "waiting", "req": req, "job": job.id, "state": job.state})
            if not self._sent_end(conn, job):
                job.waiters.add(conn)

    def on_logs(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        job = self._job_or_error(conn, frame, req)
        if job is not None:
            # One reply, after the replay: the client knows it has everything when it arrives.
            streams.replay_to(conn, job, Cursor(), self.sup.output_location(job))
            conn.send({"t": "logs_end", "req": req, "job": job.id, "state": job.state})

    def on_restart(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        job = self._job_or_error(conn, frame, req)
        if job is None:
            return
        made = rerun.again(job, self.sup.jobs.new_id(), conn.pid, self.sup.replay_limit)
        if isinstance(made, str):
            conn.refuse(req, E_BAD_REQUEST, made)
            return
        self.sup.submit(made)
        conn.write(encode({"t": "accepted", "req": req, "job": made.id}))
        self.sup.update_status()

    def on_forget(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        gone, kept = [], {}
        for ref in fields.texts(frame.header, "jobs"):
            try:
                job = self.sup.jobs.find(ref)
            except AmbiguousJob as exc:
                kept[ref] = f"the prefix matches {len(exc.jobs)} jobs"
                continue
            reason = "no such job" if job is None else rerun.kept_because(job)
            if reason:
                kept[ref] = reason
            else:
                self.sup.jobs.forget(job)
                gone.append(job.id)
        conn.send({"t": "forgotten", "req": req, "jobs": gone, "kept": kept})
        self.sup.update_status()

    def on_cancel(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        h = frame.header
        if self.cancelled_unlisted(conn, frame, req):
            return
        job = self._job_or_error(conn, frame, req)
        if job is None:
            return
        self.list_running_call(job)
        mode = fields.choice(h, "mode", STAGES, "interrupt")
        result = self.sup.families.cancel(job, mode, fields.seconds(h, "interrupt_grace"),
                                          fields.seconds(h, "terminate_grace"), (conn, req))
        outcome = {"finished": "already_finished", "removed": "removed_from_queue"}.get(result)
        if outcome:  # else the answer comes when the job's processes are gone
            conn.send({"t": "cancelled", "req": req, "job": job.id, "outcome": outcome,
                       "state": job.state})

    def on_resolve(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        job = self._job_or_error(conn, frame, req)
        if job is not None:
            conn.send({"t": "resolved", "req": req, "job": job.id, "state": job.state})

    def on_status(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        conn.send({"t": "status", "req": req, **self.sup.status()})

    def on_jobs(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        # In the payload: a thousand rows are more than a header may hold.
        rows = [j.summary() for j in self.sup.jobs.jobs.values()]
        conn.send({"t": "jobs", "req": req, "count": len(rows)}, dump_json(rows))

    def on_watch(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        self.sup.watch.add(conn, req)  # the snapshot answers it

    def on_unwatch(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        conn.send({"t": "ok", "req": req, "watching": self.sup.watch.remove(conn)})

    def on_shutdown(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        conn.send({"t": "ok", "req": req})
        self.sup.request_stop(f"shutdown requested by pid {conn.pid}")


def _modules(conn: ClientConnection, named: dict[str, str]) -> tuple[ModuleCopy, ...]:
    """The sources a submit names (module name -> sha), as this connection sent them."""
    out = []
    for name, sha in named.items():
        module = conn.modules.get(name)
        if module is None or module.sha != sha:
            raise BadRequest(f"module {name}: no source with this sha was sent on this connection "
                             "before the submit")
        out.append(module)
    return tuple(out)

