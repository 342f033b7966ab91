"""The life of a segmentation job row: its files, and each change of state a worker or the reaper
makes (claim, start, finish, fail, cancel, reap). Below both :mod:`inference.tasks` and
:mod:`inference.services`, so neither imports the other's internals.

Every change is a conditional update on the state it starts from (status, attempt number,
heartbeat), so two processes racing on one job cannot both win. Times are in seconds.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ctspine.dataset.layout import PathOutsideRoot, resolve_inside
from inference.models import SegmentationJob
from inference.pipeline import SegmentationOutcome
from viewer.models import Case
from viewer.tiles.volumes import VolumeSet

logger = logging.getLogger(__name__)

Status = SegmentationJob.Status
MAX_ATTEMPTS = 2  # a job whose worker died is re-queued once, then failed
DEFAULT_HEARTBEAT_S = 2.0
DEFAULT_STALE_AFTER_S = 120.0


class JobInputError(Exception):
    """A job cannot be made or run from what it names (a case not downloaded, a foreign upload,
    a file gone). ``status`` is the HTTP status an API gives it."""

    def __init__(self, message: str, *, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


class JobStateError(JobInputError):
    """The job is not in a state that allows this (cancelling a finished job)."""

    def __init__(self, message: str):
        super().__init__(message, status=409)


def heartbeat_interval_s() -> float:
    """How often a running job's worker writes its heartbeat and progress."""
    return float(getattr(settings, "CTSPINE_JOB_HEARTBEAT_S", DEFAULT_HEARTBEAT_S))


def stale_after_s() -> float:
    """How long without a heartbeat before a running job's worker is taken for dead."""
    return float(getattr(settings, "CTSPINE_JOB_STALE_AFTER_S", DEFAULT_STALE_AFTER_S))


# --- files ---------------------------------------------------------------------------------------


def media_root() -> Path:
    return Path(settings.CTSPINE_MEDIA_DIR).resolve()


def media_path(relative: str) -> Path:
    """A stored relative path resolved inside the media root (PathOutsideRoot otherwise)."""
    return resolve_inside(media_root(), relative)


def results_dir(job: SegmentationJob) -> Path:
    return media_root() / "jobs" / str(job.pk)


def check_case(case: Case) -> None:
    """Raise JobInputError unless the dataset case can be segmented."""
    if not case.downloaded:
        raise JobInputError(f"case {case.case_id} is not downloaded: its image is not on disk")
    if case.error:
        raise JobInputError(f"case {case.case_id} could not be ingested: {case.error}")


@dataclass(frozen=True)
class JobFiles:
    """The files of a job: the CT, its ground truth (or None) and the prediction (or None)."""

    image: Path
    reference: Path | None
    prediction: Path | None


def job_files(job: SegmentationJob) -> JobFiles:
    """Resolve a job's files inside their roots. Raises JobInputError when the input is gone."""
    try:
        if job.upload_id is not None:
            image = media_path(job.upload.image_path)
            reference = media_path(job.upload.label_path) if job.upload.label_path else None
        elif job.case is not None:
            check_case(job.case)
            root = settings.CTSPINE_DATA_ROOT
            image = resolve_inside(root, job.case.image_path)
            reference = resolve_inside(root, job.case.label_path) if job.case.has_label else None
        else:
            raise JobInputError(
                "the dataset case of this job is no longer in the catalog", status=404
            )
        prediction = media_path(job.prediction_path) if job.prediction_path else None
    except PathOutsideRoot as exc:
        raise JobInputError(str(exc), status=409) from None
    if not image.exists():
        raise JobInputError(f"the image of job {job.pk} is missing on disk", status=404)
    return JobFiles(image=image, reference=reference, prediction=prediction)


def job_volumes(job: SegmentationJob) -> VolumeSet:
    """What the viewer shows for a job: the CT, and once it succeeded the prediction and the
    ground truth (which adds the comparison layer). Private: never cached by shared caches."""
    files = job_files(job)
    if job.status != Status.SUCCEEDED or files.prediction is None:
        return VolumeSet(image=files.image, public=False)
    return VolumeSet(
        image=files.image, labels=files.prediction, reference=files.reference, public=False
    )


# --- a worker's transitions -----------------------------------------------------------------------


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_job(job_id: int) -> SegmentationJob | None:
    """Move a queued job to running for this worker; None when it is not queued any more
    (cancelled, or already claimed through a duplicate task)."""
    now = timezone.now()
    claimed = SegmentationJob.objects.filter(pk=job_id, status=Status.QUEUED).update(
        status=Status.RUNNING,
        attempts=F("attempts") + 1,
        started_at=now,
        heartbeat_at=now,
        finished_at=None,
        worker=worker_name(),
        stage="loading model",
        progress=0.0,
        error="",
    )
    if not claimed:
        return None
    return SegmentationJob.objects.select_related("upload", "case").get(pk=job_id)


def _running(job: SegmentationJob):
    """The job's row, only while it is still this attempt's running job."""
    return SegmentationJob.objects.filter(pk=job.pk, status=Status.RUNNING, attempts=job.attempts)


