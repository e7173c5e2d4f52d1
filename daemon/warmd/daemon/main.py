"""``warmd``: the daemon's entry point. Builds every object, then runs the loop."""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from .. import memfd, paths, proctree
from .._version import __version__
from ..config import Config, load
from ..errors import AlreadyRunning, ConfigError, WarmdError
from . import listener as listening
from .logs import JobOutputLog, setup as setup_logging
from .outputfiles import JobOutputFiles
from .notify import Notifier
from .placement import Placement
from .supervisor import Supervisor

EXIT_CONFIG = 78      # EX_CONFIG: bad configuration, do not restart in a loop
EXIT_RUNNING = 75     # EX_TEMPFAIL: another daemon already serves the socket


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="warmd", description="Keep Python (GPU) worker processes warm and run jobs on them.",
        epilog="Usually started by systemd (warmd.socket) or automatically by warmctl / "
               "warmd.Client. See warmd(8).")
    p.add_argument("--version", action="version", version=f"warmd {__version__}")
    p.add_argument("--socket", metavar="PATH", help=f"socket to listen on ({paths.SOCKET_HELP})")
    p.add_argument("--config", metavar="PATH", help="TOML config (default: $WARMD_CONFIG, else "
                   "$XDG_CONFIG_HOME/warmd/warmd.toml; a missing default file means defaults)")
    p.add_argument("--workers", type=int, metavar="N", help="jobs that run at once (workers.count)")
    p.add_argument("--spares", type=int, metavar="N", help="extra warm workers kept idle (workers.spares)")
    p.add_argument("--preload", action="append", metavar="MODULE", default=[],
                   help="import MODULE during warm-up (repeatable; added to warmup.import)")
    p.add_argument("--idle-exit", type=float, metavar="SECONDS",
                   help="exit after this long with no clients and no jobs (daemon.idle_exit; 0 = never)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="daemon.log_level")
    p.add_argument("--detach", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    # The read end of a pipe whose writer is the process that started this daemon: its
    # end (EOF, when that process exits however it exits) stops the daemon as SIGTERM does.
    p.add_argument("--lifeline-fd", type=int, help=argparse.SUPPRESS)
    return p


def read_config(args: argparse.Namespace) -> Config:
    overrides: dict[str, object] = {}
    if args.workers is not None:
        overrides["workers.count"] = args.workers
    if args.spares is not None:
        overrides["workers.spares"] = args.spares
    if args.idle_exit is not None:
        overrides["daemon.idle_exit"] = args.idle_exit
    if args.log_level:
        overrides["daemon.log_level"] = args.log_level
    if args.socket:
        overrides["daemon.socket"] = args.socket
    path = Path(args.config) if args.config else paths.config_file()
    required = bool(args.config or os.environ.get("WARMD_CONFIG"))  # named files must exist
    config = load(path, overrides, required=required)
    if args.preload:
        imports = list(config["warmup"]["import"]) + [m for m in args.preload
                                                      if m not in config["warmup"]["import"]]
        config = load(path, {**overrides, "warmup.import": imports}, required=required)
    return config


def build_placement(config: Config) -> Placement:
    from ..gpu import options
    from ..gpu.inventory import plan_devices
    workers = config["workers"]
    devices = plan_devices(workers["devices"])
    gpu_options = {"gpu_memory_limit": workers["gpu_memory_limit"],
                   "gpu_memory_policy": workers["gpu_memory_policy"],
                   "gpu_recycle_bytes": workers["gpu_recycle_bytes"]}
    options.check(gpu_options, devices)  # ConfigError naming the key: exit 78 below, not a crash
    return Placement(workers["count"], workers["spares"], devices, workers["workers_per_device"],
                     gpu_options)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ready = _ReadyPipe(args.ready_fd)
    if args.detach:
        _detach()
        # An autostarted daemon is nobody's service: a client running inside one must not
        # lend it that service's notify socket or watchdog.
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
                     "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    try:
        config = read_config(args)
        log = setup_logging(config["daemon"]["log_level"])
        placement = build_placement(config)  # before binding: a bad setting leaves no socket behind
        files = JobOutputFiles(config["daemon"]["job_output_dir"])
        files.open()
        lst = listening.from_systemd()
        started_by = "systemd" if lst is not None else ("autostart" if args.detach else "manual")
        if lst is None:
            sock_path = Path(config["daemon"]["socket"]) if config["daemon"]["socket"] else paths.default_socket()
            lst = listening.bind(sock_path)
    except WarmdError as exc:
        print(f"warmd: {exc}", file=sys.stderr)
        # A client that started this daemon shows the reason, and a config error as one.
        ready.send(f"{'config-error' if isinstance(exc, ConfigError) else 'error'}: {exc}")
        return EXIT_RUNNING if isinstance(exc, AlreadyRunning) else EXIT_CONFIG
    proctree.become_subreaper()
    memfd.raise_descriptor_limit()  # kept results and queued calls hold their memfds open
    supervisor = Supervisor(config, lst, started_by, placement, Notifier(), JobOutputLog(), files)
    log.debug("config from %s", config.source)
    try:
        return asyncio.run(_serve(supervisor, ready, args.lifeline_fd))
    finally:
        lst.remove()


async def _serve(supervisor: Supervisor, ready: "_ReadyPipe", lifeline: int | None) -> int:
    if lifeline is not None:
        loop = asyncio.get_running_loop()

        def starter_gone() -> None:
            loop.remove_reader(lifeline)
            supervisor.request_stop("the process that started it exited")

        loop.add_reader(lifeline, starter_gone)
    return await supervisor.run(on_listening=lambda: ready.send("ok"))


class _ReadyPipe:
    """Tells an autostarting client that the socket is served (or why it is not)."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def send(self, message: str) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, (message + "\n").encode())
            os.close(self.fd)
        except OSError:
            pass
        self.fd = None


def _detach() -> None:
    """Leave the starting client's session and process tree (the classic double fork)."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)


def entry() -> None:
    sys.exit(main())
