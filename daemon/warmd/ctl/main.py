"""``warmctl``: talk to the warmd daemon from a shell. One ``cmd_<verb>`` per verb."""
from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import threading
from typing import Any, Callable

from .._version import __version__
from ..paths import SOCKET_HELP
from ..errors import (AmbiguousJob, ConfigError, DaemonUnavailable, JobLost, ProtocolError,
                      RequestFailed, UnknownJob, UnsafePath, VersionMismatch, WarmdError)
from . import cli, exitcodes, render
from .cli import UsageError, count, seconds
from .joboptions import add_job_options, add_stdin_option, job_options
from .render import JOB_STATES

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="warmctl", description="Run jobs on warm workers of the warmd daemon, and manage it.",
        epilog="A daemon is started automatically when none answers (see --no-autostart). "
               "See warmctl(1).")
    p.add_argument("--version", action="version", version=f"warmctl {__version__}")
    p.add_argument("--socket", metavar="PATH", help=f"daemon socket ({SOCKET_HELP})")
    p.add_argument("--no-autostart", action="store_true",
                   help="fail instead of starting a daemon when none answers")
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, help: str, *, json_flag: bool = False) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        if json_flag:
            sp.add_argument("--json", action="store_true", help="print machine-readable JSON")
        return sp

    verb("ping", "check that the daemon answers", json_flag=True)
    verb("status", "show the daemon, its workers and job counts", json_flag=True)
    verb("top", "a live view of workers and jobs (needs warmd[tui])")
    sp = verb("jobs", "list the jobs the daemon holds, each under its parent or group", json_flag=True)
    sp.add_argument("--state", action="append", choices=JOB_STATES, metavar="STATE",
                    help=f"only jobs in this state (repeatable): {', '.join(JOB_STATES)}")
    sp.add_argument("--name", metavar="PATTERN", help="only jobs whose name matches this shell pattern")
    sp.add_argument("--limit", type=count, metavar="N", help="only the newest N")

    sp = verb("exec", "run a code string on a warm worker and stream its output", json_flag=True)
    sp.add_argument("-c", dest="code", metavar="CODE", required=True, help="Python code to run")
    add_job_options(sp)
    add_stdin_option(sp)
    sp.add_argument("args", nargs=argparse.REMAINDER, help="sys.argv[1:] for the code")

    sp = verb("run", "run a Python script on a warm worker and stream its output", json_flag=True)
    sp.add_argument("-m", dest="module", metavar="MODULE", help="run a module, as python -m MODULE")
    add_job_options(sp)
    add_stdin_option(sp)
    sp.add_argument("script", nargs="?",
                    help="the script, directory or zip to run (as python SCRIPT ARGS...)")
    sp.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")

    sp = verb("submit", "queue a script or code string and print only its job id", json_flag=True)
    sp.add_argument("-c", dest="code", metavar="CODE", help="Python code to run")
    sp.add_argument("-m", dest="module", metavar="MODULE", help="run a module, as python -m MODULE")
    add_job_options(sp)
    sp.add_argument("script", nargs="?", help="the script to run (when neither -c nor -m is given)")
    sp.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script or code")

    sp = verb("attach", "stream a job's output from its start, live, and exit with its status "
                        "(Ctrl-C stops following; the job goes on)")
    sp.add_argument("job", help="job id, or a unique prefix of one")
    sp = verb("wait", "wait for a job to end and exit with its status", json_flag=True)
    sp.add_argument("job", help="job id, or a unique prefix of one")
    sp = verb("logs", "print the output a job has produced so far (with -f, then follow it)",
              json_flag=True)
    sp.add_argument("job", help="job id, or a unique prefix of one")
    sp.add_argument("-f", "--follow", action="store_true",
                    help="then follow it live until it ends; Ctrl-C stops following, the job goes on")
    sp.add_argument("--tail", type=count, metavar="N", help="only the last N lines so far")
    sp.add_argument("--since", metavar="WHEN",
                    help="only what came since WHEN: a duration ago (90s, 10m, 2h, 1d) or a time")
    sp.add_argument("--timestamps", action="store_true",
                    help="start each line with the time it reached the daemon")

    sp = verb("cancel", "cancel a job and every job below it (interrupt, then terminate, then kill)")
    sp.add_argument("job", help="job id, or a unique prefix of one")
    sp.add_argument("--force", action="store_true", help="kill at once (SIGKILL to the job's processes)")
    sp.add_argument("--terminate", action="store_true", help="skip the interrupt (SIGTERM, then SIGKILL)")
    sp.add_argument("--interrupt-grace", type=seconds, metavar="SECONDS", help="override cancel.interrupt_grace")
    sp.add_argument("--terminate-grace", type=seconds, metavar="SECONDS", help="override cancel.terminate_grace")

    verb("shutdown", "stop the daemon (running jobs are cancelled)")
    _extra_verbs(verb)
    return p


