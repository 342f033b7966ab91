"""Batches through the database queue, in this process: one job per case, a failed case that
does not stop the batch, predictions in each case's stored orientation, the evaluation run made
when the last case ends (linked both ways), cancel, staff-only pages and the command."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from io import StringIO

import nibabel as nib
import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from batches import services
from batches import tasks as batch_tasks
from batches.forms import BatchForm
from batches.models import Batch
from batches.services import BatchError
from evaluation.case_metrics import MISSING, OK
from evaluation.models import EvaluationRun
from inference import jobs
from inference import tasks as inference_tasks
from inference.models import SegmentationJob
from inference.tasks import reap_dead_jobs
from tests.inference.conftest import run_db_worker
from tests.inference.test_jobs import ProgressUntilStopped, retry_locked, wait_for
from viewer.models import Case

TEST_PUBLIC = [
    "1.3.6.1.4.1.9328.50.4.0663",
    "1.3.6.1.4.1.9328.50.4.0699",
    "CTC-1018399231",
    "HN_P023",
    "liver_110",
    "volume-covid19-A-0320_ct",
]


def case_ids(batch: Batch) -> list[str]:
    return list(batch.jobs().values_list("title", flat=True))


@pytest.mark.django_db(transaction=True)
def test_a_batch_runs_every_case_and_ends_in_its_evaluation(batch_settings, staff):
    batch = services.create_batch(user=staff, split="test_public", name="tiny on test_public")
    assert case_ids(batch) == TEST_PUBLIC
    assert batch.status == Batch.Status.RUNNING and batch.mode == "fast"
    tasks = DBTaskResult.objects.filter(id__in=list(batch.jobs().values_list("task_id", flat=True)))
    assert tasks.count() == 6 and set(tasks.values_list("status", flat=True)) == {"READY"}
    # One case's image is gone when a worker reaches it (the catalog points at a file that is not
    # there; the shared phantom download stays whole): that case fails, the batch goes on.
    Case.objects.filter(case_id="HN_P023").update(image_path="data/HNSCC-3DCT-RT_neck/gone.nii.gz")

    run_db_worker()  # the six cases, then the evaluation task the last one enqueued

    batch.refresh_from_db()
    assert batch.status == Batch.Status.DONE, batch.error
    statuses = dict(batch.jobs().values_list("title", "status"))
    assert statuses == {c: "failed" if c == "HN_P023" else "succeeded" for c in TEST_PUBLIC}
    failed = batch.jobs().get(title="HN_P023")
    assert failed.error == f"the image of job {failed.pk} is missing on disk"
    assert set(batch.jobs().values_list("worker", flat=True)) != {""}

    run = batch.evaluation
    assert run is not None and run.batch == batch  # linked both ways
    assert run.name == "tiny on test_public" and run.split == "test_public"
    assert (run.cases_expected, run.cases_evaluated, run.cases_missing) == (6, 5, 1)
    results = dict(run.cases.values_list("case_id", "status"))
    assert results == {c: MISSING if c == "HN_P023" else OK for c in TEST_PUBLIC}
    # The evaluated prediction is the job's own file, in the case's stored orientation.
    for job in batch.jobs().filter(status="succeeded"):
        result = run.cases.get(case_id=job.title)
        assert result.prediction_path.endswith(f"batches/{batch.pk}/predictions/{job.title}.nii.gz")
        prediction = nib.load(result.prediction_path)
        assert jobs.media_path(job.prediction_path).samefile(result.prediction_path)
        image = nib.load(batch_settings.CTSPINE_DATA_ROOT / job.case.image_path)
        assert prediction.shape == image.shape
        assert nib.aff2axcodes(prediction.affine) == nib.aff2axcodes(image.affine)
        assert np.allclose(prediction.affine, image.affine, atol=1e-3)
        assert result.mean_dice is not None


@pytest.mark.django_db(transaction=True)
def test_filters_narrow_the_batch_and_its_evaluation(batch_settings, staff):
    batch = services.create_batch(
        user=staff, split="all", filters={"anomaly": ["lumbarization"]}, name="lumbarization"
    )
    expected = sorted(
        Case.objects.filter(split__in=("test_public", "test_private"))
        .with_anomaly("lumbarization", source="curated")
        .values_list("case_id", flat=True)
    )
    assert case_ids(batch) == expected and 0 < len(expected) < 12

    run_db_worker()

    batch.refresh_from_db()
    assert batch.status == Batch.Status.DONE
    # Only the batch's cases are expected: the rest of the split is not "missing".
    assert batch.evaluation.cases_expected == len(expected) == batch.evaluation.cases_evaluated
    assert sorted(batch.evaluation.cases.values_list("case_id", flat=True)) == expected


@pytest.mark.django_db
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split": "test"}, "split must be one of test_public, test_private, all, train, not 'test'"),
        ({"split": "all", "filters": {"colour": ["red"]}}, "unknown filter colour: use anomaly,"),
        ({"split": "all", "filters": {"split": ["train"]}}, "unknown filter split: use"),
        ({"split": "all", "filters": {"anomaly": ["wobbly"]}}, "bad filter: anomaly: Select a valid choice."),
        ({"split": "all", "filters": {"q": ["no-such-case"]}}, "no downloaded case of all matches these filters"),
        ({"split": "all", "mode": "slow"}, "mode must be one of fast, accurate"),
    ],
)  # fmt: skip
def test_bad_requests_are_refused_with_a_reason(batch_settings, staff, kwargs, message):
    with pytest.raises(BatchError) as refused:
        services.create_batch(user=staff, **kwargs)
    assert refused.value.message.startswith(message)
    assert not Batch.objects.exists() and not SegmentationJob.objects.exists()


@pytest.mark.django_db
def test_only_staff_make_batches(batch_settings, user, client, staff_client):
    with pytest.raises(BatchError, match="only staff") as refused:
        services.create_batch(user=user, split="all")
    assert refused.value.status == 403
    assert client.get("/batches/new").status_code == 302  # anonymous: to the login page
    client.force_login(user)
    assert client.get("/batches/new").status_code == 403
    assert client.post("/batches/new", {"split": "all", "mode": "fast"}).status_code == 403
    assert not Batch.objects.exists()
    assert staff_client.get("/batches/new").status_code == 200


@pytest.mark.parametrize(
    "pairs, message",
    [(["anomaly"], "a filter is written name=value, not 'anomaly'"), (["=x"], "a filter is")],
)
def test_filter_pairs_are_parsed_or_refused(pairs, message):
    with pytest.raises(BatchError, match=message):
        services.parse_filters(pairs)
    assert services.parse_filters(["source=COLONOG", "source=MSD-T10", "anomaly=any"]) == {
        "source": ["COLONOG", "MSD-T10"],
        "anomaly": ["any"],
    }


def test_the_form_reads_one_filter_per_line_so_values_may_contain_spaces():
    form = BatchForm(
        {
            "split": "all",
            "mode": "fast",
            "filters": "q=liver 110\n\nsource=COLONOG\r\nsource=MSD-T10 ",
        }
    )
    assert form.is_valid(), form.errors
    assert form.cleaned_data["filters"] == {"q": ["liver 110"], "source": ["COLONOG", "MSD-T10"]}
    assert "one name=value per line" in form.fields["filters"].help_text
    form = BatchForm({"split": "all", "mode": "fast", "filters": "anomaly=any\nliver"})
    assert form.errors["filters"] == ["a filter is written name=value, not 'liver'"]


@pytest.mark.django_db
def test_a_filter_value_with_a_space_reaches_the_catalog(batch_settings, staff_client):
    response = staff_client.post(
        "/batches/new", {"split": "all", "mode": "fast", "filters": "q=liver 110"}
    )
    # The whole value is the case id searched for (none has a space), not a broken filter.
    assert response.status_code == 400
    assert "no downloaded case of all matches these filters" in response.content.decode()
    assert not Batch.objects.exists()


@pytest.mark.django_db
def test_the_batch_page_shows_the_time_left_in_minutes(batch_settings, staff, staff_client):
    batch = services.create_batch(user=staff, split="test_private")
    first, *rest = batch.jobs()
    now = timezone.now()
    SegmentationJob.objects.filter(pk=first.pk).update(
        status="succeeded",
        worker="gpu-a:11",
        started_at=now - timedelta(minutes=10),
        finished_at=now - timedelta(minutes=5),
    )
    # One case in 10 minutes, five cases left: about 50 minutes.
    page = staff_client.get(f"/batches/{batch.pk}/").content.decode()
    assert "0.10 cases per minute · about 50 min left" in page
    progress = json.loads(staff_client.get(f"/batches/{batch.pk}/progress").content)
    assert progress["eta_s"] == pytest.approx(3000, abs=5)  # the JSON stays in seconds
    assert progress["eta_text"] == "about 50 min left"


@pytest.mark.django_db(transaction=True)
def test_cancel_ends_queued_cases_and_the_batch_without_evaluation(
    batch_settings, staff_client, staff
):
    batch = services.create_batch(user=staff, split="test_private")
    response = staff_client.post(f"/batches/{batch.pk}/cancel")
    assert response.status_code == 302 and response["Location"] == f"/batches/{batch.pk}/"
    batch.refresh_from_db()
    assert batch.status == Batch.Status.CANCELLED and batch.evaluation is None
    assert set(batch.jobs().values_list("status", flat=True)) == {"cancelled"}
    run_db_worker()  # the tasks of the cancelled cases skip them
    assert set(batch.jobs().values_list("status", flat=True)) == {"cancelled"}
    with pytest.raises(BatchError, match="has already cancelled"):
        services.cancel_batch(batch)


class HeldUntilReleased(ProgressUntilStopped):
    """A model stand-in that holds its case (no progress, so no cancel is noticed) until
    ``release`` is set, then reports progress until its job's cancel stops it."""

    release = threading.Event()

    def predict_result(self, **kwargs):
        assert self.release.wait(30), "the test never released the case"
        return super().predict_result(**kwargs)


