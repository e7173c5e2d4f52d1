"""Encoding the three kinds of job a client can submit."""
from __future__ import annotations

import functools
import os
import sys
import types
from collections import ChainMap
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import jobstdin, oob
from ..codepaths import is_user_file, is_user_module
from ..protocol import LOG_LEVELS, source_digest, source_frame
from .refs import resolve


@dataclass(frozen=True, slots=True)
class ModuleSource:
    """One of the user's modules as a "source" frame carries it."""
    name: str
    path: str
    sha: str       # source_digest(path, source)
    source: bytes

    def frame(self) -> bytes:
        return source_frame(self.name, self.path, self.sha, self.source)


@dataclass(frozen=True)
class JobOptions:
    """How one job runs, beside what it runs: each is a field of its "submit" frame.

    ``env`` is the job's whole environment, as ``subprocess``'s ``env=`` is (variables
    that belong to the worker stay: see warmctl(1)); ``env_update`` sets variables on
    top of the worker's own instead. ``timeout`` counts from the job's start. ``stdin``
    (a descriptor number or a file object, open for reading) becomes the job's fd 0: the
    job reads that pipe or file itself, to its EOF (see ``warmd.jobstdin``); without it a
    job reads /dev/null.
    """
    name: str | None = None
    timeout: float | None = None
    priority: int = 0
    log_level: str | None = None
    env: dict[str, str] | None = None
    env_update: dict[str, str] | None = None
    stdin: Any = None

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.timeout is not None:
            from ..config import parse_seconds
            out["timeout"] = parse_seconds(self.timeout)
        if self.priority:
            if isinstance(self.priority, bool) or not isinstance(self.priority, int):
                raise TypeError(f"priority must be an integer, not {self.priority!r}")
            out["priority"] = self.priority
        if self.log_level is not None:
            level = str(self.log_level).lower()
            if level not in LOG_LEVELS:
                raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}")
            out["log_level"] = level
        if self.env is not None:
            out["env"], out["env_mode"] = _environment(self.env), "replace"
        elif self.env_update:
            out["env"], out["env_mode"] = _environment(self.env_update), "update"
        return out


def _environment(env: Any) -> dict[str, str]:
    out = {}
    for key, value in dict(env).items():
        if not isinstance(key, str) or not isinstance(value, str) or not key or "=" in key:
            raise ValueError(f"an environment variable must be a name without '=' and a string "
                             f"value, not {key!r}={value!r}")
        out[key] = value
    return out


@dataclass
class JobRequest:
    """The header fields and payload of a "submit" frame, and the module sources it names."""
    kind: str
    name: str
    payload: bytes = b""
    fields: dict[str, Any] = field(default_factory=dict)
    modules: list[ModuleSource] = field(default_factory=list)
    files: list = field(default_factory=list)   # memfds of the buffers kept out of the pickle
    buffer_bytes: int = 0

    def with_options(self, options: JobOptions) -> "JobRequest":
        """This request with ``options`` in its fields (and its name, if one is given)."""
        self.fields.update(options.fields())
        if options.stdin is not None:  # after the buffers' memfds: the frame's last descriptor
            self.files.append(jobstdin.descriptor(options.stdin))
            self.fields["stdin"] = True
        if options.name is not None:
            self.name = str(options.name)
        return self

    def submit_fields(self, device: int | None, attach: bool, group: str | None = None) -> dict[str, Any]:
        fields = {"kind": self.kind, "name": self.name, "cwd": os.getcwd(), "device": device,
                  "attach": attach, **self.fields}
        if group is not None:
            fields["group"] = group
        if self.modules:
            fields["modules"] = {m.name: m.sha for m in self.modules}
        return fields


class UserModules:
    """The user's own modules, named with every call and sent by value (their source).

    A warm worker then runs exactly the code this client has now, and the
    modules are real importable modules there, so a job can hand its functions
    to a ProcessPoolExecutor. Packages the daemon's warm-up imported (named in
    its welcome) hold the warm state and are left to the worker. Sources are
    cached by file modification time and size, so unchanged files are not re-read;
    a connection sends each version of a source once (see ``ClientCore.submit``).
    """

    def __init__(self) -> None:
        self._verdicts: dict[str, bool] = {}
        self._sources: dict[str, tuple[tuple[int, int], ModuleSource]] = {}
        self._names: list[str] = []
        self._seen: tuple[int, str | None, frozenset[str]] | None = None
        self._path: list[str] = []
        self._path_key: tuple[tuple[str, ...], str] | None = None
        self.warm_packages: frozenset[str] = frozenset()

    def sys_path(self) -> list[str]:
        """The client's own import directories, so job code (and its subprocesses) find its
        modules; worked out again only when sys.path or the working directory changed."""
        key = (tuple(sys.path), os.getcwd())
        if key != self._path_key:
            dirs = [os.path.abspath(p or ".") for p in sys.path]
            self._path = [d for d in dict.fromkeys(dirs) if is_user_file(d) and os.path.isdir(d)]
            self._path_key = key
        return self._path

    def manifest(self) -> list[ModuleSource]:
        out = []
        for name in self._user_names():
            module = sys.modules.get(name)
            entry = self._entry(name, module.__file__) if module is not None else None
            if entry is not None:
                out.append(entry)
        return out

    def _user_names(self) -> list[str]:
        """Names of the user's modules; re-scanned only when ``sys.modules`` changed.

        Imports append to ``sys.modules``, so its length and last key tell a new
        import without walking the thousand modules a scientific stack loads.
        """
        seen = (len(sys.modules), next(reversed(sys.modules), None), self.warm_packages)
        if seen != self._seen:
            names = []
            for name, module in list(sys.modules.items()):
                verdict = self._verdicts.get(name)
                if verdict is None:
                    verdict = self._verdicts[name] = module is not None and is_user_module(module)
                if verdict and name.split(".")[0] not in self.warm_packages:
                    names.append(name)
            self._names, self._seen = names, seen
        return self._names

    def _entry(self, name: str, path: str) -> ModuleSource | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size)
        cached = self._sources.get(name)
        if cached is not None and cached[0] == key and cached[1].path == path:
            return cached[1]
        if not path.endswith(".py"):
            return None  # compiled extensions cannot travel as source
        try:
            with open(path, "rb") as f:
                source = f.read()
        except OSError:
            return None
        entry = ModuleSource(name, path, source_digest(path, source), source)
        self._sources[name] = (key, entry)
        return entry


