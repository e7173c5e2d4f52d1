"""Progress reports richer than a report holds never fail the job: they are cut to fit,
with a note, and a whole record travels beside the header as ``detail``."""
from __future__ import annotations

import helpers_groups as jobs
from warmd import ChildProgress, Progress
from warmd.progressreport import MAX_DETAIL, MAX_FIELDS, MAX_MESSAGE

HANG = 60


def test_a_report_too_rich_is_cut_and_its_detail_arrives_whole(daemon):
    with daemon.client() as client:
        job = client.submit(jobs.rich_progress, 70_000)  # a 72 kB record: over a frame header
        sent = job.result(timeout=HANG)
        first, last = [e for e in job.events() if isinstance(e, Progress)]
    assert first.detail == sent and last.detail is None
    assert len(first.fields) == MAX_FIELDS and first.fields["f02"] == 2
    assert first.fields["f00"] == str({"nested": [1, 2]}) and first.fields["f01"] == "nan"
    assert first.fields["total"] == 7 and first.total == 2  # a field may be called total
    assert "f15" not in first.fields  # the 17th field and after did not fit
    assert first.message.startswith("m" * 900) and len(first.message) == MAX_MESSAGE
    assert first.message.endswith(f"[4 progress fields cut: at most {MAX_FIELDS}]")
    assert last.fields == {"well": "A01"}


def test_a_detail_too_large_arrives_as_a_note(daemon):
    with daemon.client() as client:
        job = client.submit(jobs.rich_progress, MAX_DETAIL + 1)
        job.result(timeout=HANG)
        first = next(e for e in job.events() if isinstance(e, Progress))
    assert set(first.detail) == {"cut"} and f"at most {MAX_DETAIL} bytes" in first.detail["cut"]


def test_a_groups_follower_gets_each_jobs_detail(daemon):
    with daemon.client() as client:
        parent = client.submit(jobs.rich_progress_in_group, 1000)
        sent = parent.result(timeout=HANG)
        news = [e for e in parent.events() if isinstance(e, ChildProgress) and e.detail]
    assert [e.detail for e in news] == [sent]
    assert news[0].fields["f02"] == 2
