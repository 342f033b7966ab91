"""Jobs: ownership, lists, cancellation (queued and running), workers that die, dataset cases.

Jobs run through the real queue (django_tasks_db) and the real task; where a test needs a job to
stay running, the model is replaced by one that reports progress until it is told to stop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from django.core.management import call_command
from django.db import OperationalError, connection
from django.utils import timezone

from ctspine.metrics import compare_labels
from inference import jobs, services, tasks
from inference.models import SegmentationJob, Upload
from inference.nnunet.config import MODES
from inference.uploads import IncomingFile
from tests.conftest import REPO
from tests.inference.conftest import run_db_worker
from tests.support.task_workers import temporary_root
from viewer.models import Case

Status = SegmentationJob.Status


def new_upload(user, phantom_files, tmp_path) -> Upload:
    """An upload stored through the real service (copies of the phantom files)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    image, label = (Path(shutil.copy(p, tmp_path / f"in-{p.name}")) for p in phantom_files)
    return services.create_upload(
        user=user,
        image=IncomingFile(image, "ct.nii.gz"),
        label=IncomingFile(label, "ct_seg.nii.gz"),
    )


def finished_job(user, phantom_files, tmp_path) -> SegmentationJob:
    """A succeeded job whose "prediction" is the ground truth itself, made without a model."""
    upload = new_upload(user, phantom_files, tmp_path)
    job = SegmentationJob.objects.create(owner=user, upload=upload, title="ct.nii.gz")
    target = jobs.results_dir(job) / "prediction.nii.gz"
    target.parent.mkdir(parents=True)
    shutil.copy(jobs.media_path(upload.label_path), target)
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[1:3, 1:3, 1:3] = 20
    metrics = compare_labels(reference=labels, prediction=labels, spacing_mm=(2, 2, 2)).to_dict()
    job.status, job.prediction_path = Status.SUCCEEDED, f"jobs/{job.pk}/prediction.nii.gz"
    job.metrics = metrics
    job.centroids = {"prediction": {"20": {"mm": [0, 0, 0], "voxel": [1, 2, 3]}}}
    job.save()
    return job


def retry_locked(action, attempts: int = 50):
    """Run a database action from the test thread while a worker thread writes: in-memory SQLite
    (shared cache) answers "table is locked" at once instead of waiting."""
    for _ in range(attempts - 1):
        try:
            return action()
        except OperationalError as exc:
            if "locked" not in str(exc):
                raise
            time.sleep(0.02)
    return action()


