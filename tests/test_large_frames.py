"""Large payloads: received straight into their own buffer and written unjoined, through
the frame reader alone and through a real daemon, both clients and a worker."""
from __future__ import annotations

import asyncio
import os
import random

import pytest

from warmd.aio import AsyncClient
from warmd.errors import ProtocolError
from warmd.protocol import LARGE, FrameReader, encode, encode_parts

SIZES = [0, 1, LARGE - 1, LARGE, LARGE + 1, 3 * LARGE + 7, 5 * 2**20]


def echo(data):
    return data


def make(n, seed):
    return random.Random(seed).randbytes(n)


def test_the_reader_gives_every_frame_back_whole_however_the_bytes_arrive():
    rng = random.Random(7)
    frames = [({"t": "x", "i": i}, os.urandom(n)) for i, n in enumerate(SIZES * 2)]
    stream = b"".join(encode(h, p) for h, p in frames)
    for _ in range(20):
        reader, out, i = FrameReader(1 << 30), [], 0
        while i < len(stream):
            n = rng.choice([1, 7, 4096, 65536, 200_000])
            direct = reader.direct_buffer()
            if direct is not None and rng.random() < 0.7:  # as recv_into would fill it
                n = min(n, len(direct), len(stream) - i)
                direct[:n] = stream[i:i + n]
                reader.direct_received(n)
            else:
                reader.receive_data(stream[i:i + n])
            i += n
            out += reader.frames()
        assert [(f.header, bytes(f.payload)) for f in out] == frames
        assert reader.pending == 0


def test_a_large_payload_is_one_piece_of_its_own_and_the_limit_still_holds():
    payload = bytearray(LARGE)
    parts = encode_parts({"t": "x"}, payload)
    assert len(parts) == 2 and parts[1] is payload
    assert len(encode_parts({"t": "x"}, b"small")) == 1
    reader = FrameReader(max_payload=LARGE)
    reader.receive_data(encode({"t": "x"}, b"\0" * (LARGE + 1))[:64])
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        reader.next_frame()


def test_a_truncated_large_frame_is_pending_at_the_end_of_the_stream():
    reader = FrameReader()
    reader.receive_data(encode({"t": "x"}, b"\1" * (2 * LARGE))[:LARGE])
    assert reader.next_frame() is None and reader.pending


@pytest.mark.parametrize("size", SIZES)
def test_arguments_and_results_of_every_size_round_trip_through_a_worker(daemon, size):
    data = make(size, size)
    with daemon.client() as client:
        assert client.submit(echo, data).result(timeout=60) == data
        assert client.submit(make, size, size).result(timeout=60) == data


def test_the_async_client_and_a_late_attach_get_the_same_large_result(daemon):
    size = 3 * 2**20 + 5
    expected = make(size, 1)

    async def main():
        async with AsyncClient(daemon.socket, autostart=False) as client:
            job = await client.submit(make, size, 1)
            return job.job_id, await job.result(), await (await client.submit(echo, expected)).result()

    job_id, made, echoed = asyncio.run(asyncio.wait_for(main(), 60))
    assert made == expected and echoed == expected
    with daemon.client() as other:  # a second client, after the job ended: the kept bytes
        assert other.attach(job_id).result(timeout=60) == expected
