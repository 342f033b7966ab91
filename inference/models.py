"""Uploaded CT scans and the segmentation jobs run on them (or on dataset cases).

Files live under ``settings.CTSPINE_MEDIA_DIR``: an upload in ``uploads/<key>/`` (``image.nii.gz``
or ``.nii``, optional ``label.nii.gz``), a job's results in ``jobs/<id>/``. Paths are stored
relative to that root and resolved by :mod:`inference.services`, never joined by hand.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from viewer.models import Case

MODES = (("fast", "Fast: no test-time mirroring"), ("accurate", "Accurate: test-time mirroring"))


class UploadQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Uploads belong to the user who made them; nobody else sees them."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(owner=user)


class Upload(models.Model):
    """A CT a user uploaded (a NIfTI file or a converted DICOM series), checked and stored."""

    class Kind(models.TextChoices):
        NIFTI = "nifti", "NIfTI file"
        DICOM = "dicom", "DICOM series (zip)"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ct_uploads"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    image_name = models.CharField(max_length=255)  # the user's file name, for display
    label_name = models.CharField(max_length=255, blank=True)
    image_path = models.CharField(max_length=255)  # relative to CTSPINE_MEDIA_DIR
    label_path = models.CharField(max_length=255, blank=True)
    size_bytes = models.BigIntegerField()  # what the user sent (image + label)
    # Geometry in RAS+ order (as the viewer shows it); stored orientation as axis codes.
    shape = models.JSONField(default=list)
    spacing_mm = models.JSONField(default=list)
    axis_codes = models.CharField(max_length=3, blank=True)
    dicom_files = models.PositiveIntegerField(null=True)
    series_description = models.CharField(max_length=255, blank=True)
    label_values = models.JSONField(default=list)  # label values 1-25 in the ground truth
    warnings = models.JSONField(default=list)  # sentences shown to the user

    objects = UploadQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"upload #{self.pk} {self.image_name}"

    @property
    def has_label(self) -> bool:
        return bool(self.label_path)


class SegmentationJobQuerySet(models.QuerySet):
    def visible_to(self, user):
        """A user's own jobs only (dataset-case jobs included): results are private."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(owner=user)

    def active(self):
        return self.filter(
            status__in=(SegmentationJob.Status.QUEUED, SegmentationJob.Status.RUNNING)
        )

    def stale(self, *, before):
        """Running jobs whose worker has not reported since ``before`` (a datetime)."""
        return self.filter(status=SegmentationJob.Status.RUNNING).filter(
            Q(heartbeat_at__lt=before) | Q(heartbeat_at__isnull=True, started_at__lt=before)
        )


class SegmentationJob(models.Model):
    """One nnU-Net run on an upload or a dataset case, from queue to result.

    ``progress`` is a fraction 0-1; timings are in seconds. A running job's worker writes
    ``heartbeat_at`` every few seconds; one that stops is failed or re-queued by
    ``services.reap_stale_jobs``. ``attempts`` counts the workers that started it.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    FINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="segmentation_jobs"
    )
    upload = models.ForeignKey(
        Upload, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs"
    )
    case = models.ForeignKey(
        Case, null=True, blank=True, on_delete=models.SET_NULL, related_name="segmentation_jobs"
    )
    title = models.CharField(max_length=255)  # upload file name or case id, for lists
    mode = models.CharField(max_length=8, choices=MODES, default="accurate")

    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    progress = models.FloatField(default=0.0)
    stage = models.CharField(max_length=64, blank=True)
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    task_id = models.CharField(max_length=64, blank=True)  # the tasks backend's id of the run
    worker = models.CharField(max_length=128, blank=True)  # host:pid of the worker

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    device = models.CharField(max_length=32, blank=True)  # "cpu", "cuda:0"
    model = models.JSONField(default=dict, blank=True)  # ModelInfo.as_dict() and the mode
    timings = models.JSONField(default=dict, blank=True)  # seconds per stage
    error = models.TextField(blank=True)  # why it failed, in words for the user
    notes = models.JSONField(default=list, blank=True)  # events worth telling (re-queued, ...)

    prediction_path = models.CharField(max_length=255, blank=True)  # relative to the media dir
    labels_present = models.JSONField(default=list, blank=True)  # predicted values 1-25
    # {"prediction": {"20": {"mm": [x, y, z], "voxel": [i, j, k]}}, "reference": {...}}: RAS+.
    centroids = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(null=True, blank=True)  # ctspine.metrics Comparison.to_dict()

    objects = SegmentationJobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"job #{self.pk} {self.title} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL

    @property
    def has_reference(self) -> bool:
        """Ground truth exists: an uploaded label map, or the dataset case's labels."""
        if self.upload_id is not None:
            return self.upload.has_label
        return self.case is not None and self.case.has_label

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()