@pytest.mark.django_db(transaction=True)
def test_cancel_stops_running_cases_and_ends_the_batch_without_evaluation(
    batch_settings, staff, monkeypatch
):
    monkeypatch.setattr(HeldUntilReleased, "release", threading.Event())
    monkeypatch.setattr(inference_tasks, "load_predictor", lambda config: HeldUntilReleased())
    batch = services.create_batch(user=staff, split="test_private")

    def work():
        try:
            run_db_worker()
        finally:
            connection.close()  # the thread's own connection

    worker = threading.Thread(target=work)
    worker.start()
    try:
        wait_for(
            lambda: batch.jobs().filter(stage="predicting").exists(),
            what="a case of the batch to be predicting",
        )
        running = batch.jobs().get(status="running")
        batch = retry_locked(lambda: services.cancel_batch(batch))
        # The running case is asked to stop; the batch waits for it, the queued ones end now.
        assert batch.status == Batch.Status.RUNNING and batch.cancel_requested
        running.refresh_from_db()
        assert running.status == "running" and running.cancel_requested
        assert set(batch.jobs().exclude(pk=running.pk).values_list("status", flat=True)) == {
            "cancelled"
        }
    finally:
        HeldUntilReleased.release.set()
        worker.join(timeout=60)
    assert not worker.is_alive()
    batch.refresh_from_db()
    # The worker stopped the case at its next check and, that task ended, closed the batch.
    assert batch.status == Batch.Status.CANCELLED and batch.finished_at is not None
    assert batch.evaluation is None and not EvaluationRun.objects.exists()
    running.refresh_from_db()
    assert running.status == "cancelled" and not jobs.results_dir(running).exists()
    assert set(batch.jobs().values_list("status", flat=True)) == {"cancelled"}
    evaluations = DBTaskResult.objects.filter(task_path=batch_tasks.evaluate_batch.module_path)
    assert not evaluations.exists()


