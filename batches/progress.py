"""How far a batch has come, from its jobs' rows alone (pure: no database, no request): counts
per state, cases per worker, throughput and an estimate of the time left. Times are datetimes
(UTC) and seconds; throughput is in cases per minute."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from inference.models import SegmentationJob

Status = SegmentationJob.Status
ENDED = SegmentationJob.FINAL
WORKED = (Status.SUCCEEDED, Status.FAILED)  # ended by a worker (a cancel may end a queued case)


@dataclass(frozen=True)
class CaseRow:
    """What the progress needs of one case's job."""

    status: str
    worker: str
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class BatchProgress:
    total: int
    counts: dict[str, int]  # status -> cases (queued, running, succeeded, failed, cancelled)
    by_worker: dict[str, int] = field(default_factory=dict)  # worker -> cases it ended
    cases_per_minute: float | None = None  # cases ended per minute since the first started
    eta_s: float | None = None  # time left at that rate, for the queued and running cases

    @property
    def eta_text(self) -> str | None:
        return None if self.eta_s is None else time_left_text(self.eta_s)

    @property
    def ended(self) -> int:
        return sum(self.counts.get(status, 0) for status in ENDED)

    @property
    def remaining(self) -> int:
        return self.total - self.ended

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "counts": self.counts,
            "ended": self.ended,
            "by_worker": self.by_worker,
            "cases_per_minute": self.cases_per_minute,
            "eta_s": self.eta_s,
            "eta_text": self.eta_text,  # as the page shows it, so the page's script need not
        }


def time_left_text(seconds: float) -> str:
    """A time left as people read it: "less than a minute left", "about 17 min left", "about
    2 h 05 min left" (to the nearest minute)."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "less than a minute left"
    if minutes < 60:
        return f"about {minutes} min left"
    return f"about {minutes // 60} h {minutes % 60:02d} min left"


def batch_progress(rows: Iterable[CaseRow], *, now: datetime) -> BatchProgress:
    """Counts, cases per worker, throughput and ETA of a batch whose cases are ``rows``.

    Throughput is measured from the first case's start to the last case's end (or ``now`` while
    cases remain), so it includes every worker's idle gaps; cancelled cases count as ended but
    not as work done by a worker.
    """
    rows = list(rows)
    counts = Counter(row.status for row in rows)
    by_worker = Counter(row.worker for row in rows if row.status in WORKED and row.worker)
    ended = sum(counts[status] for status in ENDED)
    remaining = len(rows) - ended
    starts = [row.started_at for row in rows if row.started_at is not None]
    ends = [row.finished_at for row in rows if row.status in ENDED and row.finished_at]
    rate = eta = None
    worked = sum(by_worker.values())
    if starts and worked:
        until = max(ends) if remaining == 0 and ends else now
        minutes = (until - min(starts)).total_seconds() / 60
        if minutes > 0:
            rate = worked / minutes
            eta = remaining / rate * 60
    return BatchProgress(
        total=len(rows),
        counts={str(status): counts[status] for status in (Status.QUEUED, Status.RUNNING, *ENDED)},
        by_worker=dict(sorted(by_worker.items())),
        cases_per_minute=rate,
        eta_s=eta,
    )
