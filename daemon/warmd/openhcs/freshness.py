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

    @staticmethod
    def _user_files() -> list[tuple[str, tuple[str, int, int]]]:
        found = []
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None)
            if not path or module is None or not is_user_module(module):
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            found.append((name, (path, st.st_mtime_ns, st.st_size)))
        return found
