"""Families of jobs: a job's children, groups, and what happens to them as one.

A job submitted from inside a running job is that job's child; a client can open
a group and submit jobs into it (``Client.map`` does). Each job is listed under
its owner (its group, else its parent), which makes a tree:

- Cancelling a node cancels every job below it with the usual escalation; the
  cancel is answered once all of them have ended.
- No job outlives its run: a node that ends with jobs still queued or running
  below it gets them cancelled.
- A group ends when it is closed (or cancelled) and its jobs have ended:
  succeeded if they all did, failed if any did not, cancelled if it was. A
  session (see ``sessions``) is a group whose jobs are its calls; how it ends is
  the session's to say.
- Progress rolls up: each ancestor hears a ``child`` event when a job below it
  reports progress or ends, with done/total over its descendants (one event
  per job at the least: a fan-out of small jobs stays cheap).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Protocol

from .. import progressreport
from .cancel import Canceller, Cancellation, cancelled_header
from .jobs import FAILED, RUNNING, SUCCEEDED, Job, JobTable

log = logging.getLogger("warmd")

JobEvent = Callable[[Job, dict[str, Any], bytes], None]


GROUPS = ("group", "session")  # kinds that run nowhere themselves, and list jobs below them


class Host(Protocol):
    def finish_job(self, job: Job, header: dict[str, Any], payload: bytes = b"") -> None: ...


class Families:
    def __init__(self, host: Host, jobs: JobTable, cancels: Canceller, job_event: JobEvent,
                 session_end: Callable[[Job], dict[str, Any]] = lambda job: {}) -> None:
        self.host = host
        self.session_end = session_end  # how a session ends is the session's to say (sessions.py)
        self.jobs = jobs
        self.cancels = cancels
        self.job_event = job_event
        self._cancels: list[tuple[Job, Any, Any]] = []  # (root, connection, req) answered when all ended

    # ---------------------------------------------------------------- building the tree

    def adopt(self, job: Job, parent: Job | None, group: Job | None) -> None:
        """Link a new job (or group) under its owner, before it is queued."""
        job.parent, job.group = parent, group
        owner = job.owner
        if owner is None:
            return
        owner.children[job] = None
        owner.children_left += 1
        owner.children_count += 1
        if job.kind != "group":
            for node in job.ancestors():
                node.descendants += 1

    def open_group(self, job: Job, parent: Job | None) -> None:
        """``job`` (kind "group") is a new, open group; it runs on no worker."""
        job.state = RUNNING
        job.started = job.submitted
        job.open = True
        self.jobs.jobs[job.id] = job
        self.adopt(job, parent, None)

    def close_group(self, group: Job) -> None:
        """The group takes no more jobs: it ends once those it has have ended."""
        group.open = False
        self._maybe_end_group(group)

    # ---------------------------------------------------------------- progress

    def progress(self, job: Job, report: dict[str, Any], detail: bytes = b"") -> dict[str, Any]:
        """A job's own report: an event for its followers and a child event for its
        ancestors', each with the report's ``detail`` (JSON beside the header, which
        nothing here keeps). Returns the report as kept (fields checked and cut)."""
        fields, cut = progressreport.fields(report.get("fields"))
        kept = {"done": progressreport.number(report.get("done"), 0),
                "total": progressreport.number(report.get("total"), None),
                "message": progressreport.message(report.get("message"), cut)}
        if fields:
            kept["fields"] = fields
        job.progress = kept
        mark = {"detail": True} if detail else {}
        self.job_event(job, {"kind": "progress", **kept, **mark}, detail)
        self._tell_ancestors(job, detail)
        return kept

    def _tell_ancestors(self, job: Job, detail: bytes = b"") -> None:
        if job.owner is None:
            return
        event = {"kind": "child", "child": job.id, "name": job.name, "state": job.state,
                 **(job.progress or {}), **({"detail": True} if detail else {})}
        for node in job.ancestors():
            self.job_event(node, {**event, "children_done": node.descendants_done,
                                  "children_total": node.descendants}, detail)

    # ---------------------------------------------------------------- ends

    def ended(self, job: Job) -> None:
        """``job`` has ended (after its end went out): count it up the tree, cancel what
        it leaves below it, end a group it completes, answer cancels it completes."""
        owner = job.owner
        if owner is not None:
            owner.children_left -= 1
            if job.state != SUCCEEDED:
                owner.children_failed += 1
                owner.first_failed = owner.first_failed or f"{job.id} ({job.name}), ended {job.state}"
        if job.kind != "group":
            for node in job.ancestors():
                node.descendants_done += 1
            self._tell_ancestors(job)
        below = self.unfinished_below(job) if job.children_left else []
        if below:
            log.info("job %s ended %s with %d job(s) below it still queued or running: cancelling them",
                     job.id, job.state, len(below), extra={"JOB_ID": job.id})
            self._cancel_all(below, "interrupt")
        if job.group is not None:
            self._maybe_end_group(job.group)
        self._answer_cancels()

    def unfinished_below(self, job: Job) -> list[Job]:
        out, stack = [], list(job.children)
        while stack:
            node = stack.pop()
            if not node.finished_state:
                out.append(node)
            stack.extend(node.children)
        return out

    def _maybe_end_group(self, group: Job) -> None:
        if group.open or group.finished_state or group.children_left:
            return
        if group.kind == "session":
            header = self.session_end(group)
        elif group.cancel is not None:
            header = cancelled_header("the group was cancelled")
        elif group.children_failed:
            header = {"state": FAILED, "exit_status": 1,
                      "error": {"type": "GroupFailed", "traceback": "",
                                "message": f"{group.children_failed} of {group.children_count} jobs in "
                                           f"the group did not succeed; the first, {group.first_failed}"}}
        else:
            header = {"state": SUCCEEDED, "exit_status": 0, "error": None}
        self.host.finish_job(group, {**header, "jobs": group.children_count})

    # ---------------------------------------------------------------- cancel

    def cancel(self, job: Job, stage: str, interrupt_grace: float | None, terminate_grace: float | None,
               requester: tuple[Any, Any] | None = None) -> str:
        """Cancel ``job`` and every job below it. Returns "pending" (the requester is answered
        when all have ended), "removed" or "finished", as ``Canceller.cancel`` does."""
        below = self.unfinished_below(job)
        if not below and job.kind not in GROUPS:
            return self.cancels.cancel(job, stage, interrupt_grace, terminate_grace, requester)
        if job.finished_state and not below:
            return "finished"
        self._cancel_all([job, *below], stage, interrupt_grace, terminate_grace)
        if self._tree_done(job):
            return "removed" if job.state != SUCCEEDED else "finished"
        if requester is not None:
            self._cancels.append((job, *requester))
        return "pending"

    def _cancel_all(self, nodes: list[Job], stage: str, interrupt_grace: float | None = None,
                    terminate_grace: float | None = None) -> None:
        # Groups first (closed and marked, so they end cancelled), queued jobs next (no new
        # one starts while the running ones are being stopped), running ones last.
        groups = [n for n in nodes if n.kind in GROUPS and not n.finished_state]
        for group in groups:
            group.open = False
            if group.cancel is None:
                group.cancel = Cancellation()
        jobs = [n for n in nodes if n.kind not in GROUPS]
        for job in sorted(jobs, key=lambda j: j.state == RUNNING):
            if not job.finished_state:
                self.cancels.cancel(job, stage, interrupt_grace, terminate_grace)
        for group in groups:
            self._maybe_end_group(group)

    def _tree_done(self, job: Job) -> bool:
        return job.finished_state and not self.unfinished_below(job)

    def _answer_cancels(self) -> None:
        if not self._cancels:
            return
        still = []
        for root, conn, req in self._cancels:
            if self._tree_done(root):
                conn.send({"t": "cancelled", "req": req, "job": root.id,
                           "outcome": "cancelled" if root.state != SUCCEEDED else "finished",
                           "state": root.state})
            else:
                still.append((root, conn, req))
        self._cancels = still

    def forget(self, conn: Any) -> None:
        """``conn`` went away: nobody to answer there."""
        self._cancels = [c for c in self._cancels if c[1] is not conn]