@pytest.mark.django_db(transaction=True)
def test_the_batch_page_shows_cases_workers_and_the_evaluation(batch_settings, staff_client):
    call_command(
        "segment_split",
        "--split",
        "test_public",
        "--filter",
        "q=liver",
        "--user",
        "sam",
        verbosity=0,
    )
    batch = Batch.objects.get()
    assert case_ids(batch) == ["liver_110"]
    page = staff_client.get(f"/batches/{batch.pk}/").content.decode()
    assert '<span id="count-queued">1</span> queued' in page and 'id="cancel"' in page
    progress = json.loads(staff_client.get(f"/batches/{batch.pk}/progress").content)
    assert progress["counts"] == {
        "queued": 1,
        "running": 0,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 0,
    }

    run_db_worker()

    job = batch.jobs().get()
    batch.refresh_from_db()
    page = staff_client.get(f"/batches/{batch.pk}/").content.decode()
    assert '<span id="count-succeeded">1</span> done' in page
    assert f"<td>{job.worker}</td><td>1</td>" in page  # the worker's count
    assert f'href="/evaluations/{batch.evaluation.pk}/"' in page
    assert 'id="cancel"' not in page and "batch.js" not in page  # nothing left to follow
    progress = json.loads(staff_client.get(f"/batches/{batch.pk}/progress").content)
    assert progress["status"] == "done" and progress["by_worker"] == {job.worker: 1}
    assert progress["cases_per_minute"] > 0 and progress["eta_s"] == 0
    run_page = staff_client.get(f"/evaluations/{batch.evaluation.pk}/").content.decode()
    assert f'href="/batches/{batch.pk}/"' in run_page  # and back
    assert staff_client.get("/batches/").content.decode().count(f'href="/batches/{batch.pk}/"') == 1


