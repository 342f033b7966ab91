"""Every write a user's request makes in the inference app: storing an upload, queueing a job,
cancelling one. Views and the API call these; the job's own changes of state are methods of
:class:`inference.models.SegmentationJob`, the worker's task is :mod:`inference.tasks`.

Paths stored on rows are relative to ``CTSPINE_MEDIA_DIR`` (uploads and results) or
``CTSPINE_DATA_ROOT`` (dataset cases) and are resolved in :mod:`inference.jobs`, never outside
their root.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from ctspine.atomic import temp_name
from inference import dicom_zip, jobs, uploads
from inference.dicom_zip import ZipLimits
from inference.jobs import JobInputError, JobStateError, media_root
from inference.model_settings import configured_model
from inference.models import SegmentationJob, Upload
from inference.nnunet.config import check_model_folder
from inference.tasks import enqueue
from inference.uploads import IncomingFile, UploadError
from viewer.models import Case
from viewer.tiles.volumes import volume_cache


def upload_limit_bytes() -> int:
    """CTSPINE_UPLOAD_MAX_MB in bytes: the most one upload (image and label together) may send."""
    return int(settings.CTSPINE_UPLOAD_MAX_MB) * 1024 * 1024


def too_large_message() -> str:
    return (
        f"The upload is larger than the limit of {upload_limit_bytes() >> 20} MB"
        " (CTSPINE_UPLOAD_MAX_MB) for the image and label together."
    )


def incoming_dir() -> Path:
    """Where uploads stream while they arrive (beside their final place: moving is a rename)."""
    return media_root() / "incoming"


# --- uploads -------------------------------------------------------------------------------------


def create_upload(
    *,
    user,
    image: IncomingFile,
    label: IncomingFile | None = None,
    zip_limits: ZipLimits | None = None,
) -> Upload:
    """Check and store an uploaded image (NIfTI, or a zip of one DICOM series, converted to
    NIfTI) and optional ground truth; returns the saved Upload.

    Raises :class:`UploadError` with a message for the user. Whatever happens, the received files
    are consumed (moved or deleted) and a refused upload leaves nothing behind.
    """
    key = uuid.uuid4().hex
    relative = Path("uploads") / key
    final = media_root() / relative
    # A folder, published whole by one os.replace (atomic_write is for single files).
    work = temp_name(final)
    size = sum(f.path.stat().st_size for f in (image, label) if f is not None)
    try:
        work.mkdir(parents=True)
        kind = uploads.sniff_kind(image)
        dicom = None
        if kind == "zip":
            limits = zip_limits or ZipLimits(max_expanded_bytes=4 * upload_limit_bytes())
            files = dicom_zip.extract_zip(image, work / "dicom", limits=limits)
            image_file = "image.nii.gz"
            dicom = dicom_zip.dicom_series_to_nifti(
                files,
                work / image_file,
                name=image.name,
                max_decoded_bytes=dicom_zip.decoded_budget(image, limits),
            )
            shutil.rmtree(work / "dicom")
            stored = IncomingFile(path=work / image_file, name=image.name)
        else:
            image_file = uploads.nifti_file_name("image", image)
            uploads.move_into(image, work / image_file)
            stored = IncomingFile(path=work / image_file, name=image.name)
        facts = uploads.check_image(stored)
        label_file, label_facts = "", None
        if label is not None:
            if uploads.sniff_kind(label, field="label") != "nifti":
                raise UploadError(
                    f"{label.name}: the ground truth must be a NIfTI label map (.nii, .nii.gz)",
                    field="label",
                )
            label_file = uploads.nifti_file_name("label", label)
            uploads.move_into(label, work / label_file)
            label_facts = uploads.check_label(
                IncomingFile(path=work / label_file, name=label.name), image=facts
            )
        os.replace(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        for received in (image, label):
            if received is not None:
                received.path.unlink(missing_ok=True)
    try:
        return Upload.objects.create(
            owner=user,
            kind=Upload.Kind.DICOM if dicom else Upload.Kind.NIFTI,
            image_name=image.name,
            label_name=label.name if label is not None else "",
            image_path=str(relative / image_file),
            label_path=str(relative / label_file) if label_file else "",
            size_bytes=size,
            shape=list(facts.shape),
            spacing_mm=[round(s, 6) for s in facts.spacing_mm],
            axis_codes=facts.axcodes,
            dicom_files=dicom.files if dicom else None,
            series_description=dicom.series_description if dicom else "",
            label_values=list(label_facts.values) if label_facts else [],
            warnings=[*(dicom.warnings if dicom else ()), *facts.warnings],
        )
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise


def create_upload_job(
    *, user, image: IncomingFile, label: IncomingFile | None = None, mode: str | None = None
) -> tuple[Upload, SegmentationJob]:
    """Store an upload (:func:`create_upload`) and queue its segmentation (:func:`create_job`).

    The per-user job limit is checked before the files are looked at; a job refused afterwards
    (too large on the model's grid) removes the upload again. Every refusal is an UploadError.
    """
    try:
        check_job_quota(user)
        upload = create_upload(user=user, image=image, label=label)
    except JobInputError as exc:
        raise UploadError(exc.message, field=None, status=exc.status) from None
    try:
        job = create_job(user=user, upload=upload, mode=mode)
    except JobInputError as exc:
        delete_upload(upload)
        raise UploadError(exc.message, field="image", status=exc.status) from None
    except BaseException:
        delete_upload(upload)
        raise
    return upload, job


# --- jobs ----------------------------------------------------------------------------------------


def max_active_jobs() -> int:
    """CTSPINE_MAX_ACTIVE_JOBS_PER_USER: how many queued plus running jobs one user may have."""
    return int(settings.CTSPINE_MAX_ACTIVE_JOBS_PER_USER)


def check_job_quota(user) -> None:
    """JobInputError (429) when ``user`` already has the most queued plus running jobs allowed."""
    active = SegmentationJob.objects.active_for(user).count()
    if active >= max_active_jobs():
        raise JobInputError(
            f"You already have {active} jobs queued or running; at most {max_active_jobs()} are"
            " allowed at once (CTSPINE_MAX_ACTIVE_JOBS_PER_USER). Wait for one to finish or cancel"
            " one.",
            status=429,
        )


def model_grid_shape(
    shape: Sequence[int], spacing_mm: Sequence[float], target_spacing_mm: Sequence[float]
) -> tuple[int, ...]:
    """The shape (voxels, same axis order) of a volume of ``shape`` voxels of ``spacing_mm`` once
    resampled to ``target_spacing_mm``, as nnU-Net resamples it (extent / target, rounded)."""
    return tuple(
        max(1, round(n * s / t))
        for n, s, t in zip(shape, spacing_mm, target_spacing_mm, strict=True)
    )


def check_model_grid(*, name: str, shape, spacing_mm, mode: str) -> None:
    """JobInputError (413) when the volume (``shape`` voxels of ``spacing_mm`` mm, RAS order)
    would exceed CTSPINE_MAX_MODEL_VOXELS on the model's grid: a coarse header can ask the model
    to work on a thousand times the voxels the file holds."""
    info = check_model_folder(configured_model(mode))
    target = tuple(reversed(info.spacing_mm))  # plans.json is (k, j, i); the volume is (i, j, k)
    grid = model_grid_shape(shape, spacing_mm, target)
    voxels = math.prod(grid)
    limit = int(settings.CTSPINE_MAX_MODEL_VOXELS)
    if voxels > limit:
        raise JobInputError(
            f"{name}: {' x '.join(map(str, shape))} voxels of"
            f" {' x '.join(f'{s:g}' for s in spacing_mm)} mm become"
            f" {' x '.join(map(str, grid))} = {voxels / 1e6:.1f} million voxels on the model's"
            f" {' x '.join(f'{t:g}' for t in target)} mm grid; at most {limit / 1e6:.1f} million"
            " are segmented (CTSPINE_MAX_MODEL_VOXELS)",
            status=413,
        )


def create_job(
    *,
    user,
    upload: Upload | None = None,
    case: Case | None = None,
    mode: str | None = None,
    check_quota: bool = True,
) -> SegmentationJob:
    """Queue a segmentation of ``upload`` (the user's own) or of a dataset ``case``.

    The model settings are checked first: nothing is stored when they are unusable (raises
    ModelConfigError). Refused with JobInputError: a volume too large on the model's grid (413),
    a user at the limit of queued plus running jobs (429; ``check_quota=False`` for the jobs of a
    staff batch, which queues one job per case on purpose and is bounded by its split). The task
    is enqueued when the transaction commits, so a worker never looks for a job row that is not
    there yet.
    """
    if (upload is None) == (case is None):
        raise JobInputError("give either an upload or a dataset case")
    if upload is not None and upload.owner_id != user.pk:
        raise JobInputError("no such upload", status=404)
    if case is not None:
        jobs.check_case(case)
    mode = mode or settings.CTSPINE_NNUNET_MODE
    configured_model(mode)
    if upload is not None:
        check_model_grid(
            name=upload.image_name, shape=upload.shape, spacing_mm=upload.spacing_mm, mode=mode
        )
    elif case.shape and case.spacing:
        check_model_grid(name=case.case_id, shape=case.shape, spacing_mm=case.spacing, mode=mode)
    with transaction.atomic():
        # Lock the user's row: two requests at once cannot both pass the limit.
        get_user_model().objects.select_for_update().only("pk").get(pk=user.pk)
        if check_quota:
            check_job_quota(user)
        job = SegmentationJob.objects.create(
            owner=user,
            upload=upload,
            case=case,
            title=upload.image_name if upload is not None else case.case_id,
            mode=mode,
            stage="queued",
        )
        transaction.on_commit(lambda: enqueue(job.pk))
    return job


def delete_upload(upload: Upload) -> None:
    """Delete an upload, its jobs and every file of them (their volume-cache entries too);
    JobStateError (409) while one of its jobs runs (cancel it first)."""
    for job in upload.jobs.all():
        delete_job(job)
    folder = jobs.media_path(upload.image_path).parent
    upload.delete()
    _delete_files(folder)


def _delete_files(folder: Path) -> None:
    """Delete ``folder`` and the volume-cache entries of the files in it."""
    cache = volume_cache()
    for path in folder.rglob("*") if folder.is_dir() else ():
        if path.is_file():
            cache.delete_source(path)
    shutil.rmtree(folder, ignore_errors=True)


def delete_job(job: SegmentationJob) -> None:
    """Delete a job that is not running, and its result files with their volume-cache entries;
    JobStateError (409) while it runs (its worker is writing there: cancel it first)."""
    if not job.delete_unless_running():
        raise JobStateError(
            f"job {job.pk} is running; cancel it, then delete it once it has stopped"
        )
    _delete_files(jobs.results_dir(job))


def cancel_job(job: SegmentationJob) -> SegmentationJob:
    """Cancel a queued job at once, ask a running one to stop; JobStateError once finished."""
    if not job.cancel():
        raise JobStateError(f"job {job.pk} has already {job.status}; there is nothing to cancel")
    return job