def _extra_verbs(verb: Callable[..., argparse.ArgumentParser]) -> None:
    from . import forget, units
    forget.add_verbs(verb)
    units.add_verbs(verb)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = COMMANDS.get(args.verb) or _unit_command(args.verb)
    try:
        return handler(args)
    except UnknownJob as exc:
        return _fail(exitcodes.NO_SUCH_JOB, exc)
    except AmbiguousJob as exc:
        return _fail(exitcodes.USAGE, exc)
    except JobLost as exc:
        return _fail(exitcodes.JOB_LOST, exc)
    except VersionMismatch as exc:
        return _fail(exitcodes.PROTOCOL, exc)
    except ConfigError as exc:
        return _fail(exitcodes.CONFIG, exc)
    except ProtocolError as exc:
        return _fail(exitcodes.PROTOCOL, exc)
    except (DaemonUnavailable, UnsafePath) as exc:
        return _fail(exitcodes.UNAVAILABLE, exc)
    except (RequestFailed, WarmdError) as exc:
        return _fail(exitcodes.SOFTWARE, exc)
    except (FileNotFoundError, UsageError) as exc:
        return _fail(exitcodes.USAGE, exc)
    except BrokenPipeError:
        return exitcodes.OK


def _unit_command(verb: str) -> Callable[[argparse.Namespace], int]:
    from . import forget, units
    return {**forget.COMMANDS, **units.COMMANDS}[verb]


def _fail(code: int, exc: BaseException) -> int:
    print(f"warmctl: {exc}", file=sys.stderr)
    return code


def _dump(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def cmd_ping(args: argparse.Namespace) -> int:
    import time
    client = cli.client(args)
    start = time.perf_counter()
    pong = client.ping()
    elapsed = time.perf_counter() - start
    info = {"pid": pong["pid"], "version": pong["version"], "seconds": round(elapsed, 6),
            "started_by": client.daemon_info.get("started_by")}
    client.close()
    if args.json:
        _dump(info)
    else:
        print(f"pong from warmd {info['version']} (pid {info['pid']}, started by {info['started_by']}) "
              f"in {render.duration(elapsed)}")
    return exitcodes.OK


def cmd_status(args: argparse.Namespace) -> int:
    with cli.client(args) as client:
        status = client.status().to_json()  # rendered as the daemon sent it
    _dump(status) if args.json else print(render.status_text(status))
    return exitcodes.OK


def cmd_jobs(args: argparse.Namespace) -> int:
    with cli.client(args) as client:
        jobs = render.select_jobs([j.to_json() for j in client.jobs()], args.state, args.name, args.limit)
    _dump(jobs) if args.json else print(render.jobs_text(jobs))
    return exitcodes.OK


def cmd_exec(args: argparse.Namespace) -> int:
    from ..client import jobspec
    request = jobspec.code(args.code, _argv(args.args)).with_options(job_options(args))
    with cli.client(args) as client:
        return follow(client, client.submit_job(request, device=args.device), args.json)


def _script_or_module(args: argparse.Namespace):
    """The job ``run`` and ``submit`` name: -m MODULE, else the SCRIPT (its arguments after)."""
    from ..client import jobspec
    if args.module is not None:
        rest = ([args.script] if args.script else []) + _argv(args.args)
        try:
            return jobspec.module(args.module, rest)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.script is None:
        raise UsageError(f"{args.verb} needs a SCRIPT, or -m MODULE" +
                         (", or -c CODE" if args.verb == "submit" else ""))
    return jobspec.script(args.script, _argv(args.args))


def cmd_run(args: argparse.Namespace) -> int:
    request = _script_or_module(args).with_options(job_options(args))
    with cli.client(args) as client:
        return follow(client, client.submit_job(request, device=args.device), args.json)


def cmd_submit(args: argparse.Namespace) -> int:
    from ..client import jobspec
    if args.code is not None:
        extra = ([args.script] if args.script else []) + _argv(args.args)
        request = jobspec.code(args.code, extra)
    else:
        request = _script_or_module(args)
    request.with_options(job_options(args))
    with cli.client(args) as client:
        future = client.submit_job(request, device=args.device, attach=False)
        print(json.dumps({"job": future.job_id}) if args.json else future.job_id)
    return exitcodes.OK


def cmd_attach(args: argparse.Namespace) -> int:
    from .logview import View, follow_detachable
    client = cli.client(args)
    try:
        return follow_detachable(client, args.job, View(), exit_with_job=True)
    finally:
        client.close()  # not the context manager's exit: it would wait for the job


def cmd_wait(args: argparse.Namespace) -> int:
    with cli.client(args) as client:
        end = client.wait(args.job)
    if args.json:
        _dump(_end_json(end))
    elif end.state != "succeeded":
        render.JobPrinter().finish(end)  # say what happened: the status alone does not
    return exit_status(end)


def cmd_logs(args: argparse.Namespace) -> int:
    from . import logview
    try:
        view = logview.View(args.tail, logview.since(args.since) if args.since else None, args.timestamps)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    client = cli.client(args)
    try:
        if args.follow:
            return logview.follow_detachable(client, args.job, view, exit_with_job=False)
        if args.json:
            _dump([_event_json(e) for e in logview.cut(client.logs(args.job), view)])
            return exitcodes.OK
        return logview.show_logs(client, args.job, view)
    finally:
        client.close()  # a followed job goes on without us


def cmd_cancel(args: argparse.Namespace) -> int:
    mode = "kill" if args.force else "terminate" if args.terminate else "interrupt"
    with cli.client(args) as client:
        job_id = client.resolve(args.job)  # say which job, when a prefix named it
        outcome = client.cancel(job_id, mode, interrupt_grace=args.interrupt_grace,
                                terminate_grace=args.terminate_grace)
    messages = {"cancelled": "cancelled", "removed_from_queue": "cancelled (removed from the queue)",
                "already_finished": "already finished: nothing to cancel",
                "finished": "finished before the cancel took effect"}
    print(f"job {job_id}: {messages.get(outcome, outcome)}")
    return exitcodes.OK


def cmd_top(args: argparse.Namespace) -> int:
    from .topcmd import cmd_top as top  # Textual only for this verb
    return top(args)


def cmd_shutdown(args: argparse.Namespace) -> int:
    from ..client.sync import Client
    try:
        client = Client(args.socket, autostart=False, name="warmctl")
    except DaemonUnavailable:
        print("warmctl: no daemon is running", file=sys.stderr)
        return exitcodes.OK
    with client:
        client.shutdown_daemon()
    print("warmd is stopping")
    return exitcodes.OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "ping": cmd_ping, "status": cmd_status, "jobs": cmd_jobs, "exec": cmd_exec, "run": cmd_run,
    "submit": cmd_submit, "attach": cmd_attach, "wait": cmd_wait, "logs": cmd_logs,
    "cancel": cmd_cancel, "shutdown": cmd_shutdown, "top": cmd_top,
}


