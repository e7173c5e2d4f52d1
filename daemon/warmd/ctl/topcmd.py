"""``warmctl top``: the verb. It never imports Textual itself: ``cmd_top`` checks that
Textual imports, then loads the app (``topapp``), so that ``warmctl`` starts as quickly
with the ``tui`` extra installed as without it. What the app shows is worked out in
``top``, which imports neither."""
from __future__ import annotations

import argparse
import sys

from . import exitcodes

HINT = "warmctl top needs Textual: pip install 'warmd[tui]'"


def cmd_top(args: argparse.Namespace) -> int:
    """Run the app until ``q``. Exit status 69 (EX_UNAVAILABLE, as for a daemon that cannot
    be reached) when Textual is not installed."""
    import importlib
    try:
        importlib.import_module("textual.widgets")  # here only: never when warmctl starts
    except ImportError:
        print(HINT, file=sys.stderr)
        return exitcodes.UNAVAILABLE
    from .topapp import TopApp
    app = TopApp(args.socket, autostart=not args.no_autostart)
    app.run()
    if app.failure is not None:
        raise app.failure  # the first connection failed: main() says why, with its status
    return app.return_code or exitcodes.OK
