"""Numbers, fields and job ids: each bad value is a clear error, never a hang or a crash."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import pytest

from warmd.aio import AsyncClient
from warmd.daemon.jobids import ID_DIGITS, JobIds
from warmd.errors import AmbiguousJob
from warmd.protocol import PREFIX, PROTOCOL_VERSION, FrameReader, encode, hello

import helpers_jobs

# ---------------------------------------------------------------- bounds on numbers

BAD_NUMBERS = [
    # (command line, config file, the key the error must name)
    (["--spares", "1000000000000000000000000000000"], "", "workers.spares"),
    (["--workers", "100000"], "", "workers.count"),
    ([], "[workers]\nspares = 9223372036854775807\n", "workers.spares"),
    ([], "[workers]\nworkers_per_device = 100000\n", "workers.workers_per_device"),
    (["--idle-exit", "nan"], "", "daemon.idle_exit"),
    (["--idle-exit", "inf"], "", "daemon.idle_exit"),
    (["--idle-exit", "-1"], "", "daemon.idle_exit"),
    ([], "[cancel]\ninterrupt_grace = nan\n", "cancel.interrupt_grace"),
    ([], "[cancel]\nterminate_grace = inf\n", "cancel.terminate_grace"),
    ([], "[cancel]\nterminate_grace = -0.5\n", "cancel.terminate_grace"),
    ([], "[workers]\nwarmup_timeout = 1e300\n", "workers.warmup_timeout"),
    ([], '[daemon]\nmax_frame = "5GiB"\n', "daemon.max_frame"),
    ([], '[daemon]\nresult_max_bytes = "1e400"\n', "daemon.result_max_bytes"),
    ([], "[daemon]\nresult_max_bytes = -1\n", "daemon.result_max_bytes"),
    ([], "[workers]\nmax_rss = nan\n", "workers.max_rss"),
]


@pytest.mark.parametrize("argv,config,key", BAD_NUMBERS, ids=[k for _, _, k in BAD_NUMBERS])
def test_a_bad_number_is_refused_naming_its_key(make_daemon, argv, config, key):
    d = make_daemon(config, start=False)
    run = subprocess.run([sys.executable, "-m", "warmd", "--socket", str(d.socket), "--config",
                          str(d.config), *argv], env=d.env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 78, run.stderr  # EX_CONFIG, at once: no serving, no spinning
    assert key in run.stderr
    assert not d.socket.exists()


def test_warmctl_refuses_a_grace_that_is_not_a_finite_number(daemon):
    for bad in ("nan", "inf", "-1"):
        run = daemon.warmctl("cancel", "0", "--interrupt-grace", bad)
        assert run.returncode == 2 and "seconds" in run.stderr, run.stderr


def test_the_python_clients_refuse_a_nan_grace(daemon):
    with daemon.client() as client:
        future = client.submit(helpers_jobs.add, 1, 2)
        with pytest.raises(ValueError, match="interrupt_grace"):
            client.cancel(future.job_id, interrupt_grace=float("nan"))
        assert future.result(timeout=30) == 3


# ---------------------------------------------------------------- request fields

def _frame(header: dict) -> bytes:
    """A frame as any client might write it: the standard library's JSON, which spells
    out Infinity and NaN (orjson would quietly send null)."""
    import json
    head = json.dumps(header).encode()
    return PREFIX.pack(PROTOCOL_VERSION, 0, len(head), 0) + head


def _session(daemon, *headers: dict) -> list:
    """Send a hello and ``headers`` (each a request with "req"); the replies, by req."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(daemon.socket))
        s.settimeout(30)
        s.sendall(encode(hello("test", os.getpid())) + b"".join(_frame(h) for h in headers))
        want = {h["req"] for h in headers}
        reader, got = FrameReader(), {}
        while want - got.keys():
            data = s.recv(65536)
            assert data, f"connection closed; replies so far: {got}"
            reader.receive_data(data)
            for frame in reader.frames():
                if frame.get("req") in want:
                    got[frame.get("req")] = frame
        return [got[h["req"]] for h in headers]


@pytest.mark.parametrize("fields,named", [
    ({"kind": "code", "cwd": ["not", "a", "path"]}, "cwd"),
    ({"kind": "code", "cwd": "/tmp\0/x"}, "NUL"),
    ({"kind": "code", "argv": "not a list"}, "argv"),
    ({"kind": "code", "argv": [1, 2]}, "argv[0]"),
    ({"kind": "code", "name": {"a": 1}}, "name"),
    ({"kind": "code", "attach": "yes"}, "attach"),
    ({"kind": "script"}, "path"),
    ({"kind": "call", "modules": ["x"]}, "modules"),
    ({"kind": "call", "buffers": [[0, 0, 1 << 20]]}, "0 descriptors came"),  # none sent
    ({"kind": "call", "buffers": [[0, -1, 1]]}, "three integers"),
    ({"kind": "call", "buffers": "x"}, "buffers"),
    ({"kind": 7}, "kind"),
    ({}, "kind"),
])
def test_a_malformed_submit_is_refused_before_it_reaches_a_worker(daemon, fields, named):
    bad, after = _session(daemon, {"t": "submit", "req": 1, **fields},
                          {"t": "submit", "req": 2, "kind": "code", "cwd": "/"})
    assert bad.type == "error" and bad.get("code") == "bad_request", bad.header
    assert named in bad.get("message")
    assert after.type == "accepted"  # the same connection goes on
    with daemon.client() as client:
        assert client.wait(after.get("job")).state == "succeeded"
    assert "exited" not in daemon.warmctl("status").stdout  # no worker died of it


