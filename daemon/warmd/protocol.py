"""The warmd wire protocol, without I/O (in the style of h11).

A frame is an 8-byte prefix, a JSON header and opaque payload bytes::

    u8  protocol version      (PROTOCOL_VERSION)
    u8  reserved, 0
    u16 header length         (big-endian)
    u32 payload length        (big-endian)
    header: UTF-8 JSON object with at least "t", the message type
    payload: bytes the daemon never interprets (cloudpickled calls and results,
             raw job output)

A frame may carry descriptors (sealed memfds holding array data, see warmd.oob)
as SCM_RIGHTS data. They are sent with the frame's first bytes, in a sendmsg of
that frame's bytes alone, so they arrive with a read that holds the frame's
start; the reader gives them to the frame that read ends in.

``FrameReader`` turns received bytes into ``Frame`` objects; ``encode`` turns a
header and payload into bytes. The daemon, the worker and both clients use these
two and nothing else to speak the protocol. See warmd-protocol(7).
"""
from __future__ import annotations

import hashlib
import json
import struct
import sys
from dataclasses import dataclass
from typing import Any

from .errors import ProtocolError, VersionMismatch

try:
    import orjson
except ImportError:  # Debian 12 does not package it: the standard library's json does the same job
    orjson = None

PROTOCOL_VERSION = 8
PREFIX = struct.Struct(">BBHI")
DEFAULT_MAX_PAYLOAD = 256 * 1024 * 1024
MAX_HEADER = 0xFFFF
# Bytes asked of one receive. recv() allocates the whole size on every call: 256 KiB
# (asyncio's default) or more goes through mmap and munmap, about 13 µs a call here;
# 64 KiB stays on the heap. Larger frames simply take several receives.
RECV_SIZE = 1 << 16
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")  # a job's log_level

# Headers are JSON, through orjson where it is installed: every hop encodes and
# decodes a header, and the standard library's json takes 3-4 µs for each against
# orjson's 0.3-0.7 µs. What orjson refuses to write (strings with lone surrogates,
# as undecodable file names give; integers beyond 64 bits; keys that are not
# strings) goes through the standard library, and what orjson cannot read of that
# output (NaN, escaped lone surrogates) back through it. Both sides speak plain JSON.
_stdlib_json = json.JSONEncoder(separators=(",", ":")).encode


def dump_json(obj: Any) -> bytes:
    """Compact JSON for a frame header or a ledger line."""
    if orjson is not None:
        try:
            return orjson.dumps(obj)
        except TypeError:
            pass
    return _stdlib_json(obj).encode()


def load_json(data: bytes | bytearray) -> Any:
    """Parse what ``dump_json`` wrote; ValueError or UnicodeDecodeError if it is not JSON."""
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(bytes(data))
    except RecursionError:  # the standard library parses nesting by recursing
        raise ValueError("JSON nested too deeply") from None

# Message types a client may send to the daemon.
CLIENT_MESSAGES = frozenset({
    "hello", "ping", "source", "submit", "attach", "detach", "wait", "logs", "cancel",
    "status", "jobs", "shutdown", "resolve", "group", "group_close", "restart", "forget",
    "watch", "unwatch", "session", "session_close",
})

# Error codes in "error" frames.
E_PROTOCOL = "protocol"
E_VERSION = "version_mismatch"
E_TOO_LARGE = "frame_too_large"
E_UNKNOWN_TYPE = "unknown_message"
E_BAD_REQUEST = "bad_request"
E_UNKNOWN_JOB = "unknown_job"
E_AMBIGUOUS_JOB = "ambiguous_job"
E_DENIED = "permission_denied"
E_SHUTTING_DOWN = "shutting_down"
E_NO_WORKERS = "no_workers"
E_DESCRIPTORS = "out_of_descriptors"
E_INTERNAL = "internal_error"


@dataclass(frozen=True, slots=True)
class Frame:
    header: dict[str, Any]
    payload: bytes = b""
    files: tuple = ()   # descriptors that came with it (warmd.memfd.Descriptor)

    @property
    def type(self) -> str:
        return self.header["t"]

    def get(self, key: str, default: Any = None) -> Any:
        return self.header.get(key, default)


