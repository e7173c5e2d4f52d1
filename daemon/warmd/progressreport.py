"""What one progress report carries: cut to fit, never refused.

A job's progress is a side channel: a report too rich for it (too many fields,
values that are not scalars, a message of megabytes, a field that happens to be
called ``total``) must never fail the job that sent it. The worker cuts a report
before it is sent, the daemon cuts what it keeps again (a worker is not trusted
to have done so), and what was cut is said in the message.

Structured progress that does not fit a few scalars (an application's own event
record) travels whole beside the header, as ``detail``: JSON bytes in the
frame's payload, up to ``MAX_DETAIL`` bytes, passed to the job's followers and
to those of its ancestors, and kept nowhere else (not in status, the journal or
a group's roll-up).
"""
from __future__ import annotations

import json
import math
from typing import Any

try:
    import orjson
except ImportError:  # Debian 12 packages none: the standard library's json does the same
    orjson = None  # type: ignore[assignment]

MAX_FIELDS = 16          # fields one report keeps
MAX_FIELD_TEXT = 200     # characters a text field keeps
MAX_KEY = 64             # characters a field name keeps
MAX_MESSAGE = 1000       # characters the message keeps
MAX_DETAIL = 1 << 20     # bytes of JSON a report's detail may take



def scalar(value: Any) -> Any:
    """A field's value as kept: a JSON scalar; anything else as its (cut) text."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -2**63 <= value < 2**63 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)[:MAX_FIELD_TEXT]


def fields(value: Any) -> tuple[dict[str, Any], int]:
    """The fields kept of ``value`` (a mapping), and how many were left out."""
    if not isinstance(value, dict) or not value:
        return {}, 0
    kept: dict[str, Any] = {}
    for key, item in value.items():
        name = str(key)[:MAX_KEY]
        if not name or len(kept) >= MAX_FIELDS:
            continue
        kept[name] = scalar(item)
    return kept, len(value) - len(kept)


def message(text: Any, fields_cut: int = 0) -> str:
    """The message as kept (at most ``MAX_MESSAGE`` characters), with a note of the
    fields that did not fit."""
    note = (f" [{fields_cut} progress field{'s' if fields_cut > 1 else ''} cut: at most {MAX_FIELDS}]"
            if fields_cut else "")
    out = str(text or "")
    room = MAX_MESSAGE - len(note)
    if len(out) > room:
        out = out[:room - 1] + "…"
    return out + note


def number(value: Any, default: float | None) -> float | None:
    """``done`` or ``total`` as kept: a finite number, else ``default``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return default
    return value


def encode_detail(detail: Any) -> bytes:
    """``detail`` as the JSON a report carries beside its header. Anything JSON cannot
    say (a set, a path, an object) goes as its text; too large, or not encodable at all,
    it becomes a note saying so."""
    try:
        data = _dumps(detail)
    except (TypeError, ValueError, RecursionError) as exc:  # orjson's errors are ValueErrors
        return _dumps({"cut": f"progress detail not sent: {exc}"})
    if len(data) > MAX_DETAIL:
        return _dumps({"cut": f"progress detail of {len(data)} bytes not sent: "
                              f"at most {MAX_DETAIL} bytes"})
    return data


def _dumps(value: Any) -> bytes:
    if orjson is not None:
        return orjson.dumps(value, default=str,
                            option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    return json.dumps(value, default=str, separators=(",", ":")).encode()


def decode_detail(payload: bytes) -> Any:
    """A report's detail as its reader gets it (None when it had none or it is unreadable)."""
    if not payload:
        return None
    try:
        return orjson.loads(payload) if orjson is not None else json.loads(payload)
    except ValueError:  # orjson.JSONDecodeError is one
        try:
            return json.loads(payload)  # NaN and Infinity, which only json writes
        except ValueError:
            return None
