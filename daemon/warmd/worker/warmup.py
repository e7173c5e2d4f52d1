"""Warm-up: the imports and hook calls a worker runs once, before any job."""
from __future__ import annotations

import importlib
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

StepStarted = Callable[[str], None]  # told each step's label as it starts


def _quiet(label: str) -> None:
    pass


@dataclass
class WarmupFailed(Exception):
    step: str
    error: str
    traceback: str


def run_steps(imports: list[str], hooks: list[str], on_step: StepStarted = _quiet) -> list[dict]:
    """Run every step in order and time it; raise WarmupFailed naming the step that broke."""
    steps = []
    for name in imports:
        steps.append(timed(f"import {name}", lambda name=name: importlib.import_module(name), on_step)[1])
    for hook in hooks:
        steps.append(timed(f"hook {hook}", lambda hook=hook: _call_hook(hook), on_step)[1])
    return steps


def _call_hook(spec: str) -> None:
    module_name, _, attr = spec.partition(":")
    target = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    target()


def timed(label: str, fn, on_step: StepStarted = _quiet, hint: str = "") -> tuple[Any, dict]:
    """Run one warm-up step: ``fn``'s value and the step's record (label, seconds); raise
    WarmupFailed naming the step, with ``hint`` after the error, if it fails."""
    on_step(label)
    start = time.perf_counter()
    try:
        value = fn()
    except BaseException as exc:  # a hook calling sys.exit is a failed warm-up too
        raise WarmupFailed(label, f"{type(exc).__name__}: {exc}{hint}", traceback.format_exc()) from None
    return value, {"step": label, "seconds": round(time.perf_counter() - start, 6)}
