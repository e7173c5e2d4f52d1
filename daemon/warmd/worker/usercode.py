"""The user's modules as a job's client sent them (by value), importable for real.

Results of other jobs that a call takes by reference arrive the same way
("result" frames) just before its run, and are dropped after it.

The daemon sends a module's source ("source" frame) once per version; a "run"
frame names the versions its job needs. Before a call is unpickled, stale copies
are dropped from ``sys.modules`` and an import hook serves the named sources, so
the job's functions are ordinary module members (picklable by reference, as
multiprocessing needs). A module whose source is unchanged since the last job is
kept, with its state, like any warm module. When a run names a new version of
a module the worker ran before, the ``warmd.on_code_change`` callbacks are told,
before the job is unpickled, so applications can drop what they cached of it.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any, Callable


_SHA = "__warmd_sha__"


class MissingSource(LookupError):
    """A run named a module version the daemon never sent this worker."""


class _SourceLoader(importlib.abc.Loader):
    def __init__(self, entry: dict[str, Any], loaded: set[str]) -> None:
        self.entry = entry
        self.loaded = loaded

    def create_module(self, spec):  # default module creation
        return None

    def exec_module(self, module: ModuleType) -> None:
        entry = self.entry
        setattr(module, _SHA, entry["sha"])
        self.loaded.add(entry["name"])
        code = compile(entry["source"], entry["path"], "exec", dont_inherit=True)
        exec(code, module.__dict__)


class UserCode(importlib.abc.MetaPathFinder):
    """Serves the modules of the current job's manifest; inert between jobs."""

    def __init__(self, warm: set[str], on_change: list[Callable[[frozenset[str]], None]] = ()) -> None:
        self.warm = warm               # modules loaded by warm-up: never replaced
        self.on_change = on_change     # warmd.on_code_change callbacks
        self.ran: dict[str, str] = {}  # by name: the version the last run naming it had
        self.sources: dict[str, dict[str, Any]] = {}  # by name: the version the daemon sent last
        self.entries: dict[str, dict[str, Any]] = {}  # what the running job may import
        self.loaded: set[str] = set()  # names this hook has loaded: the only ones to check
        self.results: dict[str, tuple[Any, list, tuple]] = {}  # other jobs' results the next run takes
        sys.meta_path.insert(0, self)

    def add_result(self, header: dict[str, Any], payload: bytes, files: tuple = ()) -> None:
        """Keep a "result" frame: another job's pickled result (and its buffers' list and
        memfds, see warmd.oob), which the next run takes."""
        self.results[header["job"]] = (payload, list(header.get("buffers") or []), tuple(files))

    def add_source(self, header: dict[str, Any], source: bytes) -> None:
        """Keep a "source" frame's module version (it replaces the one of the same name)."""
        self.sources[header["name"]] = {"name": header["name"], "path": header["path"],
                                        "sha": header["sha"], "source": source}

    def install(self, modules: dict[str, str]) -> None:
        """Serve the module versions a run names (module name -> sha) to the job's imports."""
        entries = {}
        for name, sha in modules.items():
            entry = self.sources.get(name)
            if entry is None or entry["sha"] != sha:
                raise MissingSource(f"the daemon did not send the source of module {name} "
                                    f"(sha {sha[:12]}) before the job")
            entries[name] = entry
        self.entries = entries
        changed = frozenset(n for n, sha in modules.items() if self.ran.get(n, sha) != sha)
        self.ran.update(modules)
        for name in [n for n in self.loaded if n not in self.warm]:
            module = sys.modules.get(name)
            entry = self.entries.get(name)
            if module is None or getattr(module, _SHA, None) is None:
                self.loaded.discard(name)  # gone, or replaced by an import from disk
            elif entry is None or getattr(module, _SHA) != entry["sha"]:
                # Sent by an earlier client and not by this one, or edited since: the next
                # import loads the client's version.
                del sys.modules[name]
                self.loaded.discard(name)
        if changed:
            for callback in list(self.on_change):
                callback(changed)  # an error fails this job, with its traceback

    def clear(self) -> None:
        self.entries = {}
        self.results = {}

    def find_spec(self, name, path=None, target=None):
        entry = self.entries.get(name)
        if entry is None:
            return None
        is_package = os.path.basename(entry["path"]) == "__init__.py"
        loader = _SourceLoader(entry, self.loaded)
        spec = importlib.util.spec_from_loader(name, loader, origin=entry["path"],
                                               is_package=is_package)
        spec.has_location = True
        if is_package:
            spec.submodule_search_locations = [os.path.dirname(entry["path"])]
        return spec


def warm_modules() -> set[str]:
    """Names loaded so far (at the end of warm-up): these stay as they are."""
    return set(sys.modules)

