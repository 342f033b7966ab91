"""A batch: one model run over the cases of a split (optionally narrowed by the catalog filters),
one :class:`inference.models.SegmentationJob` per case, ending in an evaluation run.

The cases' own lives (queued, running, re-queued after a dead worker, done, failed, cancelled) are
their jobs' lives; a batch adds only its own state: running while any case is active, then
evaluating (one task computes Table 2 over the predictions), then done, or cancelled. Each change
is a conditional update on the state it starts from, so however many workers finish cases at the
same moment, exactly one of them closes the batch.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef
from django.urls import reverse
from django.utils import timezone

from batches.progress import BatchProgress, CaseRow, batch_progress
from evaluation.models import EVALUATED_SPLITS, EvaluationRun
from inference.models import SegmentationJob

# The evaluation run page's URL name (evaluation/urls.py).
EVALUATION_RUN_URL = "evaluation:run"


def _active_cases():
    """Active jobs of the batch in the outer query (for Exists)."""
    return SegmentationJob.objects.active().filter(batch_case__batch=OuterRef("pk"))


class BatchQuerySet(models.QuerySet):
    def running(self):
        return self.filter(status=Batch.Status.RUNNING)

    def without_active_cases(self):
        return self.exclude(Exists(_active_cases()))

    def close(self, batch_id: int) -> str | None:
        """running -> evaluating (or cancelled, when a cancel was asked) once no case of the
        batch is queued or running; returns the new status, or None when the batch is not
        running or still has active cases (another process closed it, or work remains)."""
        now = timezone.now()
        base = self.running().without_active_cases().filter(pk=batch_id)
        if base.filter(cancel_requested=True).update(
            status=Batch.Status.CANCELLED, finished_at=now
        ):
            return Batch.Status.CANCELLED
        if base.update(status=Batch.Status.EVALUATING, cases_ended_at=now):
            return Batch.Status.EVALUATING
        return None

    def record_evaluation(self, batch_id: int, run: EvaluationRun) -> bool:
        """evaluating -> done, linked to its evaluation run."""
        return bool(
            self.filter(pk=batch_id, status=Batch.Status.EVALUATING).update(
                status=Batch.Status.DONE, evaluation=run, finished_at=timezone.now()
            )
        )

    def fail_evaluation(self, batch_id: int, message: str) -> bool:
        """evaluating -> failed, ``message`` saying why the evaluation could not run."""
        return bool(
            self.filter(pk=batch_id, status=Batch.Status.EVALUATING).update(
                status=Batch.Status.FAILED, error=message, finished_at=timezone.now()
            )
        )


class Batch(models.Model):
    """A model run over ``split`` (a key of ``evaluation.models.EVALUATED_SPLITS``), narrowed by
    ``filters`` (``viewer.filters.CaseFilter`` parameters: name -> list of values)."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        EVALUATING = "evaluating", "Evaluating"
        DONE = "done", "Done"
        FAILED = "failed", "Evaluation failed"
        CANCELLED = "cancelled", "Cancelled"

    FINAL = (Status.DONE, Status.FAILED, Status.CANCELLED)

    name = models.CharField(max_length=200)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="segmentation_batches"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    cases_ended_at = models.DateTimeField(null=True, blank=True)  # the last case ended
    finished_at = models.DateTimeField(null=True, blank=True)
    split = models.CharField(max_length=16, choices=[(s, s) for s in EVALUATED_SPLITS])
    filters = models.JSONField(default=dict, blank=True)
    mode = models.CharField(max_length=8, choices=SegmentationJob.Mode.choices)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.RUNNING, db_index=True
    )
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    evaluation = models.OneToOneField(
        EvaluationRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="batch"
    )

    objects = BatchQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"batch #{self.pk} {self.name} ({self.status})"

    def get_absolute_url(self) -> str:
        return reverse("batches:detail", args=[self.pk])

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL

    def evaluation_url(self) -> str:
        return reverse(EVALUATION_RUN_URL, args=[self.evaluation_id])

    def progress(self) -> BatchProgress:
        """Counts, cases per worker, throughput and ETA now (one query over the jobs)."""
        rows = self.jobs().values_list("status", "worker", "started_at", "finished_at")
        return batch_progress((CaseRow(*row) for row in rows), now=timezone.now())

    def jobs(self):
        """The batch's jobs (one per case), by case id."""
        return SegmentationJob.objects.filter(batch_case__batch=self).order_by("title")


class BatchCase(models.Model):
    """One case of a batch: its segmentation job (whose state, worker and error are the case's)."""

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="cases")
    job = models.OneToOneField(SegmentationJob, on_delete=models.CASCADE, related_name="batch_case")

    def __str__(self) -> str:
        return f"{self.job.title} in batch {self.batch_id}"