def wait_for(condition, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = retry_locked(condition)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- ownership ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_other_users_get_404_for_jobs_uploads_and_files(
    user, alice, bob, api, bob_api, model, phantom_files, tmp_path
):
    job = finished_job(user, phantom_files, tmp_path)
    pages = [
        f"/jobs/{job.pk}/",
        f"/jobs/{job.pk}/files/image",
        f"/jobs/{job.pk}/files/prediction",
        f"/jobs/{job.pk}/files/reference",
    ]
    api_urls = [
        f"/api/jobs/{job.pk}/",
        f"/api/jobs/{job.pk}/volume/",
        f"/api/jobs/{job.pk}/slices/axial/10.png",
        f"/api/jobs/{job.pk}/projections/coronal.png",
        f"/api/jobs/{job.pk}/voxel/?plane=axial&index=1&x=1&y=1",
        f"/api/jobs/{job.pk}/files/prediction/",
    ]
    for url in pages:
        assert alice.get(url).status_code == 200, url
        assert bob.get(url).status_code == 404, url
    for url in api_urls:
        assert api.get(url).status_code == 200, url
        assert bob_api.get(url).status_code == 404, url
    assert bob.post(f"/jobs/{job.pk}/cancel").status_code == 404
    assert bob_api.post(f"/api/jobs/{job.pk}/cancel/").status_code == 404
    response = bob_api.post("/api/jobs/", {"upload_id": job.upload_id}, format="json")
    assert response.status_code == 404
    assert bob_api.get("/api/uploads/").json()["count"] == 0
    assert api.get("/api/uploads/").json()["count"] == 1


@pytest.mark.django_db
def test_lists_show_only_your_own_jobs(
    user, other_user, alice, api, bob_api, model, phantom_files, tmp_path
):
    mine = finished_job(user, phantom_files, tmp_path / "a")
    theirs = finished_job(other_user, phantom_files, tmp_path / "b")
    assert [j["id"] for j in api.get("/api/jobs/").json()["results"]] == [mine.pk]
    assert [j["id"] for j in bob_api.get("/api/jobs/").json()["results"]] == [theirs.pk]
    page = alice.get("/jobs/").content.decode()
    assert f'data-job="{mine.pk}"' in page and f'data-job="{theirs.pk}"' not in page


@pytest.mark.django_db
def test_signed_out_users_get_nothing(client, user, model, phantom_files, tmp_path):
    job = finished_job(user, phantom_files, tmp_path)
    assert client.get(f"/jobs/{job.pk}/").status_code == 302
    assert client.get(f"/jobs/{job.pk}/files/image").status_code == 302
    assert client.get("/api/jobs/").status_code == 403
    assert client.get(f"/api/jobs/{job.pk}/").status_code == 403
    assert client.get(f"/api/jobs/{job.pk}/volume/").status_code == 403


@pytest.mark.django_db
def test_result_page_shows_metrics_table_and_downloads(alice, user, model, phantom_files, tmp_path):
    job = finished_job(user, phantom_files, tmp_path)
    page = alice.get(f"/jobs/{job.pk}/").content.decode()
    assert 'id="metrics-table"' in page
    assert 'data-label="20"' in page and 'href="?ax=3&amp;co=2&amp;sa=1"' in page
    assert "Mean of Vertebrae" in page and "Mean of Spine" in page
    assert f'data-viewer data-api="/api/jobs/{job.pk}/"' in page  # the shared viewer, on this job
    assert "data-layer-titles=" in page and "Ground truth" in page
    for which in ("image", "prediction", "reference"):
        assert f'href="/jobs/{job.pk}/files/{which}"' in page
    download = alice.get(f"/jobs/{job.pk}/files/prediction")
    assert (
        download["Content-Disposition"] == f'attachment; filename="job{job.pk}-prediction.nii.gz"'
    )
    assert download["Cache-Control"] == "private, no-store"


@pytest.mark.django_db
def test_job_urls_in_the_api_are_the_routes_of_the_job(api, user, model, phantom_files, tmp_path):
    job = finished_job(user, phantom_files, tmp_path)
    urls = api.get(f"/api/jobs/{job.pk}/").json()["urls"]
    assert urls == {
        "self": f"/api/jobs/{job.pk}/",
        "page": f"/jobs/{job.pk}/",
        "cancel": f"/api/jobs/{job.pk}/cancel/",
        "volume": f"/api/jobs/{job.pk}/volume/",
        "image": f"/api/jobs/{job.pk}/files/image/",
        "prediction": f"/api/jobs/{job.pk}/files/prediction/",
        "reference": f"/api/jobs/{job.pk}/files/reference/",
    }
    assert job.get_absolute_url() == urls["page"]
    for name, url in urls.items():
        assert api.get(url).status_code == (405 if name == "cancel" else 200), url  # cancel: POST
    SegmentationJob.objects.filter(pk=job.pk).update(status=Status.RUNNING)
    running = api.get(urls["self"]).json()["urls"]
    assert "prediction" not in running and {"image", "reference"} <= running.keys()
    assert api.get(urls["prediction"]).status_code == 404  # only a succeeded job's result
    assert api.get(urls["image"]).status_code == 200


# --- cancellation -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_queued_job_stops_it_before_it_runs(api, model, phantom_files, tmp_path, user):
    upload = new_upload(user, phantom_files, tmp_path)
    job = services.create_job(user=user, upload=upload)
    response = api.post(f"/api/jobs/{job.pk}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    run_db_worker()  # the task runs, finds the job cancelled and returns
    job.refresh_from_db()
    assert job.status == Status.CANCELLED and job.attempts == 0 and not job.prediction_path
    assert not jobs.results_dir(job).exists()
    assert api.post(f"/api/jobs/{job.pk}/cancel/").status_code == 409


class ProgressUntilStopped:
    """A model stand-in that reports progress until the job is cancelled (never finishes)."""

    device_name = "cpu"
    sees_stored_orientation = False  # arrays in RAS+, as the test builds them
    info = SimpleNamespace(as_dict=lambda: {"folder_name": "stand-in"})

    def predict_result(self, *, image, spacing_mm, progress=None):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            progress(0.5)
            time.sleep(0.02)
        raise AssertionError("the job was never cancelled")


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_running_job_stops_its_worker(
    api, model, phantom_files, tmp_path, user, monkeypatch
):
    monkeypatch.setattr(tasks, "load_predictor", lambda config: ProgressUntilStopped())
    upload = new_upload(user, phantom_files, tmp_path)
    job = services.create_job(user=user, upload=upload)

    def work():
        try:
            run_db_worker()
        finally:
            connection.close()  # the thread's own connection, or PostgreSQL keeps the test DB busy

    worker = threading.Thread(target=work)
    worker.start()
    try:
        wait_for(
            lambda: SegmentationJob.objects.filter(pk=job.pk, stage="predicting").exists(),
            what="the job to be predicting",
        )
        response = retry_locked(lambda: api.post(f"/api/jobs/{job.pk}/cancel/"))
        assert response.status_code == 200 and response.json()["cancel_requested"]
    finally:
        worker.join(timeout=30)
    assert not worker.is_alive()
    job.refresh_from_db()
    assert job.status == Status.CANCELLED and job.finished_at is not None
    assert 0 < job.progress < 1
    assert not jobs.results_dir(job).exists()


# --- workers that die ---------------------------------------------------------------------------


def claimed_and_abandoned(user, phantom_files, tmp_path, *, attempts: int = 0) -> SegmentationJob:
    """A job a worker claimed and then stopped writing heartbeats for (as if killed)."""
    upload = new_upload(user, phantom_files, tmp_path)
    job = services.create_job(user=user, upload=upload)
    SegmentationJob.objects.filter(pk=job.pk).update(attempts=attempts)
    job = SegmentationJob.objects.claim(job.pk, worker=tasks.worker_name())
    long_ago = timezone.now() - timedelta(hours=1)
    SegmentationJob.objects.filter(pk=job.pk).update(heartbeat_at=long_ago, started_at=long_ago)
    return job


@pytest.mark.django_db(transaction=True)
def test_job_of_a_dead_worker_is_requeued_once_and_then_succeeds(
    model, phantom_files, tmp_path, user
):
    job = claimed_and_abandoned(user, phantom_files, tmp_path)
    fresh = claimed_and_abandoned(user, phantom_files, tmp_path / "fresh")
    SegmentationJob.objects.filter(pk=fresh.pk).update(heartbeat_at=timezone.now())
    assert tasks.reap_dead_jobs() == [(job.pk, "queued")]  # the fresh one is left alone
    job.refresh_from_db()
    assert job.status == Status.QUEUED and "stopped responding" in job.notes[0]
    assert "Re-queued (attempt 2)" in job.notes[0]
    SegmentationJob.objects.filter(pk=fresh.pk).update(status=Status.CANCELLED)
    run_db_worker()
    job.refresh_from_db()
    assert job.status == Status.SUCCEEDED and job.attempts == 2


@pytest.mark.django_db(transaction=True)
def test_job_whose_worker_died_twice_fails_with_the_reason(
    alice, model, phantom_files, tmp_path, user
):
    job = claimed_and_abandoned(user, phantom_files, tmp_path, attempts=1)
    assert job.attempts == 2
    call_command("reap_jobs", verbosity=0)
    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert "stopped responding" in job.error and "tried 2 times" in job.error
    assert job.worker in job.error
    assert "stopped responding" in alice.get(f"/jobs/{job.pk}/").content.decode()


@pytest.mark.django_db(transaction=True)
def test_dead_job_with_a_cancel_request_is_cancelled(model, phantom_files, tmp_path, user):
    job = claimed_and_abandoned(user, phantom_files, tmp_path)
    services.cancel_job(job)
    assert tasks.reap_dead_jobs() == [(job.pk, "cancelled")]


@pytest.mark.django_db
def test_reading_the_job_lists_never_reaps(alice, api, model, phantom_files, tmp_path, user):
    """Pages and the API only read: a dead worker's job stays as it is until a worker or
    ``reap_jobs`` looks at it."""
    job = claimed_and_abandoned(user, phantom_files, tmp_path)
    before = SegmentationJob.objects.values().get(pk=job.pk)
    assert alice.get("/jobs/").status_code == 200
    assert api.get("/api/jobs/").json()["results"][0]["status"] == "running"
    assert alice.get(f"/jobs/{job.pk}/").status_code == 200
    assert api.get(f"/api/jobs/{job.pk}/").json()["status"] == "running"
    assert SegmentationJob.objects.values().get(pk=job.pk) == before


@pytest.mark.django_db
def test_a_reaped_job_is_no_longer_its_old_workers(
    model, phantom_files, tmp_path, user, django_capture_on_commit_callbacks
):
    """Every change a worker makes is conditional on its own running attempt: once the reaper
    re-queued the job, the old worker's heartbeat, result and failure change nothing."""
    old = claimed_and_abandoned(user, phantom_files, tmp_path)
    assert SegmentationJob.objects.claim(old.pk, worker="second") is None  # already running
    assert old.beat(progress=0.5, stage="predicting") == (True, False)
    SegmentationJob.objects.filter(pk=old.pk).update(heartbeat_at=timezone.now() - timedelta(1))
    requeued = []
    with django_capture_on_commit_callbacks(execute=True):
        reaped = SegmentationJob.objects.reap_stale(stale_after_s=60, requeue=requeued.append)
    assert reaped == [(old.pk, "queued")] and requeued == [old.pk]
    assert old.beat(progress=0.9, stage="predicting") == (False, False)
    assert not old.fail("too late")
    assert not old.stop_cancelled()
    assert not old.finish(
        prediction_path="jobs/x/prediction.nii.gz",
        labels_present=[20],
        centroids={},
        metrics=None,
        device="cpu",
        timings={},
    )
    row = SegmentationJob.objects.get(pk=old.pk)
    assert (row.status, row.stage, row.error, row.prediction_path) == (
        Status.QUEUED,
        "re-queued",
        "",
        "",
    )
    second = SegmentationJob.objects.claim(old.pk, worker="second")
    assert second.attempts == 2 and second.worker == "second"
    assert second.fail("it broke") and not second.cancel()  # finished: nothing to cancel
    assert SegmentationJob.objects.get(pk=old.pk).error == "it broke"


@pytest.mark.django_db(transaction=True)
def test_a_busy_worker_reaps_dead_jobs_while_its_own_job_runs(model, phantom_files, tmp_path, user):
    dead = claimed_and_abandoned(user, phantom_files, tmp_path / "dead")
    mine = claimed_and_abandoned(user, phantom_files, tmp_path / "mine")
    with tasks.JobMonitor(mine, interval=0.02, reap_every=0.05):
        wait_for(
            lambda: SegmentationJob.objects.filter(pk=dead.pk, status=Status.QUEUED).exists(),
            what="the monitor of a running job to re-queue the dead one",
        )
    mine.refresh_from_db()
    assert mine.status == Status.RUNNING  # its own job beats, so it is not stale
    assert "stopped responding" in SegmentationJob.objects.get(pk=dead.pk).notes[0]


def test_job_modes_are_the_models_modes():
    assert set(SegmentationJob.Mode.values) == set(MODES)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_killed_worker_process_does_not_leave_its_job_running(
    model, phantom_files, tmp_path, user, settings
):
    """A real ``manage.py db_worker`` process is killed (SIGKILL) while it runs the job; the job is
    re-queued by the reaper and finished by another worker."""
    if connection.vendor != "postgresql":
        pytest.skip(
            "a second process cannot open the in-memory SQLite test database; this runs on"
            " PostgreSQL (make test re-runs the database tests there)"
        )
    upload = new_upload(user, phantom_files, tmp_path)
    job = services.create_job(user=user, upload=upload)
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ctspine_site.settings.test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "CTSPINE_MEDIA_DIR": str(settings.CTSPINE_MEDIA_DIR),
        "CTSPINE_NNUNET_MODEL_DIR": str(model),
        "CTSPINE_DEVICE": "cpu",
        "CTSPINE_NNUNET_MODE": "fast",
        **temporary_root(tmp_path / "worker-tmp"),  # killed below: it cannot remove its own
    }
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "db_worker", "--batch", "--no-reload", "--no-startup-delay"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: SegmentationJob.objects.filter(pk=job.pk, status=Status.RUNNING).exists(),
            timeout=60,
            what="the worker process to start the job",
        )
    finally:
        worker.kill()
        worker.wait()
    job.refresh_from_db()
    assert job.status == Status.RUNNING  # what a dead worker leaves behind ...
    settings.CTSPINE_JOB_STALE_AFTER_S = 0.5
    time.sleep(0.6)
    assert tasks.reap_dead_jobs() == [(job.pk, "queued")]  # ... until the reaper sees it
    run_db_worker()
    job.refresh_from_db()
    assert job.status == Status.SUCCEEDED and job.attempts == 2
    assert str(worker.pid) in job.notes[0]


