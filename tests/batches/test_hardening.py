"""Batch evaluations under the attacks and failures of issue 14: a failed evaluation's message
names files, not the server's paths (item 10); the tasks backend's row of an evaluation whose
worker died does not stay RUNNING (item 12)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from batches import services
from batches import tasks as batch_tasks
from batches.models import Batch
from evaluation.evaluate import EvaluationError
from inference.tasks import WORKER_DIED, reap_dead_jobs


@pytest.fixture
def evaluating(batch_settings, staff) -> Batch:
    batch = services.create_batch(user=staff, split="test_private")
    Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.EVALUATING)
    return batch


@pytest.mark.django_db
def test_an_evaluation_that_cannot_read_a_file_names_it_without_its_path(
    evaluating, batch_settings, monkeypatch, caplog
):
    hidden = batch_settings.CTSPINE_MEDIA_DIR / "batches" / "7" / "predictions"

    def missing(batch):
        try:
            open(hidden / "case.nii.gz", "rb")
        except FileNotFoundError as exc:
            raise EvaluationError(str(exc)) from exc  # as evaluation.evaluate wraps it

    monkeypatch.setattr(batch_tasks.evaluation, "evaluate_batch", missing)
    assert batch_tasks.evaluate_batch.call(evaluating.pk) == (
        "failed: case.nii.gz: No such file or directory"
    )
    evaluating.refresh_from_db()
    assert evaluating.status == Batch.Status.FAILED
    assert (
        evaluating.error == "The evaluation could not run: case.nii.gz: No such file or directory"
    )
    assert str(hidden) in caplog.text  # the log keeps the whole path


@pytest.mark.django_db
def test_an_unexpected_evaluation_failure_names_the_file_without_its_path(
    evaluating, batch_settings, monkeypatch
):
    hidden = batch_settings.CTSPINE_MEDIA_DIR / "batches" / "7" / "metrics.csv"

    def denied(batch):
        raise PermissionError(13, "Permission denied", str(hidden))

    monkeypatch.setattr(batch_tasks.evaluation, "evaluate_batch", denied)
    with pytest.raises(PermissionError):
        batch_tasks.evaluate_batch.call(evaluating.pk)
    evaluating.refresh_from_db()
    assert evaluating.error == (
        "The evaluation failed unexpectedly (PermissionError: metrics.csv: Permission denied)."
        " The worker's log has the details."
    )


# --- 12: the task row of an evaluation whose worker died ------------------------------------------


def evaluation_row_of_a_dead_worker(batch: Batch, *, attempts: int) -> DBTaskResult:
    """The batch's evaluation task taken by a worker that then died an hour ago: the row stays
    RUNNING, the batch evaluating without a heartbeat."""
    batch_tasks.enqueue_evaluation(batch.pk)
    row = DBTaskResult.objects.get(task_path=batch_tasks.evaluate_batch.module_path)
    long_ago = timezone.now() - timedelta(hours=1)
    DBTaskResult.objects.filter(pk=row.pk).update(status="RUNNING", started_at=long_ago)
    Batch.objects.filter(pk=batch.pk).update(
        evaluation_beat_at=long_ago, evaluation_attempts=attempts
    )
    return row


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("attempts", "outcome"), [(1, "evaluation re-queued"), (2, "failed")])
def test_the_task_row_of_a_dead_evaluation_is_failed_when_it_is_reaped(
    evaluating, batch_settings, attempts, outcome
):
    batch_settings.CTSPINE_TASKS_BACKEND = "db"
    dead = evaluation_row_of_a_dead_worker(evaluating, attempts=attempts)

    reap_dead_jobs()  # as workers, reap_jobs and segment_split --wait do

    evaluating.refresh_from_db()
    assert (evaluating.status == Batch.Status.FAILED) is (outcome == "failed")
    dead.refresh_from_db()
    assert dead.status == "FAILED" and dead.finished_at is not None
    assert dead.exception_class_path == WORKER_DIED
    assert dead.traceback.startswith("The worker running this evaluation stopped")
    others = DBTaskResult.objects.filter(task_path=batch_tasks.evaluate_batch.module_path).exclude(
        pk=dead.pk
    )
    # A re-queued evaluation has a row of its own, waiting for a worker; a failed batch none.
    expected = ["READY"] if outcome != "failed" else []
    assert list(others.values_list("status", flat=True)) == expected


@pytest.mark.django_db(transaction=True)
def test_the_task_row_of_a_live_evaluation_stays_running(evaluating, batch_settings):
    batch_settings.CTSPINE_TASKS_BACKEND = "db"
    row = evaluation_row_of_a_dead_worker(evaluating, attempts=1)
    Batch.objects.beat_evaluation(evaluating.pk)  # it beats after all: a long evaluation
    reap_dead_jobs()
    row.refresh_from_db()
    assert row.status == "RUNNING"
    evaluating.refresh_from_db()
    assert evaluating.status == Batch.Status.EVALUATING and evaluating.evaluation_attempts == 1