# --- segment_split --wait --------------------------------------------------------------------------


def worker_between_polls(monkeypatch, work=run_db_worker) -> None:
    """Run ``work`` (a db worker, in this process, until the queue is empty) at the start of each
    round of ``segment_split --wait``: the command then follows a batch that workers move on,
    deterministically (a worker thread on the shared in-memory SQLite would lock the tables)."""
    reap = services.reap_dead_jobs

    def round_of_polling():
        work()
        return reap()

    monkeypatch.setattr(services, "reap_dead_jobs", round_of_polling)


def segment_split_wait(*arguments: str) -> tuple[str, str, CommandError | None]:
    """``segment_split --wait`` as user sam: its stdout, stderr and the error it exits with."""
    out, err = StringIO(), StringIO()
    command = ("segment_split", *arguments, "--user", "sam", "--wait", "--poll", "0")
    try:
        call_command(*command, stdout=out, stderr=err)
    except CommandError as exc:
        return out.getvalue(), err.getvalue(), exc
    return out.getvalue(), err.getvalue(), None


@pytest.mark.django_db(transaction=True)
def test_segment_split_wait_follows_the_batch_to_its_evaluation(batch_settings, staff, monkeypatch):
    worker_between_polls(monkeypatch)
    out, err, error = segment_split_wait("--split", "test_public", "--filter", "q=liver")
    assert error is None, err
    batch = Batch.objects.get()
    run = batch.evaluation
    assert batch.status == Batch.Status.DONE and run is not None
    assert out.splitlines() == [
        f"batch {batch.pk} 'test_public fast': 1 cases queued",
        f"batch {batch.pk}: Done (1 succeeded)",
        f"evaluation run {run.pk}: 1 of 1 cases evaluated; see /evaluations/{run.pk}/",
    ]
    assert "100%" in err and "1/1" in err and "0 failed, done" in err  # the progress bar


@pytest.mark.django_db(transaction=True)
def test_segment_split_wait_exits_non_zero_when_a_case_failed(batch_settings, staff, monkeypatch):
    broken = TEST_PUBLIC[1]
    Case.objects.filter(case_id=broken).update(image_path="data/colon/gone.nii.gz")
    worker_between_polls(monkeypatch)
    out, err, error = segment_split_wait("--split", "test_public", "--filter", "q=1.3.6.1")
    batch = Batch.objects.get()
    assert str(error) == f"batch {batch.pk} is done but 1 of 2 cases failed: {broken}"
    job = batch.jobs().get(title=broken)
    assert f"{broken}: failed {job.error}" in err.splitlines()  # the reason
    assert f"batch {batch.pk}: Done (1 succeeded, 1 failed)" in out
    assert (batch.evaluation.cases_evaluated, batch.evaluation.cases_missing) == (1, 1)


