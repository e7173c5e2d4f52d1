"""The daemon's memory stays bounded whatever a job prints and however slowly clients read.

Memory is measured, not timed: the daemon's peak resident set (VmHWM, reset before
the job through /proc/PID/clear_refs) against its resident set just before.
"""
from __future__ import annotations

import os
import socket

import pytest

from warmd.client import jobspec
from warmd.client.events import Gap, Output
from warmd.protocol import FrameReader, encode, hello

import helpers_jobs

MiB = 1 << 20
GiB = 1 << 30
BOUND = 64 * MiB  # above the idle daemon, whatever the job prints
PRINT_1GB = "import os\nchunk = b'x' * (1 << 20)\nfor _ in range(1024):\n    os.write(1, chunk)\n"


def baseline(daemon, client) -> int:
    """The daemon's RSS after warm-up and one job, with its peak reset to it."""
    client.submit(helpers_jobs.add, 1, 1).result(timeout=60)
    base = daemon.rss()
    try:
        daemon.reset_peak_rss()
    except OSError as exc:
        pytest.skip(f"cannot reset the daemon's peak RSS here: {exc}")
    return base


@pytest.mark.slow
def test_a_gigabyte_printed_with_nobody_attached(make_daemon):
    d = make_daemon()
    with d.client() as client:
        base = baseline(d, client)
        job_id = client.submit_job(jobspec.code(PRINT_1GB, []), attach=False).job_id
        assert client.wait(job_id).state == "succeeded"
        grew = d.peak_rss() - base
        assert grew <= BOUND, f"daemon RSS grew by {grew / MiB:.0f} MiB"
        # A late reader gets the last few MiB, told how much came before and where it is.
        events = client.logs(job_id)
    gaps = [e for e in events if isinstance(e, Gap)]
    assert len(gaps) == 1 and events[0] is gaps[0]
    kept = sum(len(e.data) for e in events if isinstance(e, Output))
    assert gaps[0].missed_bytes + kept == GiB
    assert 0 < kept <= 4 * MiB and gaps[0].kept_bytes == 4 * MiB
    shown = d.warmctl("logs", job_id, timeout=120)
    assert shown.returncode == 0 and "missed here" in shown.stderr
    assert "not kept anywhere else" in shown.stderr  # no journal for a daemon outside systemd


@pytest.mark.slow
def test_a_client_that_never_reads_costs_the_daemon_nothing_and_holds_up_nobody(make_daemon):
    d = make_daemon("[workers]\ncount = 2\n")
    with d.client() as client:
        base = baseline(d, client)
        job_id = client.submit_job(jobspec.code(PRINT_1GB, []), attach=False).job_id
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        slow.connect(str(d.socket))
        slow.sendall(encode(hello("slow", os.getpid())) + encode({"t": "attach", "req": 1, "job": job_id}))
        # ... and reads nothing while the job prints. Others are served meanwhile.
        with d.client() as other:
            assert other.submit(helpers_jobs.add, 2, 3).result(timeout=60) == 5
            assert other.ping()["pid"] == d.pid
        assert client.wait(job_id).state == "succeeded"
        grew = d.peak_rss() - base
        assert grew <= BOUND, f"daemon RSS grew by {grew / MiB:.0f} MiB"
    # Now it reads: what it was sent, then a gap saying what it missed, the kept tail, the end.
    reader, frames = FrameReader(1 << 30), []
    slow.settimeout(60)
    with slow:
        while not frames or frames[-1].type != "done":
            data = slow.recv(1 << 20)
            assert data, "the daemon closed the slow client's connection"
            reader.receive_data(data)
            frames += reader.frames()
    events = [f for f in frames if f.type == "event"]
    gaps = [f for f in events if f.get("kind") == "gap"]
    assert len(gaps) == 1
    gap = gaps[0]
    before = [f for f in events if f.get("seq") < gap.get("seq")]
    after = [f for f in events if f.get("seq") > gap.get("seq")]
    assert [f.get("seq") for f in after] == list(range(gap.get("seq") + 1, gap.get("seq") + 1 + len(after)))
    output = sum(len(f.payload) for f in before + after if f.get("kind") == "stdout")
    assert gap.get("missed_bytes") + output == GiB  # told exactly what it missed
    assert gap.get("missed_bytes") > GiB // 2


def test_a_job_output_dir_keeps_the_whole_output_and_the_gap_names_it(make_daemon, tmp_path):
    out_dir = tmp_path / "outputs"
    d = make_daemon(f'[daemon]\nreplay_max_bytes = "1MiB"\njob_output_dir = "{out_dir}"\n')
    code = ("import os, logging\nfor i in range(8):\n    os.write(1, bytes([65 + i]) * (1 << 20))\n"
            "logging.getLogger('plate').warning('well A01 done')\n")
    with d.client() as client:
        job_id = client.submit_job(jobspec.code(code, []), attach=False).job_id
        assert client.wait(job_id).state == "succeeded"
        events = client.logs(job_id)
    saved = (out_dir / f"{job_id}.log").read_bytes()
    assert saved == b"".join(bytes([65 + i]) * (1 << 20) for i in range(8)) + \
        b"WARNING:plate:well A01 done\n"
    assert (out_dir.stat().st_mode & 0o777) == 0o700
    gap = next(e for e in events if isinstance(e, Gap))
    assert gap.where == str(out_dir / f"{job_id}.log")


@pytest.mark.slow
def test_a_slow_reader_still_learns_how_its_job_ended_when_the_daemon_stops(make_daemon):
    d = make_daemon()
    forever = "import os\nchunk = b'y' * (1 << 16)\nwhile True:\n    os.write(1, chunk)\n"
    client = d.client()
    try:
        job_id = client.submit_job(jobspec.code(forever, []), attach=False).job_id
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        slow.connect(str(d.socket))
        slow.sendall(encode(hello("slow", os.getpid())) + encode({"t": "attach", "req": 1, "job": job_id}))
        seen = 0
        for event in client.attach(job_id).events():  # until far more than the slow one can hold
            seen += len(getattr(event, "data", b""))
            if seen > 64 * MiB:
                break
    finally:
        client.close()  # not shutdown(): it would wait for a job that never ends
    assert d.warmctl("shutdown").returncode == 0
    reader, frames = FrameReader(1 << 30), []
    slow.settimeout(60)
    with slow:
        while (data := slow.recv(1 << 20)):
            reader.receive_data(data)
            frames += reader.frames()
    assert frames[-1].type == "done" and frames[-1].get("state") == "cancelled"
    assert any(f.get("kind") == "gap" for f in frames)
