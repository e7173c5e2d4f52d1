"""The requests about sessions (see ``sessions``), answered for ``requests.Requests``, which
takes them as its own: open, close, and cancel of a call the daemon has not heard of."""
from __future__ import annotations

from typing import Any

from ..protocol import E_BAD_REQUEST, E_NO_WORKERS, E_SHUTTING_DOWN, E_UNKNOWN_JOB, Frame
from . import fields
from .connections import ClientConnection
from .jobs import Job
from .pool import LIVE


class SessionRequests:
    sup: Any  # the supervisor (requests.Host)

    def on_session(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        """Hold a worker for this client's calls; answered, with the channel to it, once held."""
        sup = self.sup
        if sup.stopping:
            conn.refuse(req, E_SHUTTING_DOWN, "the daemon is shutting down; open the session again in a moment")
            return
        device = frame.header.get("device")
        if self.refused_placement(conn, req, device):
            return
        problem = sup.sessions.open(conn, req, fields.text(frame.header, "name") or "session", device)
        if problem:
            conn.refuse(req, E_NO_WORKERS, problem)

    def refused_placement(self, conn: ClientConnection, req: Any, device: Any) -> bool:
        """Refuse work (a job or a session) for a device the daemon has not, or while no worker
        is alive because warm-up fails; True when refused."""
        sup = self.sup
        problem = sup.placement.check_request(device)
        if problem:
            conn.refuse(req, E_BAD_REQUEST, problem)
            return True
        if sup.warmup_error and not any(w.state in LIVE for w in sup.workers.values()):
            conn.refuse(req, E_NO_WORKERS, sup.no_worker_message())
            return True
        return False

    def on_session_close(self, conn: ClientConnection, frame: Frame, req: Any) -> None:
        if not self.sup.sessions.close(conn, frame.header.get("session")):
            conn.refuse(req, E_UNKNOWN_JOB, f"no open session {str(frame.header.get('session'))[:64]!r} "
                        "of this connection")
            return
        conn.send({"t": "session_closed", "req": req})

    def cancelled_unlisted(self, conn: ClientConnection, frame: Frame, req: Any) -> bool:
        """A cancel of a session's call the daemon has not heard of: running (listed now, and
        cancelled as any job: False), or skipped when reached (answered here: True)."""
        h = frame.header
        if h.get("session") is None or fields.job_ref(h) in self.sup.jobs.jobs:
            return False
        outcome = self.sup.sessions.cancel_unlisted(conn, h["session"], fields.job_ref(h))
        if outcome is None:
            return False
        conn.send({"t": "cancelled", "req": req, "job": h["job"], "outcome": outcome, "state": "cancelled"})
        return True

    def list_running_call(self, job: Job) -> None:
        """Before a session is cancelled: its running call, if the daemon has not heard of it."""
        session = self.sup.sessions.session_of(job) if job.kind == "session" else None
        if session is not None:
            self.sup.sessions.list_running(session)