@pytest.mark.parametrize("header,named", [
    ({"t": "attach", "job": "ab", "since": float("inf")}, "since"),
    ({"t": "attach", "job": "ab", "since": -1}, "since"),
    ({"t": "cancel", "job": "ab", "interrupt_grace": float("nan")}, "interrupt_grace"),
    ({"t": "cancel", "job": "ab", "mode": ["kill"]}, "mode"),
    ({"t": "wait", "job": 12}, "job"),
    ({"t": "logs", "job": "x" * 100}, "job"),
    ({"t": "detach"}, "job"),
])
def test_a_malformed_field_is_a_bad_request_and_the_connection_stays(daemon, header, named):
    with daemon.client() as client:
        job_id = client.submit(helpers_jobs.add, 1, 1).job_id
    header = {k: (job_id if v == "ab" else v) for k, v in header.items()}
    bad, pong = _session(daemon, {**header, "req": 1}, {"t": "ping", "req": 2})
    assert bad.type == "error" and bad.get("code") == "bad_request", bad.header
    assert named in bad.get("message")
    assert pong.type == "pong"


def test_a_req_that_is_not_an_integer_is_refused(daemon):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(daemon.socket))
        s.settimeout(30)
        s.sendall(encode(hello("test", os.getpid())) + encode({"t": "ping", "req": [[[["x"]]]]})
                  + encode({"t": "ping", "req": 5}))
        reader, frames = FrameReader(), []
        while not any(f.get("req") == 5 for f in frames):
            reader.receive_data(s.recv(65536))
            frames += reader.frames()
    assert frames[1].type == "error" and "req must be an integer" in frames[1].get("message")
    assert frames[2].type == "pong"


def test_a_header_nested_too_deeply_gets_an_error_frame(daemon):
    deep = b'{"t":"ping","req":1,"x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(daemon.socket))
        s.settimeout(30)
        s.sendall(encode(hello("test", os.getpid())))
        s.sendall(PREFIX.pack(PROTOCOL_VERSION, 0, len(deep), 0) + deep)
        reader, frames = FrameReader(), []
        while (data := s.recv(65536)):
            reader.receive_data(data)
            frames += reader.frames()
    assert frames[-1].type == "error" and frames[-1].get("code") == "protocol"
    assert "nested too deeply" in frames[-1].get("message")
    with daemon.client() as client:
        assert client.submit(helpers_jobs.add, 2, 2).result(timeout=30) == 4


# ---------------------------------------------------------------- job ids

def test_a_hundred_thousand_ids_are_unique_and_twelve_hex_digits():
    ids = JobIds()
    made = [ids.next() for _ in range(100_000)]
    assert len(set(made)) == len(made)
    assert all(len(i) == ID_DIGITS and int(i, 16) >= 0 for i in made)
    assert len({i[:4] for i in made}) > 30_000  # random-looking: short prefixes spread out
    other = JobIds()
    assert set(made[:1000]).isdisjoint(other.next() for _ in range(1000))  # another daemon's


def _two_sharing_a_first_digit(client) -> tuple[str, list[str]]:
    # 17 ids in 16 first digits: two must share one (pigeonhole), whatever the key.
    futures = [client.submit(helpers_jobs.add, i, 0) for i in range(17)]
    ids = [f.job_id for f in futures]
    for f in futures:
        f.result(timeout=60)
    first = next(d for d in "0123456789abcdef" if sum(i.startswith(d) for i in ids) >= 2)
    return first, [i for i in ids if i.startswith(first)]


def test_a_unique_prefix_names_its_job_and_an_ambiguous_one_lists_candidates(daemon):
    with daemon.client() as client:
        shared, matching = _two_sharing_a_first_digit(client)
        with pytest.raises(AmbiguousJob) as refused:
            client.wait(shared)
        assert sorted(refused.value.candidates) == sorted(matching)
        unique = matching[0][:ID_DIGITS - 1]
        assert client.wait(unique).job == matching[0]
        assert client.attach(unique).result(timeout=30) == client.attach(matching[0]).result(timeout=30)
        assert client.resolve(unique) == matching[0]
    run = daemon.warmctl("wait", shared)
    assert run.returncode == 2
    assert f"prefix {shared!r} matches" in run.stderr and all(m in run.stderr for m in matching)
    assert daemon.warmctl("wait", matching[1][:8]).returncode == 0
    assert daemon.warmctl("logs", matching[1][:8]).returncode == 0
    cancel = daemon.warmctl("cancel", matching[1][:8])
    assert cancel.returncode == 0 and cancel.stdout == f"job {matching[1]}: already finished: nothing to cancel\n"


def test_the_asyncio_client_attaches_by_prefix(daemon):
    with daemon.client() as client:
        job_id = client.submit(helpers_jobs.add, 20, 22).job_id

    async def main() -> int:
        async with AsyncClient(daemon.socket, autostart=False) as aclient:
            job = await aclient.attach(job_id[:6])
            assert job.id == job_id
            assert await aclient.resolve(job_id[:6]) == job_id
            return await job.result()

    assert asyncio.run(main()) == 42
