"""Every write a user's request makes in the batches app: making a batch (one job per case, each
enqueued on the tasks backend like any job), cancelling one, and following one to its end.

The cases are ordinary :class:`inference.models.SegmentationJob` rows on dataset cases, so their
worker, heartbeat, re-queueing after a dead worker, failure reason and prediction (written in the
case's stored orientation by ``inference.pipeline``) are those of any job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from django.conf import settings
from django.db import transaction
from django.http import QueryDict

from batches import tasks
from batches.models import Batch, BatchCase
from evaluation.models import EVALUATED_SPLITS
from inference import services
from inference.models import SegmentationJob
from inference.tasks import reap_dead_jobs
from viewer.filters import CaseFilter
from viewer.models import Case

# The catalog filters a batch can narrow its split with (the split itself is the batch's own).
FILTERS = frozenset(CaseFilter.base_filters) - {"split", "ordering"}


class BatchError(Exception):
    """A batch cannot be made or changed as asked; ``status`` is the HTTP status a page gives."""

    def __init__(self, message: str, *, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def parse_filters(pairs: Sequence[str]) -> dict[str, list[str]]:
    """``["anomaly=lumbarization", "source=COLONOG", "source=MSD-T10"]`` -> name -> values."""
    filters: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise BatchError(f"a filter is written name=value, not {pair!r}")
        filters.setdefault(name.strip(), []).append(value.strip())
    return filters


def select_cases(split: str, filters: Mapping[str, Sequence[str]]):
    """The catalog cases of ``split`` matching ``filters`` (``viewer.filters.CaseFilter``
    parameters) that can be segmented (downloaded, ingested without error), by case id."""
    if split not in EVALUATED_SPLITS:
        raise BatchError(f"split must be one of {', '.join(EVALUATED_SPLITS)}, not {split!r}")
    unknown = sorted(set(filters) - FILTERS)
    if unknown:
        raise BatchError(
            f"unknown filter {', '.join(unknown)}: use {', '.join(sorted(FILTERS))}"
            " (the split is chosen on its own)"
        )
    cases = Case.objects.filter(split__in=EVALUATED_SPLITS[split])
    if filters:
        query = QueryDict(mutable=True)
        for name, values in filters.items():
            query.setlist(name, list(values))
        case_filter = CaseFilter(query, queryset=cases)
        if not case_filter.is_valid():
            problems = "; ".join(
                f"{name}: {' '.join(errors)}" for name, errors in case_filter.errors.items()
            )
            raise BatchError(f"bad filter: {problems}")
        cases = case_filter.qs
    return cases.filter(downloaded=True, error="").order_by("case_id")


def create_batch(
    *,
    user,
    split: str,
    filters: Mapping[str, Sequence[str]] | None = None,
    mode: str | None = None,
    name: str = "",
) -> Batch:
    """Queue one segmentation job per selected case (see :func:`select_cases`) as a batch of
    ``user`` (staff only). The model settings are checked before anything is stored (raises
    ModelConfigError); each job's task is enqueued when the transaction commits."""
    if not user.is_staff:
        raise BatchError("only staff can run a model over a split", status=403)
    filters = {name: list(values) for name, values in (filters or {}).items()}
    cases = list(select_cases(split, filters))
    if not cases:
        raise BatchError(f"no downloaded case of {split} matches these filters")
    mode = mode or settings.CTSPINE_NNUNET_MODE
    if mode not in SegmentationJob.Mode.values:
        raise BatchError(f"mode must be one of {', '.join(SegmentationJob.Mode.values)}")
    with transaction.atomic():
        batch = Batch.objects.create(
            name=name or f"{split} {mode}",
            created_by=user,
            split=split,
            filters=filters,
            mode=mode,
        )
        for case in cases:
            # One job per case on purpose: the per-user quota is for interactive jobs.
            job = services.create_job(user=user, case=case, mode=mode, check_quota=False)
            BatchCase.objects.create(batch=batch, job=job)
    return batch


def cancel_batch(batch: Batch) -> Batch:
    """Cancel every queued case at once and ask running ones to stop; the batch ends as
    cancelled (without evaluation) when its last running case has stopped."""
    if batch.is_final or batch.status == Batch.Status.EVALUATING:
        raise BatchError(f"batch {batch.pk} has already {batch.status}", status=409)
    Batch.objects.filter(pk=batch.pk).update(cancel_requested=True)
    for job in batch.jobs().active():
        job.cancel()
    tasks.close_finished_batches()
    batch.refresh_from_db()
    return batch


def watch(batch: Batch, *, poll_s: float, tick: Callable[[Batch], None]) -> Batch:
    """Follow ``batch`` until it has ended, calling ``tick(batch)`` every ``poll_s`` seconds.
    Each round also does what idle workers cannot: re-queue or fail cases whose worker died,
    and close the batch once its last case has ended."""
    while True:
        reap_dead_jobs()
        tasks.close_finished_batches()
        batch.refresh_from_db()
        tick(batch)
        if batch.is_final:
            return batch
        time.sleep(poll_s)
