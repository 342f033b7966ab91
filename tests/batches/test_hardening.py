"""Batch evaluations under the attacks and failures of issue 14: a failed evaluation's message
names files, not the server's paths (item 10); the tasks backend's row of an evaluation whose
worker died does not stay RUNNING (item 12)."""

from __future__ import annotations

import pytest

from batches import services
from batches import tasks as batch_tasks
from batches.models import Batch
from evaluation.evaluate import EvaluationError


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
