"""Edited user modules are read again before the next run compiles.

The endpoint runs the pipeline source each run sends, and that source imports the
user's own step modules. Python imports a module once per process, so without this
a warm endpoint would compile the first version of a step function forever (the
workers would not: warmd sends them each user module's current source). Before a
run, a user module (outside the installed locations: see ``warmd.codepaths``) whose
file changed since this process first saw it is dropped from ``sys.modules``, so
the run's pipeline source imports it afresh.
"""
from __future__ import annotations

import os
import sys

from ..codepaths import is_user_module


class Freshness:
    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, int, int]] = {}
        # name -> (module, its file when it is a user module): OpenHCS's process holds
        # thousands of modules, and classifying each one on every run cost a tenth of
        # a second per run; only modules imported since the last look are classified.
        self._kinds: dict[str, tuple[object, str | None]] = {}

    def note(self) -> None:
        """Remember the files of the user modules imported since the last look."""
        for name, key in self._user_files():
            self._seen.setdefault(name, key)

    def drop_stale(self) -> set[str]:
        """Drop the user modules whose files changed since they were noted; their names."""
        stale = set()
        for name, key in self._user_files():
            seen = self._seen.get(name)
            if seen is None:
                self._seen[name] = key
            elif seen != key:
                stale.add(name)
                del self._seen[name]
                sys.modules.pop(name, None)
        return stale

    def _user_files(self) -> list[tuple[str, tuple[str, int, int]]]:
        found = []
        kinds: dict[str, tuple[object, str | None]] = {}
        for name, module in list(sys.modules.items()):
            known = self._kinds.get(name)
            if known is None or known[0] is not module:
                user = module is not None and is_user_module(module)
                known = (module, getattr(module, "__file__", None) if user else None)
            kinds[name] = known
            path = known[1]
            if not path:
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            found.append((name, (path, st.st_mtime_ns, st.st_size)))
        self._kinds = kinds  # modules gone from sys.modules are not held
        return found
