"""Sessions: a warm worker held for one client's series of calls.

A client opens a session; the daemon holds an idle warm worker for it (one on the
device it names, if it names one), makes a socketpair and passes one end to the
worker ("hold") and the other to the client (the reply), both with SCM_RIGHTS.
From then on the calls' bytes go between those two ends alone; the daemon stays in
control. The session is listed as a job (kind "session", running while held) with
its calls below it; the worker tells the daemon each call's start ("began") and
end ("done", without the result), so calls show in ``warmctl jobs``, the journal
and the ledger, and cancel, timeouts and ``attach`` work as for any job.

While held, a worker runs nothing else, and its user modules stay imported between
the session's calls. Held workers do not count against ``workers.count``: the pool
warms one more worker per session, so jobs keep their workers. At most
``workers.max_extra`` sessions hold or wait for workers at once; beyond that a
session is refused at once, with the reason. A session that finds no idle worker
waits for one (ahead of queued jobs).

A session ends when its client closes it (after its last call) or goes away, when
it is cancelled, or when its worker dies. Its worker is then told to "release":
it forgets the session's modules and goes back to the pool, or is recycled when
``workers.session_release`` is "recycle".
"""
from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from .. import callpage
from ..memfd import Descriptor
from ..protocol import encode_parts
from . import fields
from .cancel import cancelled_header
from .groups import Families
from .jobs import EXIT_LOST, LOST, RUNNING, SUCCEEDED, Job, JobTable
from .placement import Placement
from .pool import WorkerProcess, WorkerState
from .workerpool import WorkerPool

log = logging.getLogger("warmd")


@dataclass(eq=False)
class Session:
    job: Job                        # how it is listed: kind "session"
    conn: Any                       # the client connection that opened it
    req: int | None                 # its open request: answered once a worker is held
    device: int | None
    worker: WorkerProcess | None = None
    page: Any = None                # the call page it shares with its worker (see callpage)
    skipping: set[str] = field(default_factory=set)  # calls cancelled before they began
    ending: str | None = None       # why it ends, once it does: "closed", "client", "lost"
    releasing: bool = False         # its worker has been told to let it go


class Host(Protocol):
    replay_limit: int

    def finish_job(self, job: Job, header: dict[str, Any], payload: bytes = b"") -> None: ...
    def job_event(self, job: Job, fields: dict[str, Any], payload: bytes = b"") -> None: ...
    def dispatch(self) -> None: ...
    def update_status(self) -> None: ...


