"""The OpenHCS this endpoint was written for, and the refusal of any other.

The endpoint subclasses OpenHCS's execution server and replaces one internal
(the worker-lane executor, see ``executor``); the workers run OpenHCS's own
lane function. Those internals move between OpenHCS releases, and a run that
half works is worse than a clear refusal, so the endpoint starts only against
the version listed here.
"""
from __future__ import annotations

from ..errors import WarmdError

SUPPORTED = ("0.8.6",)


class UnsupportedOpenHCS(WarmdError):
    """OpenHCS is missing, or a release this endpoint was not written for."""


def openhcs_version() -> str:
    """The installed OpenHCS release; UnsupportedOpenHCS when it is not one of ``SUPPORTED``."""
    try:
        import openhcs
    except ImportError as exc:
        raise UnsupportedOpenHCS(
            f"OpenHCS is not importable here ({exc}): install warmd into the OpenHCS environment "
            f"(pip install 'warmd[openhcs]') and run warmd-openhcs from there") from None
    version = str(getattr(openhcs, "__version__", "unknown"))
    if version not in SUPPORTED:
        raise UnsupportedOpenHCS(
            f"OpenHCS {version} is installed, but this warmd-openhcs was written for OpenHCS "
            f"{', '.join(SUPPORTED)}: the server internals it replaces may have changed. Install "
            f"openhcs=={SUPPORTED[-1]}, or a warmd release made for OpenHCS {version}")
    return version
