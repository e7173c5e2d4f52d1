"""Large buffers of a pickle, kept out of it and carried in sealed memfds.

Pickled with protocol 5 and a ``buffer_callback``, each contiguous buffer of at
least ``min_bytes`` (a numpy array's data, a large bytearray) stays out of the
pickle stream. Buffers that already live in a memfd whose bytes they still are
(``warmd.inplace``) go as that file; the others are written once into one new
memfd, each on a page boundary, which is then sealed (``warmd.memfd``). The
descriptors travel with the frame (SCM_RIGHTS) and its header lists each buffer
as ``[file, offset, size]``: which of the frame's descriptors, where, how long.

``BufferReducer`` widens what goes out of band: any memoryview (it arrives as one,
of the same format and shape, writable) and a non-contiguous array (copied once
into a contiguous one, which arrives C-contiguous). ``bytes`` and ``bytearray``
stay in the pickle, within daemon.max_frame: Python pickles them itself, without
asking the pickler; large binary data travels as a numpy array or a memoryview.

The receiver checks the list against what came (``check``), then unpickles with
private mappings in the buffers' place (``loads``): arrays are built on them,
writable, and nothing is copied on either side. The daemon checks and passes the
descriptors on; it never maps, reads or unpickles them.
"""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from . import inplace, memfd
from .memfd import Descriptor

MIN_BUFFER = 256 << 10  # default buffers.min_bytes (bench/threshold.py): smaller ones stay in the pickle
MAX_BUFFERS = 65536    # buffers one frame may list


class BadBuffers(ValueError):
    """A frame's buffer list does not match the descriptors that came with it."""


class BuffersTooLarge(BadBuffers):
    """A frame's buffers are more than buffers.max_bytes."""


@dataclass
class Pickled:
    """A pickle, and the buffers kept out of it: where each lies, in which of ``files``."""
    payload: bytes
    buffers: list[list[int]] = field(default_factory=list)
    files: list[Descriptor] = field(default_factory=list)

    @property
    def buffer_bytes(self) -> int:
        return sum(size for _, _, size in self.buffers)


class BufferReducer:
    """Mixed into a cloudpickle Pickler ahead of it: the types above, out of band."""

    min_bytes = MIN_BUFFER

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is memoryview:
            data = pickle.PickleBuffer(obj) if obj.contiguous else obj.tobytes()
            return _memoryview, (data, obj.format, obj.shape)
        if (kind.__name__ == "ndarray" and kind.__module__ == "numpy" and obj.nbytes >= self.min_bytes
                and not (obj.flags.c_contiguous or obj.flags.f_contiguous) and not obj.dtype.hasobject):
            return obj.copy().__reduce_ex__(5)
        return super().reducer_override(obj)  # type: ignore[misc]


def _memoryview(data: Any, format: str, shape: tuple) -> memoryview:
    view = memoryview(data).cast("B")
    try:
        return view.cast(format, shape)
    except (TypeError, ValueError):  # a format cast() cannot make: the bytes, flat
        return view


def dumps(pickler: Callable[..., pickle.Pickler], obj: Any, min_bytes: int = MIN_BUFFER) -> Pickled:
    return carry(*pickle_out(pickler, obj, min_bytes))


def pickle_out(pickler: Callable[..., pickle.Pickler], obj: Any,
               min_bytes: int = MIN_BUFFER) -> tuple[bytes, list[memoryview]]:
    """The pickle of ``obj`` and its buffers of at least ``min_bytes``, kept out of it in
    order (``pickle.loads(payload, buffers=kept)`` undoes it): what ``carry`` puts in
    memfds, or what another transport (Dask's, say) carries as it carries buffers."""
    kept: list[memoryview] = []

    def keep_out(buffer: pickle.PickleBuffer) -> bool:
        try:
            raw = buffer.raw()
        except BufferError:  # not contiguous: it goes in the pickle, as a copy
            return True
        if raw.nbytes < min_bytes or len(kept) >= MAX_BUFFERS:
            return True
        kept.append(raw)
        return False

    stream = io.BytesIO()
    made = pickler(stream, protocol=5, buffer_callback=keep_out)
    made.min_bytes = min_bytes
    made.dump(obj)
    return stream.getvalue(), kept