def _argv(rest: list[str]) -> list[str]:
    return rest[1:] if rest[:1] == ["--"] else list(rest)


def _event_json(event: Any) -> dict[str, Any]:
    from dataclasses import asdict
    data = asdict(event)
    if isinstance(data.get("data"), bytes):
        data["data"] = data["data"].decode(errors="replace")
    data["type"] = type(event).__name__.lower()
    return data


def _end_json(end: Any) -> dict[str, Any]:
    return {"job": end.job, "state": end.state, "exit_status": end.exit_status, "error": end.error,
            **end.info}


def follow(client: Any, future: Any, json_end: bool = False) -> int:
    """Stream a job to the terminal. Ctrl-C once interrupts the job, twice kills it;
    warmctl itself keeps running until the job has ended, then exits with its status."""
    future.job_id  # raises now if the daemon refused the job (bad device, shutting down...)
    printer = render.JobPrinter()
    requests: queue.SimpleQueue = queue.SimpleQueue()
    presses = [0]

    def on_sigint(signum: int, frame: Any) -> None:
        # Only note the press: SimpleQueue.put is safe here, and no exception unwinds us.
        presses[0] += 1
        mode = "interrupt" if presses[0] == 1 else "kill"
        hint = " (Ctrl-C again to kill it)" if presses[0] == 1 else ""
        os.write(2, f"\nwarmctl: cancelling job {future.job_id}: {mode}{hint}\n".encode())
        requests.put(mode)

    def canceller() -> None:
        while (mode := requests.get()) is not None:
            try:
                client.cancel(future.job_id, mode)
            except WarmdError:
                pass

    thread = threading.Thread(target=canceller, name="warmctl-cancel", daemon=True)
    thread.start()
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        for event in future.events():
            printer.show(event)
    finally:
        signal.signal(signal.SIGINT, previous)
        requests.put(None)
    end = future.finished
    if end is None:  # the connection ended first: JobLost when the daemon went away
        future.result()
    printer.finish(end)
    if json_end:  # the end record, as the last line of standard output
        sys.stdout.flush()
        print(json.dumps(_end_json(end), sort_keys=True), flush=True)
    return exit_status(end)


exit_status = exitcodes.of_job


def entry() -> None:
    sys.exit(main())
