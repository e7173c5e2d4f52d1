"""Encoding the three kinds of job a client can submit."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from ..codepaths import is_user_module


@dataclass
class JobRequest:
    """The header fields and payload of a "submit" frame."""
    kind: str
    name: str
    payload: bytes = b""
    fields: dict[str, Any] = field(default_factory=dict)

    def submit_fields(self, device: int | None, attach: bool) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "cwd": os.getcwd(), "device": device,
                "attach": attach, **self.fields}


class ByValueModules:
    """Registers the user's own modules with cloudpickle to travel by value.

    A warm worker imported nothing of them, so it always runs the code the
    client has now. Verdicts are cached per module name; only new modules cost.
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def register(self) -> None:
        import cloudpickle
        for name, module in list(sys.modules.items()):
            if name in self._seen or module is None:
                continue
            self._seen.add(name)
            if is_user_module(module):
                try:
                    cloudpickle.register_pickle_by_value(module)
                except (ValueError, TypeError):
                    pass


def call(fn: Callable[..., Any], args: tuple, kwargs: dict, modules: ByValueModules) -> JobRequest:
    import cloudpickle
    modules.register()
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return JobRequest("call", name, cloudpickle.dumps((fn, tuple(args), dict(kwargs))))


def script(path: str, argv: list[str]) -> JobRequest:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise FileNotFoundError(f"no such script: {path}")
    return JobRequest("script", os.path.basename(path), b"", {"path": full, "argv": list(argv)})


def code(source: str, argv: list[str]) -> JobRequest:
    first = source.strip().splitlines()[0] if source.strip() else ""
    return JobRequest("code", f"-c {first[:40]}", source.encode(), {"argv": list(argv)})
