"""The frame codec on its own (sans I/O): headers survive what JSON libraries disagree on."""
from __future__ import annotations

import math
import os

import pytest

from warmd import protocol
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
