"""Large payloads: received straight into their own buffer and written unjoined, through
the frame reader alone and through a real daemon, both clients and a worker."""
from __future__ import annotations

import asyncio
import os
import random
import time

import pytest

from warmd.aio import AsyncClient
from warmd.errors import ProtocolError
from warmd.protocol import LARGE, PREFIX, PROTOCOL_VERSION, FrameReader, encode, encode_parts

SIZES = [0, 1, LARGE - 1, LARGE, LARGE + 1, 3 * LARGE + 7, 5 * 2**20]
MIB = 2**20


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
            reader.receive_data(memoryview(stream)[i:i + n])
            i += n
            out += reader.frames()
        assert [(f.header, bytes(f.payload)) for f in out] == frames
        assert reader.pending == 0


def test_a_declared_large_frame_costs_only_what_has_arrived():
    import tracemalloc

    head = b'{"t":"x"}'
    reader = FrameReader(2**32 - 1)
    tracemalloc.start()
    try:
        reader.receive_data(PREFIX.pack(PROTOCOL_VERSION, 0, len(head), 2**31) + head + b"\1" * 1000)
        assert reader.next_frame() is None and reader.pending
        assert tracemalloc.get_traced_memory()[1] < 2**20  # not the 2 GiB it declares
    finally:
        tracemalloc.stop()


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


# ---------------------------------------------------------------- what arrays survive

def kinds():
    import dataclasses

    import numpy as np

    @dataclasses.dataclass
    class Plate:
        name: str
        wells: list

    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    stack = np.arange(3 * 256 * 512, dtype=np.float64).reshape(3, 256, 512)  # 3 MiB: in a memfd
    record = np.zeros(3, dtype=[("well", "U3"), ("count", "i4"), ("area", "f8")])
    record[1] = ("B02", 7, 2.5)
    return {
        "empty": np.empty((0, 3)), "one byte": np.ones(1, dtype=np.uint8),
        "odd shape": np.arange(3 * 5 * 7, dtype=np.int16).reshape(3, 5, 7),
        "fortran": np.asfortranarray(base), "strided": base[::2, ::3], "transposed": base.T,
        "structured": record, "big": np.arange(LARGE, dtype=np.uint32),
        "bytes": b"\x00\xff" * LARGE, "bytearray": bytearray(b"xyz" * 10),
        "nested": {"list": [np.ones(2), (np.zeros(3),)], "plate": Plate("P1", [np.eye(2)])},
        "stack": stack, "stack fortran": np.asfortranarray(stack), "stack strided": stack[:, ::2, ::3],
        "records": np.zeros(100_000, dtype=record.dtype),
        "view": memoryview(np.arange(MIB // 4, dtype=np.int32)).cast("B").cast("i", (4, MIB // 16)),
        "small view": memoryview(bytearray(b"abc")),
        "nested large": {"wells": [stack[0], {"mask": stack[1] > 5}], "plate": Plate("P2", [stack[2]])},
    }


def _same(a, b) -> bool:
    import numpy as np
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
                and np.array_equal(a, b) and a.flags.f_contiguous == b.flags.f_contiguous)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, memoryview):
        return (isinstance(b, memoryview) and (a.format, a.shape) == (b.format, b.shape)
                and a.tolist() == b.tolist() and not b.readonly)
    if hasattr(a, "__dataclass_fields__"):
        return type(a).__name__ == type(b).__name__ and _same(vars(a), vars(b))
    return a == b and type(a) is type(b)


