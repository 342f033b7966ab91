"""A batch: one model run over the cases of a split (optionally narrowed by the catalog filters),
one :class:`inference.models.SegmentationJob` per case, ending in an evaluation run.

The cases' own lives (queued, running, re-queued after a dead worker, done, failed, cancelled) are
their jobs' lives; a batch adds only its own state: running while any case is active, then
evaluating (one task computes Table 2 over the predictions), then done, or cancelled. Each change
is a conditional update on the state it starts from, so however many workers finish cases at the
same moment, exactly one of them closes the batch.

The evaluation writes a heartbeat (``evaluation_beat_at``) as it goes; an evaluation whose worker
died (no heartbeat for the jobs' stale limit) is handed to another worker once, then the batch
fails with the reason, as a job's would.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Exists, F, OuterRef, Q
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

    def start_evaluation(self, batch_id: int, *, stale_after_s: float) -> bool:
        """Claim the evaluation of an evaluating batch for the calling task: only when none is
        alive (never started, or its heartbeat is older than ``stale_after_s``). A duplicate task
        (one re-queued while the first still runs) gets False and stops."""
        now = timezone.now()
        alive = Q(evaluation_beat_at__gte=now - timedelta(seconds=stale_after_s))
        return bool(
            self.filter(pk=batch_id, status=Batch.Status.EVALUATING)
            .exclude(alive)
            .update(evaluation_beat_at=now, evaluation_attempts=F("evaluation_attempts") + 1)
        )

    def beat_evaluation(self, batch_id: int) -> None:
        """The running evaluation of ``batch_id`` is alive."""
        self.filter(pk=batch_id, status=Batch.Status.EVALUATING).update(
            evaluation_beat_at=timezone.now()
        )

    def reap_stale_evaluations(
        self, *, stale_after_s: float, requeue, max_attempts: int = 2
    ) -> list[tuple[int, str]]:
        """Evaluations whose worker died (started, no heartbeat for ``stale_after_s``): handed
        to ``requeue(batch_id)`` while fewer than ``max_attempts`` have started, else the batch
        fails. Returns (batch id, what happened) pairs; safe from any number of processes."""
        cutoff = timezone.now() - timedelta(seconds=stale_after_s)
        stale = self.filter(status=Batch.Status.EVALUATING, evaluation_beat_at__lt=cutoff)
        changed = []
        for batch_id, attempts in stale.values_list("pk", "evaluation_attempts"):
            if attempts < max_attempts:
                # Clearing the heartbeat lets the re-queued task claim it; the condition makes
                # one process of many do it.
                if stale.filter(pk=batch_id).update(evaluation_beat_at=None):
                    requeue(batch_id)
                    changed.append((batch_id, "evaluation re-queued"))
            elif stale.filter(pk=batch_id).update(
                status=Batch.Status.FAILED,
                finished_at=timezone.now(),
                error=(
                    f"The worker evaluating this batch stopped {attempts} times (no heartbeat"
                    f" for {stale_after_s:g} s). Its predictions are kept in"
                    f" batches/{batch_id}/predictions/ under the media folder: evaluate them"
                    " with manage.py evaluate."
                ),
            ):
                changed.append((batch_id, str(Batch.Status.FAILED)))
        return changed

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
    evaluation_beat_at = models.DateTimeField(null=True, blank=True)  # the evaluation's heartbeat
    evaluation_attempts = models.PositiveSmallIntegerField(default=0)  # evaluations started
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
