"""The files of a segmentation job (its CT, ground truth and prediction, resolved inside their
roots), the errors a job's input can raise, and the heartbeat settings. The job's changes of state
are methods of :class:`inference.models.SegmentationJob`. Times are in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from ctspine.dataset.layout import PathOutsideRoot, resolve_inside
from inference.models import SegmentationJob
from viewer.models import Case
from viewer.tiles.volumes import VolumeSet

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
    if job.status != SegmentationJob.Status.SUCCEEDED or files.prediction is None:
        return VolumeSet(image=files.image, public=False)
    return VolumeSet(
        image=files.image, labels=files.prediction, reference=files.reference, public=False
    )
