"""The frame codec on its own (sans I/O): headers survive what JSON libraries disagree on."""
from __future__ import annotations

import math
import os

import pytest

from warmd import protocol
from warmd.errors import ProtocolError
from warmd.protocol import FrameReader, dump_json, encode, load_json


@pytest.mark.parametrize("header", [
    {"t": "x", "cwd": "/tmp/caf\udce9"},    # an undecodable file name, as os.getcwd() gives it
    {"t": "x", "done": 2 ** 63 - 1, "total": -2 ** 63},
    {"t": "x", "ok": "café ✓", "n": None},
])
def test_headers_round_trip(header):
    reader = FrameReader()
    reader.receive_data(encode(header, b"payload"))
    frame = reader.next_frame()
    assert frame.header == header and frame.payload == b"payload"


def test_what_only_the_standard_library_writes_is_read_back():
    assert load_json(dump_json({1: "a"})) == {"1": "a"}
    assert load_json(dump_json({"n": 10 ** 30})) == {"n": 1e30}  # beyond 64 bits: a float, as JSON goes
    assert load_json(b'{"x":NaN}')["x"] != load_json(b'{"x":NaN}')["x"]  # NaN, as json reads it
    assert math.isnan(load_json(b"NaN"))


def test_bad_headers_are_protocol_errors():
    reader = FrameReader()
    reader.receive_data(protocol.PREFIX.pack(protocol.PROTOCOL_VERSION, 0, 3, 0) + b"{x}")
    with pytest.raises(protocol.ProtocolError, match="not JSON"):
        reader.next_frame()
    reader = FrameReader()
    reader.receive_data(protocol.PREFIX.pack(protocol.PROTOCOL_VERSION, 0, 2, 0) + b"\xff\xfe")
    with pytest.raises(protocol.ProtocolError, match="not JSON"):
        reader.next_frame()


def test_a_job_runs_in_a_directory_whose_name_is_not_utf8(daemon, tmp_path):
    odd = os.fsencode(tmp_path) + b"/caf\xe9"
    os.mkdir(odd)
    here = os.getcwd()
    os.chdir(odd)
    try:
        with daemon.client() as client:
            assert client.submit(os.getcwd).result(timeout=30) == os.fsdecode(odd)
    finally:
        os.chdir(here)


# ---------------------------------------------------------------- descriptors with frames

def _frames_with(reads):
    """Feed (bytes, files) reads to one reader; return (type, files) of each frame."""
    reader = FrameReader()
    out = []
    for data, files in reads:
        reader.receive_data(data, files)
        out += [(f.type, f.files) for f in reader.frames()]
    return out


def test_descriptors_belong_to_the_frame_whose_start_came_with_them():
    a, b, c = encode({"t": "a"}), encode({"t": "b"}, b"x" * 70000), encode({"t": "c"})
    # The read that brings b's descriptors may hold the end of a before b's start, and b's
    # rest may come in later reads: the descriptors are b's all the same.
    reads = [(a[:3], ()), (a[3:] + b[:100], ("fd1", "fd2")), (b[100:50000], ()), (b[50000:] + c, ())]
    assert _frames_with(reads) == [("a", ()), ("b", ("fd1", "fd2")), ("c", ())]
    assert _frames_with([(a + c, ("fd",))]) == [("a", ()), ("c", ("fd",))]


def test_descriptors_in_the_middle_of_a_frame_are_refused():
    b = encode({"t": "b"}, b"x" * 70000)
    reader = FrameReader()
    reader.receive_data(b[:10])
    reader.receive_data(b[10:], ("fd",))
    with pytest.raises(ProtocolError, match="middle of a frame"):
        reader.frames()
    twice = FrameReader()
    twice.receive_data(b[:10], ("fd1",))
    twice.receive_data(b[10:], ("fd2",))  # a second batch for the same frame
    with pytest.raises(ProtocolError, match="middle of a frame"):
        twice.frames()
