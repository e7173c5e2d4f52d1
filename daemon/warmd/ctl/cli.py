"""What warmctl's verbs share: the client they connect with, argument types, usage errors."""
from __future__ import annotations

import argparse
from typing import Any


class UsageError(Exception):
    """A command line warmctl cannot act on (exit status 2, as argparse's own)."""


def client(args: argparse.Namespace) -> Any:
    from ..client.sync import Client
    # A command says what happened to its daemon, as it happened: no reconnecting (top,
    # which lives on, reconnects itself).
    return Client(args.socket, autostart=not args.no_autostart, name="warmctl", reconnect=False)


def seconds(text: str) -> float:
    from ..config import parse_seconds
    try:
        return parse_seconds(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value
