"""Telling the user's own code from installed code.

The client sends the user's modules by value and the worker forgets the ones a
job imported, so a warm worker never runs a stale copy of code that was just
edited. Installed code (standard library, site-packages, warmd itself) is
imported by reference and stays warm.
"""
from __future__ import annotations

import os
import site
import sysconfig
from functools import lru_cache
from types import ModuleType


@lru_cache(maxsize=1)
def installed_roots() -> tuple[str, ...]:
    roots = set()
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(name)
        if path:
            roots.add(os.path.realpath(path))
    for path in site.getsitepackages() + [site.getusersitepackages()]:
        roots.add(os.path.realpath(path))
    roots.add(os.path.realpath(os.path.dirname(os.path.dirname(__file__))))  # warmd's own parent
    return tuple(sorted(r.rstrip(os.sep) + os.sep for r in roots))


@lru_cache(maxsize=4096)
def _real_dir(directory: str) -> str:
    # A scientific stack imports thousands of modules from a few hundred directories:
    # resolving each directory once makes a client's first scan of sys.modules take
    # milliseconds instead of a tenth of a second (realpath stats every component).
    return os.path.realpath(directory)


def is_user_file(path: str) -> bool:
    directory, base = os.path.split(os.path.abspath(path))
    real = os.path.join(_real_dir(directory), base)
    if os.path.islink(real):
        real = os.path.realpath(real)
    return not real.startswith(installed_roots())


def is_user_module(module: ModuleType) -> bool:
    """True for a module loaded from a file outside the installed locations."""
    path = getattr(module, "__file__", None)
    if not path or getattr(module, "__name__", "") == "__main__":
        return False
    return is_user_file(path)
