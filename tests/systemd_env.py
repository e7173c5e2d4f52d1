"""A private ``systemd --user`` manager with its own journald, for tests.

On the development and CI machines systemd is installed but is not PID 1, so
a user manager refuses to start. This sets one up the way it was seen to work
there: a private mount namespace with tmpfs on /run/systemd and /run/log (and
/var/log/journal, so nothing reaches the host's journal), journald started
first, then ``systemd --user`` with its own XDG_RUNTIME_DIR and
XDG_CONFIG_HOME, both in a fresh cgroup shaped like
``*.slice/user-0.slice/user@0.service`` so that journald fills in
``_SYSTEMD_USER_UNIT``. ``systemctl --user`` reaches the manager from outside
through $XDG_RUNTIME_DIR/systemd/private; the journal is read from inside the
namespace with ``nsenter``.

Both processes say when they are ready with sd_notify (READY=1) on sockets
the test owns, so start-up waits on events, not on timers.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import psutil

SYSTEMD = Path("/lib/systemd/systemd")
JOURNALD = Path("/lib/systemd/systemd-journald")
TOOLS = ("unshare", "nsenter", "systemctl", "journalctl", "systemd-analyze")

# Runs inside the new mount namespace. The shell stays the parent of journald
# and the manager, so both are reaped however they end.
_SETUP = r"""
set -e
mount -t tmpfs -o mode=0755 tmpfs /run/systemd
mount -t tmpfs -o mode=0755 tmpfs /run/log
if [ -d /var/log/journal ]; then mount -t tmpfs -o mode=2755 tmpfs /var/log/journal; fi
mkdir -p /run/systemd/system /run/systemd/journal
for procs in $WARMD_TEST_CGROUPS; do echo $$ > "$procs"; done
jn=$WARMD_TEST_JOURNALD_NOTIFY mn=$WARMD_TEST_MANAGER_NOTIFY
unset WARMD_TEST_CGROUPS WARMD_TEST_JOURNALD_NOTIFY WARMD_TEST_MANAGER_NOTIFY
NOTIFY_SOCKET=$jn "$JOURNALD" >>"$LOG" 2>&1 </dev/null &
echo "journald $!"
read go
NOTIFY_SOCKET=$mn "$SYSTEMD" --user >>"$LOG" 2>&1 </dev/null &
echo "manager $!"
wait
"""


class Unavailable(Exception):
    """This machine cannot run a private user manager; the message says why (a skip reason)."""


def check_available() -> None:
    """Raise Unavailable unless we are root, the tools exist and a mount namespace is allowed."""
    if os.geteuid() != 0:
        raise Unavailable("needs root: a private systemd --user is run in its own mount namespace "
                          "with tmpfs mounts and its own cgroup")
    for path in (SYSTEMD, JOURNALD):
        if not path.exists():
            raise Unavailable(f"{path} is missing (install systemd)")
    for tool in TOOLS:
        if shutil.which(tool) is None:
            raise Unavailable(f"{tool} is missing (install systemd and util-linux)")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        raise Unavailable(f"unshare -m is refused here: {probe.stderr.strip() or probe.returncode}")
    if not _cgroup_roots():
        raise Unavailable("no writable cgroup hierarchy under /sys/fs/cgroup")


def _cgroup_roots() -> list[Path]:
    """The hierarchies the manager's cgroup must exist in: v1 name=systemd and v2."""
    base = Path("/sys/fs/cgroup")
    roots = [p for p in (base / "systemd", base / "unified") if (p / "cgroup.procs").exists()]
    if not roots and (base / "cgroup.controllers").exists():
        roots = [base]  # a pure v2 machine
    return [r for r in roots if os.access(r, os.W_OK)]


