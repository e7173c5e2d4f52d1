"""Where warmd keeps its socket, its config and its logs (XDG rules)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import ConfigError

SOCKET_NAME = "warmd.sock"
SOCKET_HELP = ("default: $WARMD_SOCKET, else $XDG_RUNTIME_DIR/warmd.sock, "
               "else /tmp/warmd-$UID/warmd.sock")


def runtime_dir() -> Path:
    """$XDG_RUNTIME_DIR, else a private /tmp/warmd-$UID (created 0700, ownership checked)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg)
    return Path(f"/tmp/warmd-{os.getuid()}")


def default_socket() -> Path:
    env = os.environ.get("WARMD_SOCKET")
    if env:
        return Path(env)
    return runtime_dir() / SOCKET_NAME


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` 0700 if missing; refuse one owned by another user or open to others."""
    try:
        path.mkdir(mode=0o700, parents=True)
        return
    except FileExistsError:
        pass
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{path} exists and is not a directory")
    if st.st_uid != os.getuid():
        raise ConfigError(f"{path} belongs to uid {st.st_uid}, not to you (uid {os.getuid()}); "
                          "choose another socket with --socket or WARMD_SOCKET")
    if path == runtime_dir() and st.st_mode & 0o077:
        raise ConfigError(f"{path} is open to other users (mode {stat.S_IMODE(st.st_mode):o}); "
                          f"run 'chmod 700 {path}'")


def config_file() -> Path:
    env = os.environ.get("WARMD_CONFIG")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "warmd" / "warmd.toml"


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "warmd"
