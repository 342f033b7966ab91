"""The batch's own work on the tasks backend: closing a batch when its last case ends, and the
evaluation task that follows.

A batch's cases run as ordinary ``inference.tasks.segment_job`` tasks (one per case, on any
worker); a case re-queued after its worker died is enqueued by the job machinery as any job. So
the batch does not count on its own task running last: whenever a worker finishes a segmentation
task (``django_tasks``' ``task_finished`` signal, sent by the db and rq workers alike), every
running batch without an active case is closed, which also catches a case failed by the reaper.
``manage.py segment_split --wait`` and a cancel close batches the same way.
"""

from __future__ import annotations

import logging

from django.db import DatabaseError, transaction
from django.dispatch import receiver
from django_tasks import task
from django_tasks.signals import task_finished

from batches import evaluation
from batches.models import Batch
from evaluation.evaluate import EvaluationError
from inference.jobs import stale_after_s
from inference.tasks import (
    dead_jobs_reaped,
    fail_task_rows,
    failure_text,
    segment_job,
    stale_task_rows,
)

logger = logging.getLogger(__name__)


@task()
def evaluate_batch(batch_id: int) -> str:
    """Table 2 over a closed batch's predictions; links the run and the batch both ways."""
    if not Batch.objects.start_evaluation(batch_id, stale_after_s=stale_after_s()):
        return "skipped: the batch is not waiting for an evaluation (done, or being evaluated)"
    batch = Batch.objects.get(pk=batch_id)
    try:
        run = evaluation.evaluate_batch(batch)
    except EvaluationError as exc:
        logger.warning("the evaluation of batch %s could not run: %s", batch_id, exc)
        message = f"The evaluation could not run: {failure_text(exc)}"
        Batch.objects.fail_evaluation(batch_id, message)
        return f"failed: {failure_text(exc)}"
    except Exception as exc:
        Batch.objects.fail_evaluation(
            batch_id,
            f"The evaluation failed unexpectedly ({type(exc).__name__}: {failure_text(exc)})."
            " The worker's log has the details.",
        )
        raise
    Batch.objects.record_evaluation(batch_id, run)
    return f"evaluated: run {run.pk}"


def enqueue_evaluation(batch_id: int) -> None:
    """Hand a closed batch's evaluation to the tasks backend; a backend that cannot be reached
    fails the batch with the reason instead of leaving it evaluating forever."""
    try:
        evaluate_batch.enqueue(batch_id)
    except Exception as exc:  # any backend error (Redis down, database locked) is told the user
        logger.exception("could not enqueue the evaluation of batch %s", batch_id)
        Batch.objects.fail_evaluation(
            batch_id,
            f"The evaluation could not be queued ({type(exc).__name__}: {failure_text(exc)}).",
        )


def close_finished_batches() -> list[tuple[int, str]]:
    """Close every running batch whose cases have all ended: cancelled ones stop there, the
    others get their evaluation task (enqueued after commit). Safe from any number of processes
    at once. Returns (batch id, new status) pairs."""
    closed = []
    for batch_id in Batch.objects.running().without_active_cases().values_list("pk", flat=True):
        status = Batch.objects.close(batch_id)
        if status == Batch.Status.EVALUATING:
            transaction.on_commit(lambda pk=batch_id: enqueue_evaluation(pk))
        if status:
            logger.info("batch %s: all cases ended -> %s", batch_id, status)
            closed.append((batch_id, str(status)))
    return closed


@receiver(dead_jobs_reaped)
def reap_dead_evaluations(sender, **kwargs) -> list[tuple[int, str]]:
    """Wherever dead jobs are reaped (workers, ``reap_jobs``, ``segment_split --wait``), also
    re-queue once, or fail, the batch evaluations whose worker died."""
    changed = Batch.objects.reap_stale_evaluations(
        stale_after_s=stale_after_s(), requeue=enqueue_evaluation
    )
    for batch_id, what in changed:
        logger.warning("batch %s: its evaluation's worker died -> %s", batch_id, what)
    if changed:
        fail_dead_evaluation_rows([batch_id for batch_id, _ in changed], stale_after_s())
    return changed


def fail_dead_evaluation_rows(batch_ids: list[int], stale_after_s: float) -> int:
    """Mark FAILED the ``django_tasks_db`` rows of the evaluation tasks of ``batch_ids`` (whose
    evaluations were just reaped) still RUNNING, started more than ``stale_after_s`` seconds ago:
    their worker died, and the backend itself would show them running forever (a re-queued task
    has a row of its own, started later). Returns how many were failed."""
    running = stale_task_rows(evaluate_batch, stale_after_s=stale_after_s)
    if running is None:
        return 0
    reaped = set(batch_ids)
    dead = [
        row.pk for row in running.only("id", "args_kwargs") if _batch_of(row.args_kwargs) in reaped
    ]
    return fail_task_rows(
        running.filter(pk__in=dead),
        why=f"The worker running this evaluation stopped: no heartbeat for more than"
        f" {stale_after_s:g} s. The batch's evaluation was re-queued or failed by the reaper.",
    )


def _batch_of(args_kwargs) -> int | None:
    """The batch id an ``evaluate_batch`` task row was enqueued with."""
    try:
        args, kwargs = args_kwargs.get("args") or [], args_kwargs.get("kwargs") or {}
        return int(args[0] if args else kwargs["batch_id"])
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None


@receiver(task_finished)
def close_batches_after_a_case(sender, task_result, **kwargs) -> None:
    """After a worker's segmentation task: close the batches it may have completed."""
    if task_result.task.module_path != segment_job.module_path:
        return
    try:
        close_finished_batches()
    except DatabaseError:
        # The next finished case, segment_split --wait, or a page's cancel tries again.
        logger.warning("closing finished batches failed", exc_info=True)
