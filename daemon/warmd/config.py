"""The daemon's configuration: a TOML file, then command-line overrides.

Every key is declared once in ``SCHEMA`` with its parser and default; the file
loader, the command-line overrides and warmd.toml(5) all follow that table. An
unknown key or a bad value is a ConfigError naming ``table.key``.
"""
from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError
from .protocol import LOG_LEVELS

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
# "", "B", then K/KB (1000) and Ki/KiB (1024) up to T/TB and Ti/TiB.
_UNITS = {"": 1, "B": 1,
          **{f"{letter}{suffix}": base**power
             for power, letter in enumerate("KMGT", start=1)
             for suffix, base in (("", 1000), ("B", 1000), ("I", 1024), ("IB", 1024))}}


# Bounds on what a number may say. Integers must fit the 64 bits JSON readers keep; a frame's
# payload length is 32 bits on the wire; times beyond ten years are typing mistakes, and
# they would overflow the service manager's microsecond timeouts.
MAX_INT = 2**63 - 1
MAX_FRAME = 2**32 - 1
MAX_SECONDS = 10 * 365 * 86400.0


def max_workers() -> int:
    """The most workers of one kind (count, spares, per device) a daemon may keep on this
    machine: each is a whole interpreter, and the pool starts them all at once."""
    return max(16, 4 * (os.cpu_count() or 1))


def _int(minimum: int, maximum: Callable[[], int] | int = MAX_INT) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"expected an integer >= {minimum}, got {value!r}")
        limit = maximum() if callable(maximum) else maximum
        if value > limit:
            if callable(maximum):
                raise ValueError(f"{value} is more workers than this machine can keep warm: at most "
                                 f"{limit} (4 per CPU, at least 16)")
            raise ValueError(f"{value} is too large (at most {limit})")
        return value
    return parse


def parse_seconds(value: Any) -> float:
    """A duration: a finite number of seconds, 0 up to ten years."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number of seconds, got {value!r}")
    if not math.isfinite(value) or not 0 <= value <= MAX_SECONDS:
        raise ValueError(f"expected a number of seconds from 0 to {MAX_SECONDS:.0f} "
                         f"(0 where it means never), got {value!r}")
    return float(value)


def parse_size(value: Any, maximum: int = MAX_INT) -> int:
    """Bytes from an integer or a string such as "512MiB" or "2G"."""
    size: float | int | None = None
    if isinstance(value, bool):
        size = None
    elif isinstance(value, int) and value >= 0:
        size = value
    elif isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            size = float(m.group(1)) * _UNITS[(m.group(2) or "").upper()]
            if not math.isfinite(size) or size != int(size):  # "1.5GiB" is fine, "0.5" bytes is not
                size = None
    if size is None:
        raise ValueError(f'expected a size such as 1073741824 or "1GiB", got {value!r}')
    if size > maximum:
        raise ValueError(f"{value!r} is too large (at most {maximum} bytes)")
    return int(size)


def _min_size(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        size = parse_size(value)
        if size < minimum:
            raise ValueError(f"expected at least {minimum} bytes, got {value!r}")
        return size
    parse.is_size = True  # type: ignore[attr-defined]  # documented as a size
    return parse


def parse_frame_size(value: Any) -> int:
    """A frame payload limit: a size that fits the 32-bit length on the wire."""
    return parse_size(value, MAX_FRAME)


def _memory_limit(value: Any) -> float | int:
    """A fraction of the device's memory (0 < x <= 1) or a size in bytes; 0 means no limit."""
    if isinstance(value, float):
        if 0 < value <= 1:
            return value
        raise ValueError(f"a fraction must lie in (0, 1], got {value!r}")
    return parse_size(value)


def _str_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"expected a list of non-empty strings, got {value!r}")
    return tuple(value)


def _hooks(value: Any) -> tuple[str, ...]:
    hooks = _str_list(value)
    for hook in hooks:
        if not re.fullmatch(r"[\w.]+:[\w.]+", hook):
            raise ValueError(f'hook {hook!r} must look like "package.module:function"')
    return hooks


def _devices(value: Any) -> str | tuple[int, ...]:
    if value in ("all", "none"):
        return value
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                       for v in value):
        if len(set(value)) != len(value):
            raise ValueError(f"device list repeats an index: {value!r}")
        return tuple(value)
    raise ValueError(f'expected "all", "none" or a list of device indices, got {value!r}')


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {value!r}")
        return value
    return parse


def _log_level(value: Any) -> str:
    return _choice("debug", "info", "warning", "error")(str(value).lower())


