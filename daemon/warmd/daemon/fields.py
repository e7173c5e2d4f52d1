"""Reading a request's header fields: each one checked for type and range before the
daemon acts on it, so a malformed request gets an error naming the field, never
an exception, a worker killed by a bad value, or a reply that cannot be encoded.
"""
from __future__ import annotations

from typing import Any, Iterable

from .. import jobstdin, oob
from ..config import MAX_INT, parse_seconds
from ..protocol import LOG_LEVELS

MAX_TEXT = 4096        # a name, a path, one argument
MAX_ITEMS = 65536      # arguments of one job, modules named by one submit
MAX_JOB_REF = 64       # a job id or a prefix of one


class BadRequest(ValueError):
    """A field is missing, of the wrong type or out of range; the message names it."""


def request_id(header: dict[str, Any]) -> int | None:
    """``req``: an integer the client chose, echoed in the reply (absent for no reply)."""
    req = header.get("req")
    if req is None:
        return None
    if isinstance(req, bool) or not isinstance(req, int) or not 0 <= req <= MAX_INT:
        raise BadRequest(f"req must be an integer from 0 to {MAX_INT}, not {_show(req)}")
    return req


def text(header: dict[str, Any], key: str, *, required: bool = False,
         path: bool = False) -> str | None:
    value = header.get(key)
    if value is None:
        if required:
            raise BadRequest(f"{key} is required")
        return None
    return _text(key, value, path=path)


def _text(key: str, value: Any, *, path: bool = False) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string, not {_show(value)}")
    if len(value) > MAX_TEXT:
        raise BadRequest(f"{key} is {len(value)} characters long, over the limit of {MAX_TEXT}")
    if path and "\0" in value:
        raise BadRequest(f"{key} contains a NUL character, which no path can")
    return value


def texts(header: dict[str, Any], key: str) -> list[str]:
    """A list of strings (absent means empty)."""
    value = header.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"{key} must be a list of strings, not {_show(value)}")
    if len(value) > MAX_ITEMS:
        raise BadRequest(f"{key} has {len(value)} items, over the limit of {MAX_ITEMS}")
    return [_text(f"{key}[{i}]", item) for i, item in enumerate(value)]


def buffers(header: dict[str, Any], files: tuple, max_bytes: int) -> list[list[int]]:
    """The frame's buffer list, checked against the descriptors that came with it (see
    ``warmd.oob.check``); absent means none."""
    value = header.get("buffers")
    try:
        oob.check(value, files, max_bytes)
        return value or []
    except oob.BadBuffers as exc:
        raise BadRequest(f"buffers: {exc}") from None


def stdin(header: dict[str, Any], files: tuple) -> tuple[tuple, Any]:
    """The frame's buffer descriptors, and the job's stdin if one came (see
    ``warmd.jobstdin``), checked to be readable."""
    try:
        buffer_files, file = jobstdin.split(header, files)
        if file is not None:
            jobstdin.check(file.fd)
    except jobstdin.BadStdin as exc:
        raise BadRequest(str(exc)) from None
    return tuple(buffer_files), file


MAX_PRIORITY = 1_000_000


def run_fields(header: dict[str, Any], kind: str, files: tuple, buffer_max: int,
               checked_paths: list[str] | None = None) -> dict[str, Any]:
    """What a worker acts on in a job's request, each field checked: a submit's, which the
    daemon checks, and a session call's, which the worker checks as it comes straight from
    the client (``checked_paths``: the paths of its last call, checked then)."""
    h = header
    paths = h.get("paths")
    paths = paths if paths is not None and paths == checked_paths else texts(h, "paths")
    run = {"kind": kind, "argv": texts(h, "argv"), "cwd": text(h, "cwd", path=True),
           "path": text(h, "path", required=kind == "script", path=True),
           "module": text(h, "module", required=kind == "module"),
           "name": text(h, "name"), "paths": paths,
           "buffers": buffers(h, files, buffer_max)}
    env, env_mode = environment(h)
    if env is not None:
        run.update(env=env, env_mode=env_mode)
    log_level = choice(h, "log_level", LOG_LEVELS, "")
    if log_level:
        run["log_level"] = log_level
    return run


def environment(header: dict[str, Any]) -> tuple[dict[str, str] | None, str]:
    """``env`` (variables for the job) and ``env_mode``: "replace" (the job's whole
    environment) or "update" (on top of the worker's); absent means the worker's own."""
    env = mapping(header, "env") if header.get("env") is not None else None
    mode = choice(header, "env_mode", ("replace", "update"), "replace")
    for name in env or ():
        if not name or "=" in name or "\0" in name:
            raise BadRequest(f"env: {_show(name)} is not a variable name")
    if env is not None and any("\0" in v for v in env.values()):
        raise BadRequest("env: a value holds a NUL byte")
    return env, mode


def priority(header: dict[str, Any]) -> int:
    value = header.get("priority", 0)
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_PRIORITY:
        raise BadRequest(f"priority must be an integer from -{MAX_PRIORITY} to {MAX_PRIORITY}, "
                         f"not {_show(value)}")
    return value


def mapping(header: dict[str, Any], key: str) -> dict[str, str]:
    """An object of string values (absent means empty)."""
    value = header.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{key} must be an object of strings, not {_show(value)}")
    if len(value) > MAX_ITEMS:
        raise BadRequest(f"{key} has {len(value)} entries, over the limit of {MAX_ITEMS}")
    for name, item in value.items():
        _text(f"{key} key", name)
        _text(f"{key}[{name[:40]!r}]", item)
    return value


def integer(header: dict[str, Any], key: str, default: int, *, minimum: int = 0) -> int:
    value = header.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_INT:
        raise BadRequest(f"{key} must be an integer from {minimum} to {MAX_INT}, not {_show(value)}")
    return value


def boolean(header: dict[str, Any], key: str, default: bool) -> bool:
    value = header.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"{key} must be true or false, not {_show(value)}")
    return value


def choice(header: dict[str, Any], key: str, options: Iterable[str], default: str) -> str:
    value = header.get(key)
    if value is None:
        return default
    options = tuple(options)
    if not isinstance(value, str) or value not in options:
        raise BadRequest(f"{key} must be one of {', '.join(options)}, not {_show(value)}")
    return value


def seconds(header: dict[str, Any], key: str) -> float | None:
    value = header.get(key)
    if value is None:
        return None
    try:
        return parse_seconds(value)
    except ValueError as exc:
        raise BadRequest(f"{key}: {exc}") from None


def job_ref(header: dict[str, Any], key: str = "job") -> str:
    """``job`` (or ``key``): an id, or a unique prefix of one."""
    value = header.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key} must be a job id (a non-empty string), not {_show(value)}")
    if len(value) > MAX_JOB_REF:
        raise BadRequest(f"{key} is {len(value)} characters long: no job id is longer than "
                         f"{MAX_JOB_REF}")
    return value


def _show(value: Any) -> str:
    """A short description of a bad value for an error message (never the whole of it,
    and never a walk through a deeply nested one)."""
    if isinstance(value, (list, dict)):
        return f"{'a list' if isinstance(value, list) else 'an object'} of {len(value)} items"
    text = repr(value)
    return text if len(text) <= 60 else f"{type(value).__name__} {text[:50]}..."