class PrivateSystemd:
    """One user manager and journald; ``env`` reaches them with systemctl and warmctl."""

    def __init__(self, root: Path, python_path: list[Path] = ()) -> None:
        self.root = root
        self.runtime = root / "run"
        self.config = root / "config"
        self.unit_dir = self.config / "systemd" / "user"
        self.log = root / "manager.log"
        self.token = secrets.token_hex(4)
        self.cgroups = [r / f"warmdtest{self.token}.slice" / "user-0.slice" / "user@0.service"
                        for r in _cgroup_roots()]
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
                                 "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID", "WARMD_SOCKET",
                                 "WARMD_CONFIG", "DBUS_SESSION_BUS_ADDRESS", "INVOCATION_ID")}
        self.env.update(XDG_RUNTIME_DIR=str(self.runtime), XDG_CONFIG_HOME=str(self.config),
                        XDG_STATE_HOME=str(root / "state"), XDG_DATA_HOME=str(root / "data"),
                        XDG_CACHE_HOME=str(root / "cache"), SYSTEMD_PAGER="", SYSTEMD_COLORS="0",
                        PYTHONPATH=os.pathsep.join(str(p) for p in python_path))
        self.shell: subprocess.Popen | None = None
        self.journald_pid: int | None = None
        self.manager_pid: int | None = None

    # ------------------------------------------------------------ life cycle

    def start(self, timeout: float = 30) -> "PrivateSystemd":
        for d in (self.runtime, self.config, self.unit_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.runtime, 0o700)
        for cg in self.cgroups:
            cg.mkdir(parents=True, exist_ok=True)
        journald_ready = _NotifySocket(self.root / "jn.sock")
        manager_ready = _NotifySocket(self.root / "mn.sock")
        env = dict(self.env, SYSTEMD=str(SYSTEMD), JOURNALD=str(JOURNALD), LOG=str(self.log),
                   WARMD_TEST_CGROUPS=" ".join(str(cg / "cgroup.procs") for cg in self.cgroups),
                   WARMD_TEST_JOURNALD_NOTIFY=str(journald_ready.path),
                   WARMD_TEST_MANAGER_NOTIFY=str(manager_ready.path))
        try:
            with open(self.log, "ab") as log:
                self.shell = subprocess.Popen(
                    ["unshare", "-m", "--propagation", "private", "sh", "-c", _SETUP], env=env,
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                    start_new_session=True)
            self.journald_pid = self._read_pid("journald")
            journald_ready.wait_ready(timeout, self._died)
            self.shell.stdin.write("go\n")
            self.shell.stdin.flush()
            self.manager_pid = self._read_pid("manager")
            manager_ready.wait_ready(timeout, self._died)
        except BaseException:
            self.stop()
            raise
        finally:
            journald_ready.close()
            manager_ready.close()
        return self

    def _read_pid(self, name: str) -> int:
        line = self.shell.stdout.readline().split()
        if len(line) != 2 or line[0] != name:
            raise RuntimeError(f"the private systemd did not start {name}:\n{self.log_text()}")
        return int(line[1])

    def _died(self) -> str | None:
        if self.shell is not None and self.shell.poll() is not None:
            return f"the private systemd exited ({self.shell.returncode}):\n{self.log_text()}"
        return None

    def stop(self) -> None:
        """Stop the manager (it stops every unit first), then journald; by pid, then reap."""
        for pid in (self.manager_pid, self.journald_pid):
            if pid is None:
                continue
            try:
                proc = psutil.Process(pid)
                proc.terminate()
                proc.wait(30)
            except psutil.TimeoutExpired:
                proc.kill()
            except psutil.Error:
                pass
        if self.shell is not None:
            if self.shell.stdin:
                self.shell.stdin.close()
            try:
                self.shell.wait(30)
            except subprocess.TimeoutExpired:
                self.shell.kill()
                self.shell.wait()
            self.shell.stdout.close()
        for cg in self.cgroups:
            _remove_cgroup(cg.parent.parent)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # ------------------------------------------------------------ talking to it

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(["systemctl", "--user", "--no-pager", *args], env=self.env,
                              capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise AssertionError(f"systemctl --user {' '.join(args)} failed ({done.returncode}):\n"
                                 f"{done.stdout}{done.stderr}")
        return done

    def show(self, unit: str, prop: str) -> str:
        return self.systemctl("show", "--property", prop, "--value", unit).stdout.strip()

    def journalctl(self, *args: str) -> subprocess.CompletedProcess:
        """journalctl inside the namespace, where this journald keeps its files."""
        return subprocess.run(["nsenter", "-t", str(self.manager_pid), "-m", "journalctl",
                               "--no-pager", *args], env=self.env, capture_output=True, text=True,
                              timeout=60)

    def sync_journal(self) -> None:
        """Have journald write out everything it has received (returns when it has)."""
        done = self.journalctl("--sync")
        if done.returncode != 0:
            raise AssertionError(f"journalctl --sync failed: {done.stderr}")

    def cgroup_pids(self, unit: str) -> set[int]:
        """Every process in ``unit``'s cgroup (the v2 hierarchy when there is one)."""
        path = self.show(unit, "ControlGroup")
        if not path:
            return set()
        pids: set[int] = set()
        for root in _cgroup_roots():
            for dirpath, _dirs, files in os.walk(root / path.lstrip("/")):
                if "cgroup.procs" in files:
                    pids.update(int(x) for x in (Path(dirpath) / "cgroup.procs").read_text().split())
        return pids


class _NotifySocket:
    """A datagram socket that receives sd_notify messages, as a service manager's does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def wait_ready(self, timeout: float, died: Callable[[], str | None]) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"no READY=1 on {self.path} within {timeout:g} s")
            # Wake now and then to notice a process that died instead of getting ready.
            self.sock.settimeout(min(left, 1.0))
            try:
                message = self.sock.recv(65536).decode(errors="replace")
            except TimeoutError:
                problem = died()
                if problem:
                    raise RuntimeError(problem) from None
                continue
            if "READY=1" in message.split("\n"):
                return

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


def _remove_cgroup(top: Path) -> None:
    """Remove a cgroup tree we created, deepest first (only empty cgroups can go)."""
    if not top.exists():
        return
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda e: -len(e[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               interval: float = 0.05) -> object:
    """Poll ``predicate`` until it is true: only for states systemd announces no event for."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def warmctl(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """warmctl from this environment; never autostarts, so only systemd can start the daemon."""
    return subprocess.run([sys.executable, "-m", "warmd.ctl", "--no-autostart", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