def call_name(fn: Callable[..., Any]) -> str:
    """What a call job is named by default: the function's qualified name."""
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def call(fn: Callable[..., Any], args: tuple, kwargs: dict, modules: UserModules,
         min_buffer: int = oob.MIN_BUFFER) -> JobRequest:
    name = call_name(fn)
    needs: list[str] = []
    pickled = dumps((fn, tuple(args), dict(kwargs)), needs, min_buffer)
    # The import directories travel in the header: wrapping the call's pickle with them
    # would copy a large argument once more.
    fields: dict[str, Any] = {"paths": modules.sys_path()}
    if pickled.buffers:
        fields["buffers"] = pickled.buffers
    if needs:
        fields["needs"] = needs
    return JobRequest("call", name, pickled.payload, fields, modules=modules.manifest(),
                      files=pickled.files, buffer_bytes=pickled.buffer_bytes)


def script(path: str, argv: list[str]) -> JobRequest:
    """A file, or as ``python`` takes them, a directory or zip file with a ``__main__.py``."""
    full = os.path.abspath(path)
    if os.path.isdir(full):
        if not os.path.isfile(os.path.join(full, "__main__.py")):
            raise FileNotFoundError(f"{path} is a directory without a __main__.py: nothing to run "
                                    "(python runs a directory by its __main__.py)")
    elif not os.path.isfile(full):
        raise FileNotFoundError(f"no such script: {path}")
    name = os.path.basename(full.rstrip(os.sep)) or full
    return JobRequest("script", name, b"", {"path": full, "argv": list(argv)})


def module(name: str, argv: list[str]) -> JobRequest:
    """A module run as ``python -m name argv...`` runs it, found from the current directory."""
    if not name or name.startswith(".") or not all(part.isidentifier() for part in name.split(".")):
        raise ValueError(f"-m {name!r}: not a module name")
    return JobRequest("module", f"-m {name}", b"", {"module": name, "argv": list(argv)})


def code(source: str, argv: list[str]) -> JobRequest:
    first = source.strip().splitlines()[0] if source.strip() else ""
    return JobRequest("code", f"-c {first[:40]}", source.encode(), {"argv": list(argv)})


def dumps(obj: Any, needs: list[str], min_buffer: int = oob.MIN_BUFFER) -> oob.Pickled:
    """cloudpickle, except that code pickled by value (functions of ``__main__``) keeps its
    file name, so worker tracebacks quote it rather than "<dynamic-code>"; references to
    other jobs' results (``warmd.ref``, futures) pickle as such, their job ids added to
    ``needs``; and large buffers (array data) are kept out of the pickle, in memfds
    (see ``warmd.oob``)."""
    return oob.dumps(pickler(needs), obj, min_buffer)


def pickler(needs: list[str]) -> Callable[..., Any]:
    """Makes the Pickler ``dumps`` uses: job references it meets are added to ``needs``."""
    def make(stream: Any, **options: Any) -> Any:
        made = _pickler()(stream, **options)
        made.needs = needs
        return made
    return make


@functools.lru_cache(maxsize=1)
def _pickler() -> type:
    """The Pickler class for ``dumps``, made once (creating a class costs more than a small call)."""
    import cloudpickle

    base = cloudpickle.Pickler.dispatch_table[types.CodeType]

    def reduce_code(code: types.CodeType) -> Any:
        rebuild, fields = base(code)
        return rebuild, tuple(code.co_filename if f == "<dynamic-code>" else f for f in fields)

    class Pickler(oob.BufferReducer, cloudpickle.Pickler):
        dispatch_table = ChainMap({types.CodeType: reduce_code}, cloudpickle.Pickler.dispatch_table)
        needs: list[str]

        def reducer_override(self, obj: Any) -> Any:
            # Called for every object cloudpickle itself may handle: one type lookup for ours.
            ref_of = getattr(type(obj), "__warmd_ref__", None)
            if ref_of is not None:
                job_id = ref_of(obj)
                self.needs.append(job_id)
                return resolve, (job_id,)
            return super().reducer_override(obj)

    return Pickler