# A payload this large travels as a piece of its own, next to its header, rather than
# copied into one bytes object with it; and is received into a buffer of its own.
LARGE = 1 << 16

Wire = list  # a frame's bytes on the wire: pieces (bytes, bytearray, memoryview) sent in order


class FdPiece:
    """A frame's first piece with the descriptors that go with it. Holding the
    descriptors' owners keeps them open until the piece has been sent (or dropped)."""

    __slots__ = ("data", "files")

    def __init__(self, data: bytes, files: Any) -> None:
        self.data = data
        self.files = tuple(files)

    def __len__(self) -> int:
        return len(self.data)

    def fds(self) -> list[int]:
        return [f.fd for f in self.files]


def _head(header: dict[str, Any], payload_size: int) -> bytes:
    head = dump_json(header)
    if len(head) > MAX_HEADER:
        raise ProtocolError(f"frame header of {len(head)} bytes exceeds {MAX_HEADER}")
    return PREFIX.pack(PROTOCOL_VERSION, 0, len(head), payload_size) + head


def encode(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """Serialise one frame into one bytes object. ``header`` must hold "t"."""
    return _head(header, len(payload)) + payload


def encode_parts(header: dict[str, Any], payload: bytes | bytearray | memoryview = b"",
                 files: Any = ()) -> Wire:
    """Serialise one frame as pieces: a large payload is not copied to join its header.
    ``files``, descriptors to send with it, go with its first piece."""
    if isinstance(payload, memoryview):
        payload = payload.cast("B")
    head = _head(header, len(payload))
    pieces = [head + payload] if len(payload) < LARGE else [head, payload]
    if files:
        pieces[0] = FdPiece(pieces[0], files)
    return pieces


def wire_size(data: bytes | Wire) -> int:
    return len(data) if not isinstance(data, list) else sum(len(piece) for piece in data)


def wire_files(data: bytes | Wire) -> tuple:
    """The descriptors a frame's pieces carry."""
    if isinstance(data, list):
        return tuple(f for piece in data if isinstance(piece, FdPiece) for f in piece.files)
    return ()


class FrameReader:
    """Accumulates bytes and yields complete frames; raises ProtocolError on bad input.

    A large payload (``LARGE`` and up) is collected in a buffer of its own as its bytes
    arrive, and the frame's payload is that buffer (a bytearray), never copied again.
    It grows with what was received, not with what the header declares: a peer that
    declares a large frame and sends nothing costs nothing.

    Descriptors come with the read they arrived with (``receive_data(data, files)``).
    They belong to the frame that read's last byte is in, and that frame must start
    in the same read (see the module's docstring); anything else is a ProtocolError.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()
        self._big: bytearray | None = None   # the large payload being received
        self._big_size = 0
        self._big_header: dict[str, Any] | None = None
        self._big_end = 0                    # where it ends, from the frame's start
        self._received = 0                   # bytes received so far: the stream offset
        self._start = 0                      # the stream offset of the frame being read
        self._files: list[tuple[int, int, tuple]] = []  # (first, last byte of the read, fds)

    def receive_data(self, data: bytes | memoryview, files: Any = ()) -> None:
        if files:
            self._files.append((self._received, self._received + len(data) - 1, tuple(files)))
        self._received += len(data)
        self._feed(data)

    def _feed(self, data: bytes | memoryview) -> None:
        if self._big is not None:
            take = self._big_size - len(self._big)
            if len(data) <= take:
                self._big += data
                return
            self._big += data[:take]
            data = data[take:]
        self._buf += data

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete frame (non-zero at EOF = truncated)."""
        return len(self._buf) + (len(self._big) + 1 if self._big is not None else 0) + len(self._files)

    def _frame(self, header: dict[str, Any], payload: Any, end: int) -> Frame:
        """The frame from ``self._start`` to ``end``, with the descriptors that came with it."""
        start, self._start = self._start, end
        if not self._files or self._files[0][1] >= end:
            return Frame(header, payload)
        first, _, files = self._files.pop(0)
        if first > start or (self._files and self._files[0][1] < end):
            self._files.clear()
            raise ProtocolError("descriptors came in the middle of a frame, not with its start")
        return Frame(header, payload, files)

    def next_frame(self) -> Frame | None:
        if self._big is not None:
            if len(self._big) < self._big_size:
                return None
            frame = self._frame(self._big_header, self._big, self._start + self._big_end)
            self._big = self._big_header = None
            return frame
        buf = self._buf
        if len(buf) < PREFIX.size:
            return None
        version, reserved, hlen, plen = PREFIX.unpack_from(buf)
        if version != PROTOCOL_VERSION:
            raise VersionMismatch(
                f"peer speaks warmd protocol {version}, this side speaks {PROTOCOL_VERSION}; "
                "upgrade warmd so client and daemon match, then restart the daemon "
                "('warmctl shutdown' or 'systemctl --user restart warmd')")
        if reserved != 0 or hlen == 0:
            raise ProtocolError("malformed frame prefix (not a warmd client?)")
        if plen > self.max_payload:
            raise ProtocolError(f"frame payload of {plen} bytes exceeds the limit of {self.max_payload}")
        start = PREFIX.size + hlen
        end = start + plen
        if len(buf) < (start if plen >= LARGE else end):
            return None
        try:
            header = load_json(buf[PREFIX.size:start])  # a copy: buf must stay resizable
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProtocolError(f"frame header is not JSON: {exc}") from None
        if not isinstance(header, dict) or not isinstance(header.get("t"), str):
            raise ProtocolError('frame header must be a JSON object with a string "t"')
        if plen >= LARGE:
            # From here the payload collects in its own buffer; what came with the header
            # is its first part, and whatever follows it is for later frames.
            self._big, self._big_size, self._big_header = bytearray(), plen, header
            self._big_end = end
            with memoryview(buf) as view:
                rest = bytes(view[start:])
            del buf[:]
            self._feed(rest)
            return self.next_frame()
        with memoryview(buf) as view:
            payload = bytes(view[start:end])
        del buf[:end]
        return self._frame(header, payload, self._start + end)

    def frames(self) -> list[Frame]:
        out = []
        while (frame := self.next_frame()) is not None:
            out.append(frame)
        return out


def source_digest(path: str, source: bytes) -> str:
    """The name of one module source in a "source" frame: it covers the path as well,
    because the worker compiles the source under that path (tracebacks quote it)."""
    return hashlib.sha256(path.encode("utf-8", "surrogateescape") + b"\0" + source).hexdigest()


def source_frame(name: str, path: str, sha: str, source: bytes) -> bytes:
    """A "source" frame: client to daemon, and daemon to worker alike."""
    return encode({"t": "source", "name": name, "path": path, "sha": sha}, source)


def python_version() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def cloudpickle_version() -> str:
    # importlib.metadata so the daemon learns the version without importing cloudpickle.
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("cloudpickle")
    except PackageNotFoundError:
        return "missing"


def hello(client: str, pid: int) -> dict[str, Any]:
    return {"t": "hello", "proto": PROTOCOL_VERSION, "python": python_version(),
            "cloudpickle": cloudpickle_version(), "client": client, "pid": pid}


def _short(value: Any) -> str:
    """A peer's value for a message: short, and never a walk through a nested one."""
    if isinstance(value, (list, dict)):
        return type(value).__name__
    text = str(value)
    return text if len(text) <= 40 else text[:40] + "..."


def check_hello(header: dict[str, Any], python: str, cloudpickle: str) -> str | None:
    """Return None when a client's hello is compatible, else a message telling the user what to do."""
    problems = []
    if header.get("proto") != PROTOCOL_VERSION:
        problems.append(f"protocol {_short(header.get('proto'))} vs daemon's {PROTOCOL_VERSION}")
    if header.get("python") != python:
        problems.append(f"Python {_short(header.get('python'))} vs daemon's {python}")
    if header.get("cloudpickle") != cloudpickle:
        problems.append(f"cloudpickle {_short(header.get('cloudpickle'))} vs daemon's {cloudpickle}")
    if not problems:
        return None
    return ("client and daemon do not match (" + "; ".join(problems) + "). Jobs are pickled, so both "
            "sides need the same Python minor version and cloudpickle: run the client from the "
            "daemon's environment, or point the daemon at yours and restart it")