def test_arrays_of_every_kind_round_trip_writable_and_unshared(daemon):
    import numpy as np

    sent = kinds()
    with daemon.client() as client:
        back = client.submit(echo, sent).result(timeout=60)
        made = client.submit(kinds).result(timeout=60)
        mapped = list(client.map(echo, [sent["fortran"], sent["strided"], sent["structured"]]))
    assert _same(back, sent) and _same(made, sent)
    assert all(map(_same, mapped, [sent["fortran"], sent["strided"], sent["structured"]]))
    # Non-contiguous arrays arrive as contiguous copies of the same values.
    assert back["strided"].flags.c_contiguous and back["strided"].tolist() == sent["strided"].tolist()
    assert back["stack strided"].flags.c_contiguous and back["stack fortran"].flags.f_contiguous
    for value in (back["stack"], back["stack fortran"], back["stack strided"], back["records"],
                  made["nested large"]["plate"].wells[0]):
        assert value.flags.writeable
    back["stack"][0, 0, 0] = -1
    assert sent["stack"][0, 0, 0] == 0 and made["stack"][0, 0, 0] == 0
    for value in (back["big"], back["odd shape"], made["fortran"], back["nested"]["plate"].wells[0]):
        assert value.flags.writeable
    back["big"][0] = 99  # what arrived is this process's own: the sender's stays as it was
    assert sent["big"][0] == 0 and isinstance(back["bytearray"], bytearray)
    assert not np.shares_memory(back["big"], made["big"])


def test_the_async_client_round_trips_the_same_kinds(daemon):
    sent = kinds()

    async def main():
        async with AsyncClient(daemon.socket, autostart=False) as client:
            return (await (await client.submit(echo, sent)).result(),
                    await client.map(echo, [sent["structured"], sent["big"]]))

    back, mapped = asyncio.run(asyncio.wait_for(main(), 60))
    assert _same(back, sent) and _same(mapped, [sent["structured"], sent["big"]])


def test_frames_over_the_default_limit_work_where_the_daemon_allows_them(make_daemon):
    import psutil

    if psutil.virtual_memory().available < 4 * 2**30:
        pytest.skip("needs 4 GiB of free memory: a 260 MiB array is held several times over")
    d = make_daemon('[daemon]\nmax_frame = "300MiB"\nresult_max_bytes = "300MiB"\n')
    data = bytes(260 * 2**20)
    with d.client() as client:
        back = client.submit(echo, data).result(timeout=120)
    assert len(back) == len(data) and back == data


# ---------------------------------------------------------------- buffers out of the pickle

def plate_stack(n):
    import numpy as np
    stack = np.arange(n * 256 * 256, dtype=np.uint16).reshape(n, 256, 256)
    return {"stack": stack, "mask": np.asfortranarray(stack[0] > 100), "name": "P1"}


def total(stack):
    return int(stack["stack"].sum())


def test_large_arrays_travel_after_the_pickle_and_arrive_writable(daemon):
    import numpy as np

    import warmd

    sent = plate_stack(16)  # 2 MiB stack, 64 KiB mask
    with daemon.client() as client:
        made = client.submit(plate_stack, 16)
        back = client.submit(echo, sent)
        assert _same(made.result(timeout=60), sent) and _same(back.result(timeout=60), sent)
        # The stack is kept out of the pickle, in a memfd; the 64 KiB mask stays in it.
        assert made.finished.info["buffers"] == [[0, 0, sent["stack"].nbytes]]
        stack = back.result()["stack"]
        assert stack.flags.writeable
        stack[0, 0, 0] = 7
        assert sent["stack"][0, 0, 0] == 0
        # Handed on by reference, buffers and all.
        assert client.submit(total, warmd.ref(made.job_id)).result(timeout=60) == int(sent["stack"].sum())
        mapped = list(client.map(plate_stack, [4, 16]))
    assert _same(mapped[1], sent) and mapped[0]["stack"].shape == (4, 256, 256)
    assert not np.shares_memory(mapped[0]["stack"], mapped[1]["stack"])


def stack_once(go):
    """``plate_stack(16)``, once the file ``go`` exists."""
    while not os.path.exists(go):
        time.sleep(0.01)
    return plate_stack(16)


def test_two_futures_of_one_job_in_one_client_do_not_share_its_arrays(daemon, tmp_path):
    go = tmp_path / "go"
    with daemon.client() as client:
        first = client.submit(stack_once, str(go))
        second = client.attach(first.job_id)  # the same job, followed twice on one connection
        second.job_id  # attached while it runs: one end for both
        go.touch()
        a, b = first.result(timeout=60)["stack"], second.result(timeout=60)["stack"]
    a[0, 0, 0] = 9
    assert b[0, 0, 0] == 0 and a.flags.writeable and b.flags.writeable