@pytest.mark.django_db(transaction=True)
def test_unreachable_queue_fails_the_job_with_a_reason(
    api, model, phantom_files, tmp_path, user, settings
):
    settings.TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default"]}}
    settings.RQ_QUEUES = {"default": {"URL": "redis://127.0.0.1:1/0"}}
    settings.CTSPINE_TASKS_BACKEND = "rq"
    upload = new_upload(user, phantom_files, tmp_path)
    job = services.create_job(user=user, upload=upload)
    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert "could not be queued" in job.error and "'rq' task backend" in job.error


# --- dataset cases ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_segment_button_on_a_dataset_case_runs_and_compares(alice, api, model, ingested_phantom):
    case = min(  # the smallest field of view: fewest sliding-window tiles at the model's 2 mm
        Case.objects.filter(downloaded=True, has_label=True, error=""),
        key=lambda c: np.prod(np.array(c.shape) * np.array(c.spacing)),
    )
    response = alice.post(f"/cases/{case.case_id}/segment", {"mode": "fast"})
    job = SegmentationJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert job.case == case and job.title == case.case_id
    run_db_worker()
    body = api.get(f"/api/jobs/{job.pk}/").json()
    assert body["status"] == "succeeded", body["error"]
    assert body["case_id"] == case.case_id and body["metrics"]["spine"] is not None
    assert api.get(f"/api/jobs/{job.pk}/volume/").json()["layers"] == [
        "labels",
        "reference",
        "compare",
    ]