def _path(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a path (or \"\" for the default), got {value!r}")
    return value


# table -> key -> (parser, default). The single source of truth for warmd.toml.
SCHEMA: dict[str, dict[str, tuple[Callable[[Any], Any], Any]]] = {
    "daemon": {
        "socket": (_path, ""),
        "result_max_jobs": (_int(1), 1000),
        "result_max_bytes": (parse_size, 256 * 1024**2),
        "result_ttl": (parse_seconds, 3600.0),
        "idle_exit": (parse_seconds, 0.0),
        "max_frame": (parse_frame_size, 256 * 1024**2),
        "replay_max_bytes": (parse_size, 4 * 1024**2),
        "job_output_dir": (_path, ""),
        "log_level": (_log_level, "info"),
    },
    "workers": {
        "count": (_int(1, max_workers), 1),
        "spares": (_int(0, max_workers), 1),
        "devices": (_devices, "all"),
        "workers_per_device": (_int(1, max_workers), 1),
        "max_jobs": (_int(0), 0),
        "max_extra": (_int(0, max_workers), 4),
        "session_release": (_choice("clean", "recycle"), "clean"),
        "max_rss": (parse_size, 0),
        "job_timeout": (parse_seconds, 0.0),
        "job_log_level": (_choice(*LOG_LEVELS), "warning"),
        "warmup_timeout": (parse_seconds, 600.0),
        "warmup_concurrency": (_int(0, max_workers), 0),
        "gpu_memory_limit": (_memory_limit, 0),
        "gpu_memory_policy": (_choice("keep", "free", "recycle"), "keep"),
        "gpu_recycle_bytes": (parse_size, 0),
    },
    "warmup": {
        "import": (_str_list, ()),
        "hooks": (_hooks, ()),
    },
    "cancel": {
        "interrupt_grace": (parse_seconds, 1.0),
        "terminate_grace": (parse_seconds, 1.0),
    },
    "buffers": {
        "min_bytes": (_min_size(1), 256 * 1024),
        "max_bytes": (parse_size, 0),
    },
}


def warmup_concurrency(value: int) -> int:
    """workers.warmup_concurrency, with 0 (its default) meaning the CPUs this process may use."""
    return value or len(os.sched_getaffinity(0))


def buffer_limit(max_bytes: int) -> int:
    """buffers.max_bytes, with 0 (its default) meaning half of the machine's memory."""
    if max_bytes:
        return max_bytes
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


@dataclass(frozen=True)
class Config:
    """Validated settings: ``values[table][key]``, plus where they came from."""

    values: dict[str, dict[str, Any]]
    source: str = "defaults"
    overrides: tuple[str, ...] = field(default=())

    def __getitem__(self, table: str) -> dict[str, Any]:
        return self.values[table]

    def to_json(self) -> dict[str, Any]:
        return {t: {k: list(v) if isinstance(v, tuple) else v for k, v in kv.items()}
                for t, kv in self.values.items()}

    @property
    def warm_packages(self) -> list[str]:
        """The top-level packages warm-up imports (``warmup.import`` and the hooks' modules):
        clients send them by reference, so that jobs see the warm state."""
        warmup = self.values["warmup"]
        return sorted({name.split(":")[0].split(".")[0] for name in (*warmup["import"], *warmup["hooks"])})


def defaults() -> dict[str, dict[str, Any]]:
    return {table: {key: default for key, (_, default) in keys.items()} for table, keys in SCHEMA.items()}


def set_value(values: dict[str, dict[str, Any]], table: str, key: str, raw: Any, where: str) -> None:
    """Validate and store one value; the error names ``table.key`` and where it was set."""
    if table not in SCHEMA:
        raise ConfigError(f"{where}: unknown table [{table}] (known: {', '.join(SCHEMA)})")
    if key not in SCHEMA[table]:
        raise ConfigError(f"{where}: unknown key {table}.{key} (known in [{table}]: "
                          f"{', '.join(SCHEMA[table])})")
    parser = SCHEMA[table][key][0]
    try:
        values[table][key] = parser(raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {table}.{key}: {exc}") from None


def load(path: Path | None, overrides: dict[str, Any] | None = None, *,
         required: bool = False) -> Config:
    """Read ``path`` (missing means defaults unless ``required``), then apply ``overrides``.

    ``overrides`` maps "table.key" to a raw value, as the command line gives them.
    """
    values = defaults()
    source = "defaults"
    problems: list[str] = []
    if path is not None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            if required:
                raise ConfigError(f"config file {path} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        else:
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: not valid TOML: {exc}") from None
            for table, keys in data.items():
                if not isinstance(keys, dict):
                    problems.append(f"{path}: {table!r} must be a table such as [{table}]")
                    continue
                for key, raw in keys.items():
                    _collect(problems, set_value, values, table, key, raw, str(path))
            source = str(path)
    applied = []
    for dotted, raw in (overrides or {}).items():
        table, key = dotted.split(".", 1)
        _collect(problems, set_value, values, table, key, raw, "command line")
        applied.append(dotted)
    if problems:  # every one at once: a user fixes the file in one go
        raise ConfigError("\n".join(problems))
    return Config(values, source, tuple(applied))


def _collect(problems: list[str], step: Callable[..., None], *args: Any) -> None:
    try:
        step(*args)
    except ConfigError as exc:
        problems.append(str(exc))


def all_keys() -> list[str]:
    """Every accepted "table.key", for documentation checks."""
    return [f"{t}.{k}" for t, keys in SCHEMA.items() for k in keys]