@pytest.mark.django_db(transaction=True)
def test_segment_split_wait_exits_non_zero_when_the_batch_is_cancelled(
    batch_settings, staff, monkeypatch
):
    # Cancelled (e.g. on the batch page) before any worker took a case.
    worker_between_polls(monkeypatch, lambda: services.cancel_batch(Batch.objects.get()))
    out, err, error = segment_split_wait("--split", "test_public", "--filter", "q=1.3.6.1")
    batch = Batch.objects.get()
    assert str(error) == f"batch {batch.pk} ended cancelled"
    assert out.splitlines()[-1] == f"batch {batch.pk}: Cancelled (2 cancelled)"
    assert f"{TEST_PUBLIC[0]}: cancelled" in err.splitlines() and batch.evaluation is None


@pytest.mark.django_db
def test_the_command_refuses_what_it_cannot_run(batch_settings, staff):
    with pytest.raises(CommandError, match="no user 'nobody'"):
        call_command("segment_split", "--split", "all", "--user", "nobody")
    with pytest.raises(CommandError, match="no superuser"):
        call_command("segment_split", "--split", "all")
    with pytest.raises(CommandError, match="a filter is written name=value"):
        call_command("segment_split", "--split", "all", "--user", "sam", "--filter", "liver")
    batch_settings.CTSPINE_NNUNET_MODEL_DIR = None
    with pytest.raises(CommandError, match="CTSPINE_NNUNET_MODEL_DIR"):
        call_command("segment_split", "--split", "all", "--user", "sam")
    assert not Batch.objects.exists()


# --- an evaluation whose worker died --------------------------------------------------------------


def dead_evaluation(batch: Batch, *, attempts: int) -> None:
    """What a worker killed mid-evaluation leaves: the batch evaluating, a heartbeat long past,
    and no evaluation task left in the queue."""
    Batch.objects.filter(pk=batch.pk).update(
        status=Batch.Status.EVALUATING,
        evaluation_beat_at=timezone.now() - timedelta(hours=1),
        evaluation_attempts=attempts,
    )


@pytest.mark.django_db(transaction=True)
def test_an_evaluation_whose_worker_died_is_requeued_once_then_fails(
    batch_settings, staff, monkeypatch
):
    batch = services.create_batch(user=staff, split="all", filters={"anomaly": ["lumbarization"]})
    with monkeypatch.context() as patch:
        patch.setattr(batch_tasks, "enqueue_evaluation", lambda batch_id: None)
        run_db_worker()  # the cases only
    dead_evaluation(batch, attempts=1)

    reap_dead_jobs()  # as workers, reap_jobs and segment_split --wait do

    batch.refresh_from_db()
    assert batch.status == Batch.Status.EVALUATING and batch.evaluation_beat_at is None
    queued = DBTaskResult.objects.filter(
        task_path=batch_tasks.evaluate_batch.module_path, status="READY"
    )
    assert queued.count() == 1
    run_db_worker()
    batch.refresh_from_db()
    assert batch.status == Batch.Status.DONE and batch.evaluation_attempts == 2
    assert batch.evaluation.cases_evaluated == batch.jobs().count() > 0

    # A second death: the batch fails with the reason, and nothing more is queued.
    other = services.create_batch(user=staff, split="test_private")
    dead_evaluation(other, attempts=2)
    reap_dead_jobs()
    other.refresh_from_db()
    assert other.status == Batch.Status.FAILED and other.finished_at is not None
    assert "stopped 2 times" in other.error and "manage.py evaluate" in other.error
    assert queued.count() == 0


@pytest.mark.django_db
def test_a_duplicate_evaluation_task_leaves_a_live_one_alone(batch_settings, staff):
    batch = services.create_batch(user=staff, split="test_private")
    Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.EVALUATING)
    assert Batch.objects.start_evaluation(batch.pk, stale_after_s=60)  # the first task
    assert batch_tasks.evaluate_batch.call(batch.pk).startswith("skipped")
    reap_dead_jobs()
    batch.refresh_from_db()
    assert batch.status == Batch.Status.EVALUATING and batch.evaluation_attempts == 1
    assert batch.evaluation_beat_at is not None  # alive: not reaped
