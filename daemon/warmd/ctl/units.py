"""warmctl install-units / uninstall-units: the systemd user units for this environment.

The unit text has one source, ``systemd/`` in the source tree, shipped inside
the package as ``warmd/unitfiles`` (a link to it in the tree, plain files in a
wheel). ``install-units`` copies it into the user unit directory with
``ExecStart=`` naming the ``warmd`` of the Python environment warmctl runs
from, so a virtual environment gets a service that runs its own daemon.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Callable

from ..errors import WarmdError
from . import exitcodes

SOCKET_UNIT = "warmd.socket"
SERVICE_UNIT = "warmd.service"
OPENHCS_UNIT = "warmd-openhcs.service"
UNIT_NAMES = (SOCKET_UNIT, SERVICE_UNIT)
ALL_UNITS = (*UNIT_NAMES, OPENHCS_UNIT)
# The program each service runs: its console script, else ``python -m`` its module.
PROGRAMS = {SERVICE_UNIT: ("warmd", "warmd"), OPENHCS_UNIT: ("warmd-openhcs", "warmd.openhcs")}
# First line of every unit install-units writes; uninstall-units removes only such files.
MARKER = "# Written by warmctl install-units"

# What makes systemd load the units and listen on the socket, in order.
NEXT_STEPS: tuple[tuple[str, ...], ...] = (
    ("daemon-reload",),
    ("enable", "--now", SOCKET_UNIT),
    ("status", SOCKET_UNIT),
)


class UnitsError(WarmdError):
    """The units could not be written, removed, or handed to systemd."""


# ---------------------------------------------------------------- unit text

def template(name: str) -> str:
    """The packaged unit file ``name`` (warmd.socket or warmd.service), as shipped."""
    try:
        return (resources.files("warmd") / "unitfiles" / name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UnitsError(f"the unit file {name} is missing from the installed warmd package "
                         "(warmd/unitfiles); reinstall warmd") from None


def warmd_command(python: str | None = None, unit: str = SERVICE_UNIT) -> list[str]:
    """The command that runs ``unit``'s program (the daemon, or warmd-openhcs) of the
    environment ``python`` (default: this one).

    Its console script beside the interpreter when there is one, else ``python -m``
    its module. The interpreter path is made absolute but not resolved: a virtual
    environment's python is a link to the base interpreter, and resolving it would
    leave the environment.
    """
    name, module = PROGRAMS[unit]
    exe = Path(os.path.abspath(python or sys.executable))
    script = exe.parent / name
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [str(exe), "-m", module]


def exec_line(argv: list[str]) -> str:
    """``argv`` as the value of an ``ExecStart=`` setting (systemd.service(5) quoting)."""
    words = []
    for arg in argv:
        # % starts a specifier and $ a variable in ExecStart=; both are doubled to stay literal.
        word = (arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$"))
        if not word or any(c.isspace() for c in word) or word != arg:
            word = f'"{word}"'
        words.append(word)
    return " ".join(words)


def render(name: str, python: str | None = None) -> str:
    """The text install-units writes for unit ``name``: the template, marked, with its
    ExecStart= program replaced by this environment's (its arguments kept)."""
    text = template(name)
    lines = text.splitlines()
    if name in PROGRAMS:
        starts = [i for i, line in enumerate(lines) if line.startswith("ExecStart=")]
        if len(starts) != 1:
            raise UnitsError(f"the packaged {name} has {len(starts)} ExecStart= lines, expected one; "
                             "reinstall warmd")
        _, _, arguments = lines[starts[0]].partition("=")[2].partition(" ")
        lines[starts[0]] = " ".join(filter(None, ("ExecStart=" + exec_line(warmd_command(python, name)),
                                                   arguments)))
    origin = os.path.abspath(python or sys.executable)
    header = [f"{MARKER} for {origin}.", "# Remove with 'warmctl uninstall-units'; edits are lost on the next install."]
    return "\n".join(header + lines) + "\n"


# ---------------------------------------------------------------- files

def user_unit_dir() -> Path:
    """Where systemd reads a user's own units: $XDG_CONFIG_HOME/systemd/user."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def install(directory: Path, names: tuple[str, ...] = UNIT_NAMES) -> list[tuple[Path, bool]]:
    """Write the units ``names`` into ``directory``; returns (path, changed) for each."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UnitsError(f"cannot create {directory}: {exc.strerror}; choose another --user-dir") from None
    plan = []
    for name in names:  # check them all before writing any: never leave half an install
        path = directory / name
        old = _read(path)
        if old is not None and not old.startswith(MARKER):
            raise UnitsError(f"{path} exists and was not written by warmctl install-units; "
                             "move it away (or remove it) and run install-units again")
        plan.append((path, render(name), old))
    written = []
    for path, text, old in plan:
        if old != text:
            _write_atomically(path, text)
        written.append((path, old != text))
    return written


def owned_units(directory: Path) -> list[Path]:
    """The units in ``directory`` that install-units wrote; refuses to touch any other."""
    ours = []
    for name in ALL_UNITS:
        path = directory / name
        text = _read(path)
        if text is None:
            continue
        if not text.startswith(MARKER):
            raise UnitsError(f"{path} was not written by warmctl install-units (packaged or edited "
                             "by hand); remove it yourself if you mean to")
        ours.append(path)
    return ours


