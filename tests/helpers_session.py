"""Calls for session tests: imported by the client and the worker alike (by value)."""
from __future__ import annotations

import os
import signal
import time

_state: dict[str, object] = {}


def remember(key: str, value: object) -> int:
    """Keep a value in this module, as an interactive front end keeps a loaded image."""
    _state[key] = value
    return os.getpid()


def recall(key: str) -> object:
    return _state.get(key)


def pid() -> int:
    return os.getpid()


def add(a: int, b: int) -> int:
    return a + b


def fail(message: str) -> None:
    raise ValueError(message)


def sleep_then(seconds: float, value: object = None) -> object:
    time.sleep(seconds)
    return value


def started_then_sleep(path: str, seconds: float = 60.0) -> None:
    """Write our pid to ``path`` (the test waits for it), then sleep."""
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(path + ".tmp", path)
    time.sleep(seconds)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def shout(n: int) -> int:
    print(f"call {n} says hello", flush=True)
    return n