def carry(payload: bytes, kept: Sequence[memoryview]) -> Pickled:
    """``payload`` with its out-of-band buffers in memfds: a buffer that already lives in
    a memfd (``warmd.inplace``) goes as that file, the others are copied once into one
    new sealed memfd."""
    out = Pickled(payload)
    if not kept:
        return out
    index: dict[int, int] = {}  # id of a Descriptor -> its place in out.files
    copies: list[int] = []
    out.buffers = [[0, 0, 0] for _ in kept]
    for i, raw in enumerate(kept):
        found = inplace.source(raw)
        if found is not None and len(index) < memfd.MAX_FDS - 1 and inplace.reusable(found[0], raw):
            file = found[0].file
            if id(file) not in index:
                index[id(file)] = len(out.files)
                out.files.append(file)
            out.buffers[i] = [index[id(file)], found[1], raw.nbytes]
        else:
            copies.append(i)
    if copies:
        file, offsets = memfd.write_sealed([kept[i] for i in copies])
        for i, offset in zip(copies, offsets):
            out.buffers[i] = [len(out.files), offset, kept[i].nbytes]
        out.files.append(file)
    return out


def check(buffers: Any, files: Sequence[Descriptor], max_bytes: int = 0) -> int:
    """The bytes of ``files``, after checking that ``buffers`` (a header's list) names
    exactly these descriptors and that each is a sealed memfd holding what it lists;
    BadBuffers (or BuffersTooLarge, over ``max_bytes``) if not."""
    if buffers is None:
        buffers = []
    if not isinstance(buffers, list) or len(buffers) > MAX_BUFFERS:
        raise BadBuffers(f"buffers must be a list of at most {MAX_BUFFERS} [file, offset, size] entries")
    if len(files) > memfd.MAX_FDS:
        raise BadBuffers(f"{len(files)} descriptors came with one frame; at most {memfd.MAX_FDS} may")
    need = [0] * len(files)
    used = [False] * len(files)
    for entry in buffers:
        if (not isinstance(entry, list) or len(entry) != 3
                or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in entry)):
            raise BadBuffers("each buffer must be [file, offset, size], three integers >= 0")
        i, offset, size = entry
        if i >= len(files):
            raise BadBuffers(f"a buffer is in file {i}, but {len(files)} descriptors came with the frame")
        used[i] = True
        need[i] = max(need[i], offset + size)
    if not all(used):
        raise BadBuffers(f"{len(files)} descriptors came with the frame, but its buffers name "
                         f"{sum(used)} of them")
    total = 0
    for file, n in zip(files, need):
        try:
            total += memfd.check(file.fd, n)
        except memfd.BadDescriptor as exc:
            raise BadBuffers(str(exc)) from None
    if max_bytes and total > max_bytes:
        raise BuffersTooLarge(f"the frame's buffers are {total} bytes, over the daemon's limit of "
                              f"{max_bytes} (buffers.max_bytes)")
    return total


def loads(payload: Any, buffers: list[list[int]] | None, files: Sequence[Descriptor] = (),
          load: Callable[..., Any] = pickle.loads) -> Any:
    """Unpickle what ``dumps`` made, each buffer a private mapping of its file, checked first
    (BadBuffers: see ``check``). ``load`` takes ``buffers=`` as pickle.loads does."""
    views = mapped(buffers, files)
    return load(payload, buffers=views) if views else load(payload)


def mapped(buffers: list[list[int]] | None, files: Sequence[Descriptor]) -> list[memoryview]:
    """The buffers a frame lists, each a private, writable mapping of its file (checked
    first: BadBuffers)."""
    check(buffers, files)
    return [memfd.map_private(files[i], offset, size) for i, offset, size in buffers or ()]
