"""Arrays through memfds, end to end: results beyond the frame limit, a 1 GiB array, each
side's copy its own, a late attach, and arrays made in place that travel uncopied."""
from __future__ import annotations

import asyncio
import os
import pickle
import time

import psutil
import pytest

import warmd
from warmd import inplace
from warmd.aio import AsyncClient

MiB = 2**20


def needs_memory(gib: float):
    free = psutil.virtual_memory().available / 2**30
    return pytest.mark.skipif(free < gib, reason=f"needs {gib:g} GiB of free memory, "
                                                 f"this machine has {free:.1f} GiB")


def echo(x):
    return x


def ones(n):
    import numpy as np
    return np.ones(n, dtype=np.uint8)


def bump(a):
    a[0] += 1  # the worker's copy is its own: the client's array stays as it was
    return a


def first_after(a, go):
    """``a[0]`` once the file ``go`` exists: read after the client has written its array."""
    while not os.path.exists(go):
        time.sleep(0.01)
    return int(a[0])


def inode(a) -> int:
    found = inplace.source(memoryview(a).cast("B") if a.ndim else memoryview(a))
    assert found is not None, "not in a memfd"
    return os.fstat(found[0].file.fd).st_ino


@needs_memory(3)
def test_a_result_over_the_frame_limit_arrives(daemon):
    with daemon.client() as client:  # daemon.max_frame is 256 MiB by default
        back = client.submit(ones, 300 * MiB).result(timeout=120)
    assert back.nbytes == 300 * MiB and back[0] == 1 and back[-1] == 1 and back.flags.writeable


@needs_memory(6)
def test_a_1_gib_array_goes_and_comes_back(daemon):
    import numpy as np

    sent = np.arange(2**30 // 8, dtype=np.int64)
    with daemon.client() as client:
        back = client.submit(echo, sent).result(timeout=300)
    assert back.shape == sent.shape and back[12345] == 12345 and np.array_equal(back, sent)


def test_each_side_writes_its_own_copy(daemon, tmp_path):
    import numpy as np

    sent = np.zeros(2 * MiB, dtype=np.uint8)
    with daemon.client() as client:
        back = client.submit(bump, sent).result(timeout=60)
        assert back[0] == 1 and sent[0] == 0 and back.flags.writeable
        back[1] = 5
        assert sent[1] == 0
        # What the client writes after submitting never reaches the job: it has its own bytes.
        for array in (np.zeros(2 * MiB, dtype=np.uint8), warmd.zeros(2 * MiB, dtype=np.uint8)):
            go = tmp_path / f"go-{type(array.base).__name__}"
            job = client.submit(first_after, array, str(go))
            job.job_id  # accepted: the array has been sent
            array[0] = 9
            go.touch()
            assert job.result(timeout=60) == 0 and array[0] == 9


def test_a_second_client_attaching_later_gets_the_same_bytes(daemon):
    import numpy as np

    with daemon.client() as client:
        job = client.submit(np.arange, 2 * MiB, dtype=np.int32)
        mine = job.result(timeout=60)
    with daemon.client() as other:
        theirs = other.attach(job.job_id).result(timeout=60)
    assert np.array_equal(mine, theirs) and theirs[-1] == 2 * MiB - 1
    theirs[0] = -1
    assert mine[0] == 0


def test_arrays_made_in_place_travel_uncopied_both_ways(daemon):
    import numpy as np

    stack = warmd.empty((8, 256, 1024), dtype=np.uint16)  # 4 MiB
    stack[:] = 7
    with daemon.client() as client:
        back = client.submit(echo, stack).result(timeout=60)
        changed = client.submit(bump, stack.reshape(-1)).result(timeout=60)
    # Returned unchanged, the array comes back as the very memfd the producer filled.
    assert inode(back) == inode(stack) and back.flags.writeable
    assert np.array_equal(back, stack)
    # Written by the job, it comes back in a file of its own.
    assert inode(changed) != inode(stack) and changed[0] == 8 and stack.reshape(-1)[0] == 7
    stack[0, 0, 0] = 1  # the producer writes its own copy from now on
    assert back[0, 0, 0] == 7


def test_in_place_arrays_are_ordinary_numpy_arrays_outside_warmd():
    import numpy as np

    zeros = warmd.zeros((3, 4), dtype=np.float32)
    empty = warmd.empty(5, dtype="i8")
    raw = warmd.buffer(10)
    assert isinstance(zeros, np.ndarray) and zeros.shape == (3, 4) and not zeros.any()
    assert empty.dtype == np.int64 and len(raw) == 10 and not raw.readonly
    zeros += 2
    assert np.array_equal(pickle.loads(pickle.dumps(zeros)), np.full((3, 4), 2, np.float32))
    assert warmd.empty((0, 3)).size == 0 and warmd.buffer(0).nbytes == 0
    with pytest.raises(ValueError):
        warmd.buffer(-1)


def test_map_and_the_async_client_carry_arrays_in_memfds(daemon):
    import numpy as np

    arrays = [np.full(MiB, i, dtype=np.uint8) for i in range(4)]

    async def main():
        async with AsyncClient(daemon.socket, autostart=False) as client:
            return await client.map(echo, arrays)

    back = asyncio.run(asyncio.wait_for(main(), 60))
    with daemon.client() as client:
        mapped = list(client.map(echo, arrays))
    for got in (back, mapped):
        assert [int(a[0]) for a in got] == [0, 1, 2, 3] and all(a.flags.writeable for a in got)
    assert not np.shares_memory(back[0], mapped[0])


def test_arrays_over_buffers_max_bytes_are_refused_with_the_key_named(make_daemon):
    import numpy as np

    d = make_daemon('[buffers]\nmax_bytes = "4MiB"\n')
    with d.client() as client:
        with pytest.raises(warmd.FrameTooLarge, match="buffers.max_bytes"):
            client.submit(echo, np.zeros(8 * MiB, dtype=np.uint8))
        job = client.submit(ones, 8 * MiB)
        with pytest.raises(warmd.RemoteError, match="buffers.max_bytes"):
            job.result(timeout=60)
        assert client.submit(echo, np.ones(MiB // 4)).result(timeout=60).sum() == MiB // 4  # 2 MiB


@needs_memory(3)
def test_the_daemon_stays_flat_while_a_large_array_goes_both_ways(make_daemon):
    import numpy as np

    d = make_daemon("[daemon]\nresult_max_jobs = 1\n")
    sent = np.ones(512 * MiB, dtype=np.uint8)
    with d.client() as client:
        client.submit(echo, 1).result(timeout=60)
        try:
            d.reset_peak_rss()
        except OSError as exc:
            pytest.skip(f"cannot reset the daemon's peak RSS here: {exc}")
        start = d.rss()
        back = client.submit(echo, sent).result(timeout=120)
        grown = d.peak_rss() - start
    assert back.nbytes == sent.nbytes and back[-1] == 1
    assert grown < 16 * MiB, f"the daemon grew by {grown / MiB:.1f} MiB passing 512 MiB on"
