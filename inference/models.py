"""Uploaded CT scans and the segmentation jobs run on them (or on dataset cases).

Files live under ``settings.CTSPINE_MEDIA_DIR``: an upload in ``uploads/<key>/`` (``image.nii.gz``
or ``.nii``, optional ``label.nii.gz``), a job's results in ``jobs/<id>/``. Paths are stored
relative to that root and resolved by :mod:`inference.jobs`, never joined by hand.

Every change of a job's state is a method here (:class:`SegmentationJob` and its queryset), written
as a conditional update on the state it starts from (status, attempt number, heartbeat), so two
processes racing on one job cannot both win.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models, transaction
from django.db.models import Count, F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone

from viewer.models import Case

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 2  # a job whose worker died is re-queued once, then failed


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

    def active_for(self, user):
        """``user``'s queued and running jobs (what the per-user limit counts)."""
        return self.active().filter(owner=user)

    def next_in_turn(self) -> SegmentationJob | None:
        """The queued job to start next. Users take turns rather than first come, first served:
        the owner with the fewest running jobs goes first, then the owner whose last job started
        longest ago (one who never had a job started, first), then that owner's oldest job."""
        Status = SegmentationJob.Status
        owner_jobs = SegmentationJob.objects.filter(owner=OuterRef("owner")).order_by()
        running = (
            owner_jobs.filter(status=Status.RUNNING)
            .values("owner")
            .annotate(count=Count("pk"))
            .values("count")
        )
        last_start = (
            owner_jobs.filter(started_at__isnull=False)
            .order_by("-started_at")
            .values("started_at")[:1]
        )
        return (
            self.filter(status=Status.QUEUED)
            .annotate(
                owner_running=Coalesce(Subquery(running), 0),
                owner_last_start=Subquery(last_start),
            )
            .order_by(
                "owner_running", F("owner_last_start").asc(nulls_first=True), "created_at", "pk"
            )
            .first()
        )

    def claim_in_turn(
        self, *, worker: str, task_id: str = "", tries: int = 5
    ) -> SegmentationJob | None:
        """Claim :meth:`next_in_turn` for ``worker``; None when nothing is queued. Another worker
        may claim the same job first: then the next in turn is tried, ``tries`` times at most."""
        for _ in range(tries):
            job = self.next_in_turn()
            if job is None:
                return None
            claimed = self.claim(job.pk, worker=worker, task_id=task_id)
            if claimed is not None:
                return claimed
        return None

    def stale(self, *, before: datetime):
        """Running jobs whose worker has not reported since ``before``."""
        return self.filter(status=SegmentationJob.Status.RUNNING).filter(
            Q(heartbeat_at__lt=before) | Q(heartbeat_at__isnull=True, started_at__lt=before)
        )

    def claim(self, job_id: int, *, worker: str, task_id: str = "") -> SegmentationJob | None:
        """queued -> running, for ``worker`` (host:pid) in the task ``task_id`` (the tasks
        backend's id of the run, when known); None when the job is not queued any more
        (cancelled, or already claimed through a duplicate task)."""
        now = timezone.now()
        running_task = {"task_id": task_id} if task_id else {}
        claimed = self.filter(pk=job_id, status=SegmentationJob.Status.QUEUED).update(
            **running_task,
            status=SegmentationJob.Status.RUNNING,
            attempts=F("attempts") + 1,
            started_at=now,
            heartbeat_at=now,
            finished_at=None,
            worker=worker,
            stage="loading model",
            progress=0.0,
            error="",
        )
        if not claimed:
            return None
        return self.select_related("upload", "case").get(pk=job_id)

    def fail_queued(self, job_id: int, message: str) -> bool:
        """queued -> failed, before any worker saw it (the tasks backend refused it)."""
        return bool(
            self.filter(pk=job_id, status=SegmentationJob.Status.QUEUED).update(
                status=SegmentationJob.Status.FAILED,
                stage="failed",
                finished_at=timezone.now(),
                error=message,
            )
        )

    def reap_stale(
        self,
        *,
        stale_after_s: float,
        requeue: Callable[[int], None],
        now: datetime | None = None,
    ) -> list[tuple[int, str]]:
        """Running jobs without a heartbeat for ``stale_after_s`` seconds (worker killed, machine
        gone): re-queued once (``requeue(job_id)`` after commit), then failed with the reason; a
        job whose cancel was asked is cancelled. Returns (job id, new status) pairs.

        Safe from any number of processes at once: each change is conditional on the heartbeat
        the decision was based on.
        """
        Status = SegmentationJob.Status
        now = now or timezone.now()
        changed = []
        for job in self.stale(before=now - timedelta(seconds=stale_after_s)):
            seen = job.heartbeat_at or job.started_at
            reason = (
                f"The worker {job.worker or '(unknown)'} stopped responding: no heartbeat since"
                f" {seen:%Y-%m-%d %H:%M:%S} UTC (more than {stale_after_s:g} s)."
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
            same = self.filter(
                pk=job.pk,
                status=Status.RUNNING,
                attempts=job.attempts,
                heartbeat_at=job.heartbeat_at,
            )
            with transaction.atomic():
                if not same.update(**update):
                    continue  # its worker came back, or another reaper was first
                if update["status"] == Status.QUEUED:
                    transaction.on_commit(lambda pk=job.pk: requeue(pk))
            logger.warning("job %s: %s -> %s", job.pk, reason, update["status"])
            changed.append((job.pk, str(update["status"])))
        return changed


class SegmentationJob(models.Model):
    """One nnU-Net run on an upload or a dataset case, from queue to result.

    ``progress`` is a fraction 0-1; timings are in seconds. A running job's worker writes
    ``heartbeat_at`` every few seconds; one that stops is failed or re-queued by
    :meth:`SegmentationJobQuerySet.reap_stale`. ``attempts`` counts the workers that started it.

    Life: queued -> (``objects.claim``) running -> ``finish`` / ``fail`` / ``stop_cancelled``;
    ``cancel`` ends a queued job at once and asks a running one to stop; ``objects.reap_stale``
    re-queues, fails or cancels a running job whose worker went silent. The methods of a running
    job act only while it is still the same attempt (``attempts``) and running: a worker whose
    job was reaped meanwhile changes nothing.
    """

    class Mode(models.TextChoices):
        FAST = "fast", "Fast: no test-time mirroring"
        ACCURATE = "accurate", "Accurate: test-time mirroring"

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
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.ACCURATE)

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

    def get_absolute_url(self) -> str:
        return reverse("inference:job-detail", args=[self.pk])

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL

    @property
    def has_reference(self) -> bool:
        """Ground truth exists: an uploaded label map, or the dataset case's labels."""
        if self.upload_id is not None:
            return self.upload.has_label
        return self.case is not None and self.case.has_label

    def file_names(self) -> list[str]:
        """The files a user can download: the image, the prediction once the job succeeded, and
        the ground truth where there is one."""
        names = ["image"]
        if self.status == self.Status.SUCCEEDED:
            names.append("prediction")
        if self.has_reference:
            names.append("reference")
        return names

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    # --- a worker's transitions (the job it claimed) ------------------------------------------

    def _running(self):
        """This job's row, only while it is still this attempt's running job."""
        return SegmentationJob.objects.filter(
            pk=self.pk, status=self.Status.RUNNING, attempts=self.attempts
        )

    def record_start(self, *, device: str, model: dict, load_s: float) -> None:
        """Which model and device the claimed job runs on, how long loading (s) and the queue
        wait (s) took."""
        timings = {**self.timings, "load_model_s": round(load_s, 4)}
        if self.started_at and self.created_at:
            timings["queue_wait_s"] = round((self.started_at - self.created_at).total_seconds(), 4)
        self._running().update(device=device, model=model, timings=timings)
        self.device, self.model, self.timings = device, model, timings

    def beat(self, *, progress: float, stage: str) -> tuple[bool, bool]:
        """Heartbeat with progress (0-1) and stage; returns (still this worker's job, cancel
        asked)."""
        if not self._running().update(heartbeat_at=timezone.now(), progress=progress, stage=stage):
            return False, False
        return True, self._running().filter(cancel_requested=True).exists()

    def finish(
        self,
        *,
        prediction_path: str,
        labels_present: list[int],
        centroids: dict,
        metrics: dict | None,
        device: str,
        timings: dict[str, float],
    ) -> bool:
        """running -> succeeded with the results (``prediction_path`` relative to the media
        directory, ``timings`` in s added to those recorded); False when the job was taken away
        meanwhile (reaped)."""
        now = timezone.now()
        return bool(
            self._running().update(
                status=self.Status.SUCCEEDED,
                progress=1.0,
                stage="done",
                finished_at=now,
                heartbeat_at=now,
                prediction_path=prediction_path,
                labels_present=labels_present,
                centroids=centroids,
                metrics=metrics,
                device=device,
                timings={**self.timings, **timings},
            )
        )

    def fail(self, message: str) -> bool:
        """running -> failed, ``message`` telling the user why."""
        return bool(
            self._running().update(
                status=self.Status.FAILED,
                stage="failed",
                finished_at=timezone.now(),
                error=message,
            )
        )

    def stop_cancelled(self) -> bool:
        """running -> cancelled, when its worker stopped on a cancel request."""
        return bool(
            self._running().update(
                status=self.Status.CANCELLED, stage="cancelled", finished_at=timezone.now()
            )
        )

    # --- a user's request ---------------------------------------------------------------------

    def delete_unless_running(self) -> bool:
        """Delete this job's row unless a worker runs it (a queued job's task then finds nothing
        to claim); False when it is running."""
        jobs = SegmentationJob.objects.filter(pk=self.pk).exclude(status=self.Status.RUNNING)
        return bool(jobs.delete()[0])

    def cancel(self) -> bool:
        """queued -> cancelled at once; running: ask its worker to stop (it notices within about
        a heartbeat). False when the job had already finished. Reloads the row."""
        jobs = SegmentationJob.objects.filter(pk=self.pk)
        done = jobs.filter(status=self.Status.QUEUED).update(
            status=self.Status.CANCELLED,
            stage="cancelled",
            finished_at=timezone.now(),
            cancel_requested=True,
        ) or jobs.filter(status=self.Status.RUNNING).update(
            cancel_requested=True, stage="cancelling"
        )
        self.refresh_from_db()
        return bool(done)