def uninstall(directory: Path) -> list[Path]:
    """Remove the units install-units wrote in ``directory`` and links that enable them."""
    ours = owned_units(directory)
    removed = []
    # Links such as sockets.target.wants/warmd.socket that `systemctl enable` made.
    for wants in sorted(directory.glob("*.wants")) + sorted(directory.glob("*.requires")):
        for name in ALL_UNITS:
            link = wants / name
            if link.is_symlink():
                link.unlink()
                removed.append(link)
    for path in ours:
        path.unlink()
        removed.append(path)
    return removed


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnitsError(f"cannot read {path}: {exc.strerror}") from None


def _write_atomically(path: Path, text: str) -> None:
    # systemd may read the directory at any moment (daemon-reload): never show it half a file.
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UnitsError(f"cannot write {path}: {exc.strerror}; choose another --user-dir") from None


# ---------------------------------------------------------------- systemctl

def systemctl(*args: str) -> subprocess.CompletedProcess:
    """``systemctl --user ARGS``, output captured."""
    exe = shutil.which("systemctl")
    if exe is None:
        raise UnitsError("systemctl is not installed: this machine does not run systemd; "
                         "use 'warmd' by hand or let warmctl start it automatically")
    return subprocess.run([exe, "--user", *args], capture_output=True, text=True, timeout=120)


def manager_reachable() -> bool:
    """Whether a systemd user manager answers (the user's session runs one)."""
    if shutil.which("systemctl") is None:
        return False
    return systemctl("show", "--property=Version", "--value").returncode == 0


def step_line(step: tuple[str, ...]) -> str:
    return shlex.join(("systemctl", "--user", *step))


# ---------------------------------------------------------------- verbs

def add_verbs(verb: Callable[..., argparse.ArgumentParser]) -> None:
    """Register the unit verbs on warmctl's parser."""
    sp = verb("install-units", "write the systemd user units for this Python environment")
    sp.add_argument("--user-dir", metavar="DIR",
                    help="write the units into DIR (default: $XDG_CONFIG_HOME/systemd/user)")
    sp.add_argument("--enable", action="store_true",
                    help="run the systemctl --user commands instead of printing them")
    sp.add_argument("--openhcs", action="store_true",
                    help="also warmd-openhcs.service, OpenHCS's execution endpoint (run this from "
                         "the OpenHCS environment)")
    sp = verb("uninstall-units", "remove the systemd user units install-units wrote")
    sp.add_argument("--user-dir", metavar="DIR",
                    help="remove them from DIR (default: $XDG_CONFIG_HOME/systemd/user)")


def _directory(args: argparse.Namespace) -> Path:
    return Path(os.path.abspath(args.user_dir)) if args.user_dir else user_unit_dir()


def cmd_install_units(args: argparse.Namespace) -> int:
    directory = _directory(args)
    names, steps = UNIT_NAMES, NEXT_STEPS
    if args.openhcs:
        from ..openhcs.compat import openhcs_version
        openhcs_version()  # refuses here, not at the session's start, without a usable OpenHCS
        names, steps = ALL_UNITS, (*NEXT_STEPS[:2], ("enable", "--now", OPENHCS_UNIT), *NEXT_STEPS[2:])
    written = install(directory, names)
    for path, changed in written:
        state = "wrote" if changed else "unchanged"
        suffix = (f" (ExecStart={exec_line(warmd_command(unit=path.name))})"
                  if path.name in PROGRAMS else "")
        print(f"{state} {path}{suffix}")
    if directory != user_unit_dir():
        print(f"note: systemd reads user units from {user_unit_dir()} and the other directories "
              "listed in systemd.unit(5); make sure it reads this one")
    if not args.enable:
        print("Next, run:")
        for step in steps:
            print(f"  {step_line(step)}")
        return exitcodes.OK
    for step in steps:
        print(f"$ {step_line(step)}", flush=True)
        done = systemctl(*step[:1], "--no-pager", *step[1:]) if step[0] == "status" else systemctl(*step)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        if done.returncode != 0:
            raise UnitsError(f"'{step_line(step)}' failed (status {done.returncode}); "
                             "is a systemd user manager running for you ('systemctl --user status')?")
    if any(changed for _, changed in written):
        print("If warmd.service was already running, 'systemctl --user restart warmd.service' "
              "makes it use these units (running jobs are cancelled).")
    return exitcodes.OK


def cmd_uninstall_units(args: argparse.Namespace) -> int:
    directory = _directory(args)
    if not owned_units(directory):
        print(f"no warmd units in {directory}")
        return exitcodes.OK
    reachable = manager_reachable()
    if reachable:
        step = ("disable", "--now", *(path.name for path in owned_units(directory)))
        print(f"$ {step_line(step)}", flush=True)
        done = systemctl(*step)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
    for path in uninstall(directory):
        print(f"removed {path}")
    if reachable:
        print(f"$ {step_line(('daemon-reload',))}", flush=True)
        systemctl("daemon-reload")
    else:
        print("no systemd user manager answers: nothing was stopped")
    return exitcodes.OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "install-units": cmd_install_units,
    "uninstall-units": cmd_uninstall_units,
}
