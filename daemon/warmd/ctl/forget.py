"""warmctl restart, rm and clean: a finished job again, and finished jobs forgotten."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from . import cli, exitcodes
from .cli import UsageError
from .render import JOB_STATES


def add_verbs(verb: Callable[..., argparse.ArgumentParser]) -> None:
    sp = verb("restart", "submit a finished script, code or module job again, as it ran; print "
                         "the new job's id", json_flag=True)
    sp.add_argument("job", help="job id, or a unique prefix of one")
    sp = verb("rm", "forget finished jobs (their output and results)")
    sp.add_argument("jobs", nargs="+", metavar="job", help="job id, or a unique prefix of one")
    sp = verb("clean", "forget every finished job, or those in a state or older than an age")
    sp.add_argument("--state", action="append", choices=JOB_STATES[2:], metavar="STATE",
                    help=f"only jobs in this state (repeatable): {', '.join(JOB_STATES[2:])}")
    sp.add_argument("--older-than", metavar="AGE", help="only jobs that ended longer ago (10m, 2h, 1d)")


def cmd_restart(args: argparse.Namespace) -> int:
    with cli.client(args) as client:
        job_id = client.restart(args.job)
    print(json.dumps({"job": job_id}) if args.json else job_id)
    return exitcodes.OK


def cmd_rm(args: argparse.Namespace) -> int:
    with cli.client(args) as client:
        return _forgot(client.forget(args.jobs))


def cmd_clean(args: argparse.Namespace) -> int:
    from .logview import since
    try:
        before = since(args.older_than) if args.older_than else None
    except ValueError as exc:
        raise UsageError(str(exc).replace("--since", "--older-than")) from None
    with cli.client(args) as client:
        ended = [j for j in client.jobs() if j.finished is not None
                 and (not args.state or j.state in args.state)
                 and (before is None or j.finished < before)]
        return _forgot(client.forget([j.id for j in ended])) if ended else exitcodes.OK


def _forgot(outcome: dict[str, Any]) -> int:
    for job_id in outcome["jobs"]:
        print(f"forgot job {job_id}")
    for ref, why in outcome["kept"].items():
        print(f"warmctl: kept job {ref}: {why}", file=sys.stderr)
    return exitcodes.JOB_FAILED if outcome["kept"] else exitcodes.OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "restart": cmd_restart, "rm": cmd_rm, "clean": cmd_clean,
}