@pytest.mark.django_db
def test_segment_refuses_a_case_that_is_not_downloaded(alice, api, model, ingested_phantom):
    case = Case.objects.filter(downloaded=True).first()
    Case.objects.filter(pk=case.pk).update(downloaded=False)
    response = alice.post(f"/cases/{case.case_id}/segment")
    assert response.status_code == 400 and "is not downloaded" in response.content.decode()
    response = api.post("/api/jobs/", {"case_id": case.case_id}, format="json")
    assert response.status_code == 400 and "is not downloaded" in response.json()["error"]
    assert api.post("/api/jobs/", {"case_id": "nope"}, format="json").status_code == 404
    assert not SegmentationJob.objects.exists()


@pytest.mark.django_db
def test_segment_without_a_model_is_refused(alice, api, no_model, ingested_phantom):
    case = Case.objects.filter(downloaded=True).first()
    response = alice.post(f"/cases/{case.case_id}/segment")
    assert response.status_code == 503 and "CTSPINE_NNUNET_MODEL_DIR" in response.content.decode()
    response = api.post("/api/jobs/", {"case_id": case.case_id}, format="json")
    assert response.status_code == 503 and "CTSPINE_NNUNET_MODEL_DIR" in response.json()["error"]
    assert not SegmentationJob.objects.exists()


@pytest.mark.django_db
def test_a_bad_job_request_gets_the_apis_error_shape(api, model):
    """Serializer errors are shaped by the project's exception handler: ``error`` names the
    parameter, ``field`` is the first bad one, each keeps its messages under its name."""
    neither = api.post("/api/jobs/", {}, format="json")
    assert neither.status_code == 400
    body = neither.json()
    assert body["error"] == "give exactly one of case_id and upload_id", body
    bad_mode = api.post("/api/jobs/", {"case_id": "x", "mode": "slow"}, format="json").json()
    assert bad_mode["field"] == "mode" and bad_mode["error"].startswith("mode: ")
    assert '"slow" is not a valid choice.' in bad_mode["error"]
    assert bad_mode["mode"] == ['"slow" is not a valid choice.']
    assert not SegmentationJob.objects.exists()
