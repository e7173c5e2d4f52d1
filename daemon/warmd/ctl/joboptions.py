"""The options of a job a shell starts (exec, run, submit): its environment, name,
timeout, priority, log level and stdin, from the command line to ``JobOptions``."""
from __future__ import annotations

import argparse
import os

from .. import jobstdin
from ..protocol import LOG_LEVELS
from .cli import UsageError, seconds


def add_job_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--device", type=int, metavar="N", help="run on a worker pinned to GPU N")
    sp.add_argument("--name", metavar="NAME", help="the job's name in jobs, status and the journal")
    sp.add_argument("--timeout", type=seconds, metavar="SECONDS",
                    help="cancel the job if it runs longer (exit status 124); 0: no limit")
    sp.add_argument("--priority", type=int, default=0, metavar="N",
                    help="higher starts first among queued jobs (default 0)")
    sp.add_argument("--log-level", choices=LOG_LEVELS,
                    help="the job's root logger level (default: workers.job_log_level)")
    sp.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="set a variable for the job (repeatable)")
    sp.add_argument("--no-env", action="store_true",
                    help="run with the daemon's environment, not this shell's")


def add_stdin_option(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--no-stdin", action="store_true",
                    help="the job reads /dev/null, not this shell's stdin (which it reads when "
                         "that is not a terminal)")


def caller_stdin(args: argparse.Namespace) -> int | None:
    """fd 0, to be the job's stdin: unless --no-stdin, it is closed, or it is a terminal
    (a foreground job would fight the shell for it, and Ctrl-C there cancels the job)."""
    if getattr(args, "no_stdin", True):
        return None
    try:
        os.fstat(0)
    except OSError:
        return None
    if os.isatty(0):
        return None
    try:
        jobstdin.check(0)
    except jobstdin.BadStdin as exc:
        raise UsageError(f"{exc}: give the job a stdin it can read, or run with --no-stdin") from None
    return 0


_MAX_ENV = 48 * 1024  # of the 64 KiB a frame header may take


def job_options(args: argparse.Namespace):
    """The job options the command line gives: this shell's environment unless --no-env."""
    from ..client.jobspec import JobOptions
    extra = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--env {item!r}: expected KEY=VALUE")
        extra[key] = value
    env = None if args.no_env else {**os.environ, **extra}
    size = sum(len(k) + len(v) for k, v in (env or {}).items())
    if size > _MAX_ENV:
        raise UsageError(f"this shell's environment is {size} bytes, more than a job's frame header "
                         "holds: use --no-env, with --env KEY=VALUE for what the job needs")
    return JobOptions(name=args.name, timeout=args.timeout, priority=args.priority,
                      log_level=args.log_level, env=env, env_update=extra if args.no_env else None,
                      stdin=caller_stdin(args))
