"""warmctl's progress bar, drawn from reports at known times: the count and percentage,
elapsed time, rate and time left when the total is known, a spinner when it is not, and
one bar for a group's jobs."""
from __future__ import annotations

from warmd.client.events import ChildProgress, Progress
from warmd.client.group import GroupProgress
from warmd.ctl.render import Pace, group_bar, progress_bar


def report(done, total=None, message=""):
    return Progress("job", 1, done, total, message)


def test_a_known_total_shows_percentage_elapsed_rate_and_eta():
    pace = Pace()
    pace.update(0, now=100.0)
    pace.update(40, now=110.0)
    line = progress_bar(report(40, 100, "well B03"), 120, pace, now=110.0)
    assert line.startswith("[") and " 40/100 40% 10.00s 4/s ETA 15.00s well B03" in line


def test_an_unknown_total_spins_and_counts():
    pace = Pace()
    frames = []
    for i, now in enumerate((0.0, 1.0, 2.0)):
        pace.update(i * 5, now=now)
        frames.append(progress_bar(report(i * 5), 80, pace, now=now))
    assert [f[0] for f in frames] == ["/", "-", "\\"]  # it turns with each report
    assert frames[-1] == "\\ 10 2.00s 5/s"


def test_a_group_gets_one_bar_with_its_jobs_and_eta():
    pace = Pace()
    pace.update(0, now=0.0)
    pace.update(3, now=6.0)
    last = ChildProgress("group", 9, "child", "well", "running", 1, 2, "", {"well": "C04"}, 3, 12)
    line = group_bar(GroupProgress(3, 12, {}), last, 120, pace, now=6.0)
    assert " 3/12 jobs 25% 6.00s 0.50/s ETA 18.00s well=C04" in line


def test_the_line_fits_the_terminal():
    pace = Pace()
    pace.update(1, now=0.0)
    assert len(progress_bar(report(1, 3, "x" * 300), 60, pace, now=1.0)) <= 59
