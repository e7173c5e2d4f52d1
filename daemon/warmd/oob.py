"""Large buffers of a pickle carried after it in the same payload, never copied into it.

Pickled with protocol 5 and a ``buffer_callback``, each contiguous buffer of at least
``MIN_BUFFER`` bytes (a numpy array's data, a large bytearray) stays out of the pickle
stream: the payload is the pickle, then those buffers, and the frame's header lists
their sizes ("buffers"). The sender writes each from where it already is (a piece of
the frame, gathered by ``sendmsg``); the receiver unpickles with views of the payload
it received in their place, so arrays are built on the received bytes, writable, and
nothing is copied on either side. The daemon passes the payload on as it is.
"""
from __future__ import annotations

import io
import pickle
from typing import Any, Callable

MIN_BUFFER = 1 << 20   # smaller buffers stay in the pickle: a piece costs more than a copy
MAX_BUFFERS = 65536    # buffers one payload may list


def dumps(pickler: Callable[..., pickle.Pickler], obj: Any) -> tuple[list, list[int]]:
    """The payload's pieces (the pickle, then the buffers kept out of it) and their sizes."""
    buffers: list[memoryview] = []

    def keep_out(buffer: pickle.PickleBuffer) -> bool:
        try:
            raw = buffer.raw()
        except BufferError:  # not contiguous: it goes in the pickle, as a copy
            return True
        if raw.nbytes < MIN_BUFFER or len(buffers) >= MAX_BUFFERS:
            return True
        buffers.append(raw)
        return False

    stream = io.BytesIO()
    pickler(stream, protocol=5, buffer_callback=keep_out).dump(obj)
    return [stream.getvalue(), *buffers], [b.nbytes for b in buffers]


def split(payload: Any, sizes: list[int]) -> tuple[memoryview, list[memoryview]]:
    """The pickle and views of the buffers after it (ValueError if they cannot fit)."""
    view = memoryview(payload)
    start = len(view) - sum(sizes)
    if start < 0 or any(not isinstance(n, int) or n < 0 for n in sizes):
        raise ValueError(f"the payload of {len(view)} bytes cannot hold buffers of {sum(sizes)}")
    buffers, at = [], start
    for n in sizes:
        buffers.append(view[at:at + n])
        at += n
    return view[:start], buffers


def loads(payload: Any, sizes: list[int] | None, load: Callable[..., Any] = pickle.loads) -> Any:
    """Unpickle a payload made by ``dumps`` (``load`` takes ``buffers=`` as pickle.loads does)."""
    if not sizes:
        return load(payload)
    head, buffers = split(payload, sizes)
    return load(head, buffers=buffers)


def size(payload: bytes | list) -> int:
    return len(payload) if not isinstance(payload, list) else sum(len(memoryview(p).cast("B")) for p in payload)
