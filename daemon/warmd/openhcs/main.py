"""``warmd-openhcs``: the command that runs the endpoint (see warmd-openhcs(1))."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from dataclasses import replace
from typing import Any

from .. import __version__
from ..daemon.notify import Notifier
from ..errors import AlreadyRunning, UnsafePath, WarmdError
from . import compat

# As warmd(8) exits: the unit's RestartPreventExitStatus= keeps these from restarting.
EXIT_TAKEN = 75      # another server answers on the endpoint
EXIT_CONFIG = 78     # an OpenHCS this was not written for, an unsafe address, a bad option

log = logging.getLogger("warmd.openhcs")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="warmd-openhcs",
        description="Serve OpenHCS's GUI (and its Session and MCP front ends) as its own execution "
                    "server does, with the wells of each run on warmd's warm workers.")
    p.add_argument("--port", type=int, default=None,
                   help="the endpoint's data port (default: OpenHCS's, 7777; control is port+1000)")
    p.add_argument("--transport", choices=("ipc", "tcp"), default="ipc",
                   help="ipc (default): sockets in ~/.openhcs/ipc, which only you can enter; "
                        "tcp: on --host, a loopback address")
    p.add_argument("--host", default="127.0.0.1", help="tcp only: the loopback address to listen on")
    p.add_argument("--socket", default=None,
                   help="warmd's socket (default as warmctl: $WARMD_SOCKET, else $XDG_RUNTIME_DIR/warmd.sock)")
    p.add_argument("--no-autostart", action="store_true",
                   help="do not start a warmd daemon when none answers (under systemd the socket unit does)")
    p.add_argument("--max-runs", type=int, default=4,
                   help="runs that go at once (their wells share warmd's workers; default 4)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="this endpoint's own log level (default info; OpenHCS's own loggers say "
                        "warnings and errors only, everything at debug)")
    p.add_argument("--worker-log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="the level of the lane log files the GUI shows (default info)")
    p.add_argument("--job-log-level", default=None, choices=("debug", "info", "warning", "error"),
                   help="the level of the lanes' records in warmd's streams and the journal "
                        "(default: the daemon's workers.job_log_level)")
    p.add_argument("--no-rehearsal", action="store_true",
                   help="do not run a two-well synthetic plate through the endpoint once it is warm "
                        "(the rehearsal that spares the first real Run OpenHCS's first-use costs)")
    p.add_argument("--replace", action="store_true",
                   help="stop an OpenHCS server that already answers on the endpoint, then serve it")
    p.add_argument("--version", action="version", version=f"warmd-openhcs {__version__}")
    return p


def openhcs_config(args: argparse.Namespace) -> Any:
    """OpenHCS's endpoint configuration as the GUI has it, with this command's overrides.
    The server side never listens beyond loopback."""
    from openhcs.runtime.zmq_config import OPENHCS_ZMQ_CONFIG
    from zmqruntime.config import TransportMode
    config = OPENHCS_ZMQ_CONFIG
    changes: dict[str, Any] = {"transport_mode": TransportMode(args.transport),
                               "server_host": args.host, "client_host": args.host}
    if args.port is not None:
        changes["default_port"] = args.port
    return replace(config, **changes)


def serve(args: argparse.Namespace, notify: Notifier) -> int:
    version = compat.openhcs_version()
    config = openhcs_config(args)
    from .endpoint import Endpoint
    endpoint = Endpoint(config)
    if args.replace:
        endpoint.replace()
    from .link import Link
    link = Link(args.socket, autostart=not args.no_autostart, expected_openhcs=version)
    with endpoint.claimed():
        from .server import WarmdExecutionServer  # OpenHCS's server: seconds of imports
        server = WarmdExecutionServer(config=config, link=link, max_runs=args.max_runs,
                                      lane_log_level=args.worker_log_level.upper(),
                                      job_log_level=args.job_log_level,
                                      rehearse=not args.no_rehearsal)
        server.start()
        endpoint.tighten()
    log.info("serving OpenHCS %s on %s", version, endpoint.describe())
    notify.ready(f"serving OpenHCS {version} on {endpoint.describe()}")
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: server.request_shutdown())
    server.warm_up(lambda line: notify.status(f"{line}; serving {endpoint.describe()}"))
    try:
        server.serve()
    finally:
        notify.stopping("stopping: runs cancelled, warmd's workers kept")
    log.info("stopped")
    return 0


def entry(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.max_runs < 1:
        parser().error("--max-runs must be at least 1")
    # OpenHCS's own loggers say a great deal at INFO (every progress event twice): they
    # speak at WARNING and up, unless this endpoint's level is debug.
    logging.basicConfig(level="DEBUG" if args.log_level == "debug" else "WARNING",
                        format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(args.log_level.upper())
    notify = Notifier()
    try:
        code = serve(args, notify)
    except AlreadyRunning as exc:
        print(f"warmd-openhcs: {exc}", file=sys.stderr)
        code = EXIT_TAKEN
    except (compat.UnsupportedOpenHCS, UnsafePath) as exc:
        print(f"warmd-openhcs: {exc}", file=sys.stderr)
        code = EXIT_CONFIG
    except WarmdError as exc:
        print(f"warmd-openhcs: {exc}", file=sys.stderr)
        code = 1
    sys.exit(code)