def start_run(job: SegmentationJob, *, device: str, model: dict, load_s: float) -> None:
    """Record which model and device a claimed job runs on, and how long the wait was."""
    timings = {**job.timings, "load_model_s": round(load_s, 4)}
    if job.started_at and job.created_at:
        timings["queue_wait_s"] = round((job.started_at - job.created_at).total_seconds(), 4)
    _running(job).update(device=device, model=model, timings=timings)
    job.device, job.model, job.timings = device, model, timings


def beat(job: SegmentationJob, *, progress: float, stage: str) -> tuple[bool, bool]:
    """Write heartbeat, progress and stage; returns (still this worker's job, cancel asked)."""
    if not _running(job).update(heartbeat_at=timezone.now(), progress=progress, stage=stage):
        return False, False
    cancel = _running(job).filter(cancel_requested=True).exists()
    return True, cancel


def finish_job(job: SegmentationJob, outcome: SegmentationOutcome) -> bool:
    """Store a finished run's results; False when the job was taken away meanwhile (reaped)."""
    relative = outcome.prediction_path.resolve().relative_to(media_root())
    timings = {**job.timings, **{k: round(v, 4) for k, v in outcome.timings.items()}}
    now = timezone.now()
    return bool(
        _running(job).update(
            status=Status.SUCCEEDED,
            progress=1.0,
            stage="done",
            finished_at=now,
            heartbeat_at=now,
            prediction_path=str(relative),
            labels_present=list(outcome.labels_present),
            centroids={
                kind: {str(label): value for label, value in found.items()}
                for kind, found in outcome.centroids.items()
            },
            metrics=outcome.comparison,
            device=outcome.device,
            timings=timings,
        )
    )


def fail_job(job: SegmentationJob, message: str) -> None:
    _running(job).update(
        status=Status.FAILED, stage="failed", finished_at=timezone.now(), error=message
    )


def mark_cancelled(job: SegmentationJob) -> None:
    """A running job stopped on request: cancelled, its partial results removed."""
    if _running(job).update(status=Status.CANCELLED, stage="cancelled", finished_at=timezone.now()):
        shutil.rmtree(results_dir(job), ignore_errors=True)


# --- requests from users and the reaper -----------------------------------------------------------


def cancel_job(job: SegmentationJob) -> SegmentationJob:
    """Cancel a queued job at once; ask a running one to stop (its worker notices within about a
    heartbeat). Raises JobStateError for a job that already finished."""
    queued = SegmentationJob.objects.filter(pk=job.pk, status=Status.QUEUED)
    running = SegmentationJob.objects.filter(pk=job.pk, status=Status.RUNNING)
    if not queued.update(
        status=Status.CANCELLED,
        stage="cancelled",
        finished_at=timezone.now(),
        cancel_requested=True,
    ) and not running.update(cancel_requested=True, stage="cancelling"):
        job.refresh_from_db()
        raise JobStateError(f"job {job.pk} has already {job.status}; there is nothing to cancel")
    job.refresh_from_db()
    return job


def reap_stale_jobs(*, requeue: Callable[[int], None], now=None) -> list[tuple[int, str]]:
    """Running jobs whose worker stopped sending heartbeats (killed, machine gone) are re-queued
    once (``requeue(job_id)`` after commit), then failed with the reason; a job whose cancel was
    asked is cancelled. Returns (job id, new status) pairs.

    Safe from any number of processes at once: each change is conditional on the heartbeat the
    decision was based on.
    """
    now = now or timezone.now()
    limit = stale_after_s()
    changed = []
    for job in SegmentationJob.objects.stale(before=now - timedelta(seconds=limit)):
        seen = job.heartbeat_at or job.started_at
        reason = (
            f"The worker {job.worker or '(unknown)'} stopped responding: no heartbeat since"
            f" {seen:%Y-%m-%d %H:%M:%S} UTC (more than {limit:g} s)."
        )
        if job.cancel_requested:
            update = {"status": Status.CANCELLED, "stage": "cancelled", "finished_at": now}
        elif job.attempts < MAX_ATTEMPTS:
            update = {
                "status": Status.QUEUED,
                "stage": "re-queued",
                "progress": 0.0,
                "notes": [*job.notes, f"{reason} Re-queued (attempt {job.attempts + 1})."],
            }
        else:
            update = {
                "status": Status.FAILED,
                "stage": "failed",
                "finished_at": now,
                "error": f"{reason} It was tried {job.attempts} times.",
            }
        same = SegmentationJob.objects.filter(
            pk=job.pk, status=Status.RUNNING, attempts=job.attempts, heartbeat_at=job.heartbeat_at
        )
        with transaction.atomic():
            if not same.update(**update):
                continue  # its worker came back, or another reaper was first
            if update["status"] == Status.QUEUED:
                transaction.on_commit(lambda pk=job.pk: requeue(pk))
        logger.warning("job %s: %s -> %s", job.pk, reason, update["status"])
        changed.append((job.pk, str(update["status"])))
    return changed
