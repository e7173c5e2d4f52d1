"""warmctl install-units / uninstall-units: the systemd user units for this environment."""
from __future__ import annotations

import argparse
from typing import Callable

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def add_verbs(verb: Callable[..., argparse.ArgumentParser]) -> None:
    """Register the unit verbs on warmctl's parser."""