class Sessions:
    def __init__(self, host: Host, jobs: JobTable, pool: WorkerPool, placement: Placement,
                 families: Families, limits: dict[str, Any], started: Callable[[Job, WorkerProcess], None],
                 listed: Callable[[Job], None]) -> None:
        self.host = host
        self.jobs = jobs
        self.pool = pool
        self.placement = placement
        self.families = families
        self.max_sessions = limits["max_extra"]
        self.recycle = limits["session_release"] == "recycle"
        self.started = started   # a call began: the scheduler's bookkeeping for a running job
        self.listed = listed     # a new job to list (the watch stream)
        self.waiting: deque[Session] = deque()
        self.open_sessions: dict[str, Session] = {}  # by the session's job id

    # ---------------------------------------------------------------- opening

    def open(self, conn: Any, req: int | None, name: str, device: int | None) -> str | None:
        """Open a session for ``conn``; None, or why it is refused."""
        live = sum(1 for s in self.open_sessions.values() if s.ending is None)  # not those letting go
        if live >= self.max_sessions:
            return (f"every worker a session may hold is taken: {live} sessions are "
                    f"open (workers.max_extra = {self.max_sessions}); close one, or raise "
                    "workers.max_extra in the daemon's configuration")
        job = Job(self.jobs.new_id(), "session", name, {}, b"", conn.pid, device,
                  replay_limit=self.host.replay_limit)
        job.open = True
        self.jobs.jobs[job.id] = job
        session = Session(job, conn, req, device)
        self.open_sessions[job.id] = session
        self.waiting.append(session)
        self.listed(job)
        self.host.dispatch()  # holds a worker now if one is idle, and plans one more for the pool
        return None

    def wanted(self) -> Counter:
        """A worker for each open session beyond the placement (see ``WorkerPool.want_extra``)."""
        return Counter(s.device if s.worker is None else s.worker.device
                       for s in self.open_sessions.values() if s.ending is None)

    def serve(self) -> None:
        """Hold idle warm workers for waiting sessions, oldest first (before queued jobs)."""
        while self.waiting:
            session = self.waiting[0]
            worker = next((w for w in self.pool.in_state(WorkerState.IDLE)
                           if w.held is None and w.connection is not None
                           and self.placement.accepts(w.device, session.device, [])), None)
            if worker is None:
                return
            self.waiting.popleft()
            self._hold(session, worker)

    def _hold(self, session: Session, worker: WorkerProcess) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        page_fd, session.page = callpage.create()
        job = session.job
        session.worker, worker.session = worker, session
        worker.move(WorkerState.HELD)
        worker.connection.write(encode_parts({"t": "hold", "session": job.id}, b"",
                                             [Descriptor(ours.detach()), Descriptor(page_fd)]))
        job.state, job.started, job.worker_pid, job.device = RUNNING, time.time(), worker.pid, worker.device
        session.conn.write(encode_parts(
            {"t": "session", "req": session.req, "session": job.id, "worker_pid": worker.pid,
             "device": worker.device, "token": worker.token}, b"", [Descriptor(theirs.detach())]))
        self.host.job_event(job, {"kind": "state", "state": RUNNING, "worker_pid": worker.pid,
                                  "device": worker.device})
        log.info("session %s holds worker pid %d", job.id, worker.pid,
                 extra={"JOB_ID": job.id, "WORKER_PID": worker.pid, "CLIENT_PID": session.conn.pid})

    # ---------------------------------------------------------------- calls

    def began(self, worker: WorkerProcess, frame: Any) -> None:
        """A session's call has begun on its worker (said after it had run a while, wrote,
        or ended): list it, below its session."""
        session = worker.session
        job_id = frame.get("job")
        if session is None or not isinstance(job_id, str) or job_id in session.skipping:
            return  # cancelled before it began: the worker skips it
        listed = self.jobs.jobs.get(job_id)
        if listed is not None:
            if listed is not worker.job:  # not one listed when a cancel found it running
                log.warning("session %s sent a call with the id of another job, %s: not listed",
                            session.job.id, job_id, extra={"JOB_ID": job_id})
            return
        h = frame.header
        try:
            name, timeout = fields.text(h, "name") or "call", fields.seconds(h, "timeout")
        except fields.BadRequest:
            name, timeout = "call", None
        started = h.get("started") if isinstance(h.get("started"), float) else None
        job = self._list(session, worker, job_id, name, timeout or 0.0, started)
        if session.ending is not None:  # its client is gone: nobody waits for it
            self.families.cancel(job, "interrupt", None, None)

    def _list(self, session: Session, worker: WorkerProcess, job_id: str, name: str, timeout: float,
              started: float | None) -> Job:
        job = Job(job_id, "call", name, {}, b"", session.conn.pid, worker.device,
                  replay_limit=self.host.replay_limit, timeout=timeout)
        if started is not None:
            job.submitted = started
        if session.job.open:
            self.families.adopt(job, None, session.job)
        self.jobs.jobs[job.id] = job
        self.listed(job)
        worker.job = job
        self.started(job, worker)
        if started is not None:
            job.started = started  # when the worker started it, not when we heard
        return job

    def call_ended(self, worker: WorkerProcess, frame: Any) -> None:
        job_id = frame.get("job")
        session = worker.session
        if session is not None and job_id in session.skipping:
            session.skipping.discard(job_id)
            return
        job = worker.job
        if job is None or job.id != job_id:
            return
        worker.job = None
        worker.jobs_run += 1
        if job.cancel is not None and job.cancel.told:
            worker.connection.send({"t": "resume", "job": job.id})
        header = {k: v for k, v in frame.header.items() if k not in ("t", "job", "direct", "buffers")}
        header.update(token=worker.token, device=worker.device)
        job.fetched = True  # its caller has its end: first to go when the table is full
        self.host.finish_job(job, header)

    def cancel_unlisted(self, conn: Any, session_id: Any, job_id: str) -> str | None:
        """Cancel a call of ``conn``'s session that the daemon has not heard begin: named in
        its worker's cancel pipe, it is skipped. Returns "removed_from_queue", or None when
        the call has begun after all (cancel it as a listed job) or the session is not
        ``conn``'s."""
        session = self.open_sessions.get(session_id) if isinstance(session_id, str) else None
        worker = session.worker if session is not None and session.conn is conn else None
        if worker is None or worker.connection is None:
            return None
        if worker.cancel_fd is not None:
            try:
                os.write(worker.cancel_fd, job_id.encode() + b"\n")
            except OSError:
                return None
        worker.connection.drain()  # what it has said already: that the call began, or ended
        if job_id in self.jobs.jobs:
            return None
        # The worker writes a call's id in the page before it reads the pipe: a call the page
        # does not name now has not been reached, and will be skipped.
        running = callpage.read(session.page) if session.page is not None else None
        if running is not None and running[0] == job_id and worker.job is None:
            self._list(session, worker, job_id, "call", 0.0, running[1])
            return None  # cancelled as the running job it is
        session.skipping.add(job_id)
        job = Job(job_id, "call", "call", {}, b"", conn.pid, worker.device,
                  replay_limit=self.host.replay_limit)
        self.jobs.jobs[job.id] = job
        self.listed(job)
        self.host.finish_job(job, cancelled_header("cancelled before it started"))
        return "removed_from_queue"

    # ---------------------------------------------------------------- ending

    def close(self, conn: Any, session_id: Any) -> bool:
        """The client closes its session (after its last call ended)."""
        session = self.open_sessions.get(session_id) if isinstance(session_id, str) else None
        if session is None or session.conn is not conn:
            return False
        self._end(session, "closed")
        return True

    def list_running(self, session: Session | None = None) -> None:
        """List the calls that sessions' workers (or ``session``'s) run and have not told of
        yet, as a cancel that reaches them needs them listed."""
        for s in [session] if session is not None else list(self.open_sessions.values()):
            worker = s.worker
            if worker is None or worker.connection is None or s.page is None:
                continue
            worker.connection.drain()  # what it has said already
            running = callpage.read(s.page)
            if (running is not None and worker.job is None and running[0] not in self.jobs.jobs
                    and running[0] not in s.skipping):
                self._list(s, worker, running[0], "call", 0.0, running[1])

    def session_of(self, job: Job) -> Session | None:
        return self.open_sessions.get(job.id)

    def client_gone(self, conn: Any) -> None:
        for session in [s for s in self.open_sessions.values() if s.conn is conn]:
            self.list_running(session)
            for call in self.families.unfinished_below(session.job):  # nobody is left to take its result
                self.families.cancel(call, "interrupt", None, None)
            self._end(session, "client")

    def worker_gone(self, worker: WorkerProcess) -> Job | None:
        """Its worker died: the session ends lost. Returns the call it was running that the
        daemon had not heard of yet (listed now, to end as any job whose worker died)."""
        session = worker.session
        if session is None:
            return None
        running = callpage.read(session.page) if session.page is not None else None
        found = None
        if (running is not None and worker.job is None and running[0] not in self.jobs.jobs
                and running[0] not in session.skipping):
            found = self._list(session, worker, running[0], "call", 0.0, running[1])
            worker.job = None
        worker.session = None
        session.worker = None
        self._end(session, "lost")
        return found

    def _end(self, session: Session, why: str) -> None:
        """The session ends. A held worker is told to let it go, which it does after the call
        it runs, and says so after it has told of every call: the session's job then ends
        with all its calls counted (see ``released``)."""
        if session.ending is None:
            session.ending = why
        if session in self.waiting:
            self.waiting.remove(session)
        worker = session.worker
        if worker is not None and worker.connection is not None:
            self._release(session, worker)
        else:
            self._close_job(session)
        self.host.dispatch()

    def _release(self, session: Session, worker: WorkerProcess) -> None:
        if not session.releasing and worker.state == WorkerState.HELD:
            session.releasing = True
            worker.connection.send({"t": "release", "session": session.job.id})

    def _close_job(self, session: Session) -> None:
        """No more calls come: the session's job ends once those listed have."""
        job = session.job
        job.open = False
        if not job.finished_state and not job.children_left:
            self.host.finish_job(job, self.end_header(job))

    def end_header(self, job: Job) -> dict[str, Any]:
        """How a session ends: succeeded when its client closed it, whatever its calls did."""
        session = self.open_sessions.get(job.id)
        why = session.ending if session is not None else None
        if why == "lost":
            return {"state": LOST, "exit_status": EXIT_LOST,
                    "error": {"type": "WorkerDied", "traceback": "",
                              "message": f"the session's worker died ({job.worker_pid})"}}
        if why == "client":
            return {**cancelled_header("its client went away"), "jobs": job.children_count}
        if job.cancel is not None:
            return {**cancelled_header("the session was cancelled"), "jobs": job.children_count}
        return {"state": SUCCEEDED, "exit_status": 0, "error": None, "jobs": job.children_count}

    def ended(self, job: Job) -> None:
        """A session's job has ended (closed, cancelled, or its worker died): once its worker
        has let it go, it is forgotten."""
        session = self.open_sessions.get(job.id)
        if session is None:
            return
        worker = session.worker
        if worker is not None and worker.connection is not None:
            self._release(session, worker)  # cancelled: the worker has not been told yet
        else:
            self._forget(session)
        log.info("session %s ended (%s)", job.id, session.ending or job.state, extra={"JOB_ID": job.id})

    def _forget(self, session: Session) -> None:
        self.open_sessions.pop(session.job.id, None)
        if session in self.waiting:
            self.waiting.remove(session)
        if session.page is not None:
            session.page.close()
            session.page = None

    def released(self, worker: WorkerProcess, frame: Any) -> None:
        """The worker has let its session go, after telling of all its calls: the session's job
        ends (as soon as those calls have), and the worker goes back to the pool or is recycled."""
        session = worker.session
        worker.session = None
        if session is not None:
            session.worker = None
            if frame.get("error") and not session.job.finished_state:  # it never held the session
                session.job.open = False
                self.host.finish_job(session.job, {"state": "failed", "exit_status": 1, "error": {
                    "type": "SessionFailed", "traceback": "",
                    "message": f"worker pid {worker.pid} could not take the session: {frame.get('error')}"}})
            self._close_job(session)
            if session.job.finished_state:
                self._forget(session)
        if worker.state != WorkerState.HELD:
            return
        if self.recycle:
            log.info("recycling worker pid %d: its session ended (workers.session_release = recycle)",
                     worker.pid, extra={"WORKER_PID": worker.pid})
            self.pool.stop(worker)
            self.pool.fill()
        else:
            worker.move(WorkerState.IDLE)
        self.host.dispatch()
