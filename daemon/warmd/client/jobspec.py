"""Encoding the three kinds of job a client can submit."""
from __future__ import annotations

import io
import os
import sys
import threading
import types
from collections import ChainMap
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
    """Decides which modules travel by value: the user's own code.

    A warm worker imported nothing of them, so it always runs the code the
    client has now. The exception: packages the daemon's warm-up imports (named
    in its welcome) hold the warm state and go by reference. Verdicts are cached
    per module name; only new modules cost.
    """

    def __init__(self) -> None:
        self._verdicts: dict[str, bool] = {}
        self.warm_packages: frozenset[str] = frozenset()

    def names(self) -> list[str]:
        out = []
        for name, module in list(sys.modules.items()):
            verdict = self._verdicts.get(name)
            if verdict is None:
                verdict = self._verdicts[name] = module is not None and is_user_module(module)
            if verdict and name.split(".")[0] not in self.warm_packages:
                out.append(name)
        return out


def call(fn: Callable[..., Any], args: tuple, kwargs: dict, modules: ByValueModules) -> JobRequest:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return JobRequest("call", name, dumps((fn, tuple(args), dict(kwargs)), modules.names()))


def script(path: str, argv: list[str]) -> JobRequest:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise FileNotFoundError(f"no such script: {path}")
    return JobRequest("script", os.path.basename(path), b"", {"path": full, "argv": list(argv)})


def code(source: str, argv: list[str]) -> JobRequest:
    first = source.strip().splitlines()[0] if source.strip() else ""
    return JobRequest("code", f"-c {first[:40]}", source.encode(), {"argv": list(argv)})


_REGISTRY_LOCK = threading.Lock()


def dumps(obj: Any, by_value: list[str] = ()) -> bytes:
    """cloudpickle, with the modules ``by_value`` sent by value for this call only.

    cloudpickle's by-value registry is process-wide, so it is extended and
    restored under a lock. Code sent by value keeps its file name, so the
    worker's tracebacks quote the user's source rather than "<dynamic-code>".
    """
    import cloudpickle

    base = cloudpickle.Pickler.dispatch_table[types.CodeType]

    def reduce_code(code: types.CodeType) -> Any:
        rebuild, fields = base(code)
        return rebuild, tuple(code.co_filename if f == "<dynamic-code>" else f for f in fields)

    class Pickler(cloudpickle.Pickler):
        dispatch_table = ChainMap({types.CodeType: reduce_code}, cloudpickle.Pickler.dispatch_table)

    buf = io.BytesIO()
    with _REGISTRY_LOCK:
        already = cloudpickle.list_registry_pickle_by_value()
        added = [sys.modules[n] for n in by_value if n not in already and n in sys.modules]
        for module in added:
            cloudpickle.register_pickle_by_value(module)
        try:
            Pickler(buf, protocol=cloudpickle.DEFAULT_PROTOCOL).dump(obj)
        finally:
            for module in added:
                cloudpickle.unregister_pickle_by_value(module)
    return buf.getvalue()
