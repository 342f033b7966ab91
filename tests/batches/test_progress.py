"""A batch's progress from its jobs' rows (no database): counts, cases per worker, throughput
and ETA in the middle of a batch and at its end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from batches.progress import CaseRow, batch_progress, time_left_text
from inference.models import SegmentationJob

Status = SegmentationJob.Status
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


MID_BATCH = [
    CaseRow(Status.SUCCEEDED, "gpu-a:11", at(0), at(2)),
    CaseRow(Status.SUCCEEDED, "gpu-a:11", at(2), at(4)),
    CaseRow(Status.FAILED, "gpu-b:22", at(1), at(3)),  # a failed case is work done too
    CaseRow(Status.CANCELLED, "gpu-b:22", at(3), at(5)),  # stopped while running: not work done
    CaseRow(Status.CANCELLED, "", None, at(5)),  # cancelled while queued
    CaseRow(Status.RUNNING, "gpu-a:11", at(4), None),
    CaseRow(Status.RUNNING, "gpu-b:22", at(5), None),
    *[CaseRow(Status.QUEUED, "", None, None)] * 3,
]


def test_progress_in_the_middle_of_a_batch():
    progress = batch_progress(MID_BATCH, now=at(10))
    assert progress.total == 10
    assert progress.counts == {
        "queued": 3,
        "running": 2,
        "succeeded": 2,
        "failed": 1,
        "cancelled": 2,
    }
    assert (progress.ended, progress.remaining) == (5, 5)
    assert progress.by_worker == {"gpu-a:11": 2, "gpu-b:22": 1}  # the cancelled case left out
    # 3 cases worked in the 10 minutes since the first case started (idle gaps included) ...
    assert progress.cases_per_minute == pytest.approx(0.3)
    # ... so the 5 cases left (2 running, 3 queued) take about 5 / 0.3 minutes.
    assert progress.eta_s == pytest.approx(1000.0)
    assert progress.as_dict()["eta_s"] == pytest.approx(1000.0)  # the JSON stays in seconds


def test_progress_at_the_end_measures_until_the_last_case_ended():
    ended = [CaseRow(Status.SUCCEEDED, "gpu-a:11", at(0), at(4)), MID_BATCH[2]]
    progress = batch_progress(ended, now=at(60))  # read long after the end
    assert progress.cases_per_minute == pytest.approx(0.5) and progress.eta_s == 0


def test_no_rate_before_a_worker_has_ended_a_case():
    rows = [MID_BATCH[4], MID_BATCH[5], MID_BATCH[-1]]
    progress = batch_progress(rows, now=at(10))
    assert progress.counts["cancelled"] == progress.counts["running"] == 1
    assert progress.by_worker == {}
    assert progress.cases_per_minute is None and progress.eta_s is None


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "less than a minute left"),
        (29, "less than a minute left"),
        (31, "about 1 min left"),
        (1000, "about 17 min left"),
        (3569, "about 59 min left"),
        (3600, "about 1 h 00 min left"),
        (7500, "about 2 h 05 min left"),
        (90_000, "about 25 h 00 min left"),
    ],
)
def test_the_time_left_reads_in_minutes_and_hours(seconds, text):
    assert time_left_text(seconds) == text
    assert batch_progress([], now=T0).eta_text is None  # no estimate yet: nothing shown
