"""The whole path on the CPU, with a real tiny nnU-Net v2 model: upload through the API -> job
queued in the tasks backend -> a worker runs it through nnUNetPredictor -> the result NIfTI on the
image grid, labels mapped -> the API, the result page and the tile endpoints show it, with metrics
where ground truth was given. Once with django-tasks-db, once with rq on the local Redis.
"""

from __future__ import annotations

import signal

import django_rq
import nibabel as nib
import numpy as np
import pytest
from django_tasks_db.models import DBTaskResult
from django_tasks_rq import Job as RQJob
from rq import SimpleWorker

from ctspine.volume_cache import SourceIdentity
from inference import jobs
from inference.models import SegmentationJob
from inference.nnunet.config import PredictorConfig
from inference.predictor import VertebraPredictor
from tests.conftest import service_listening
from tests.inference.conftest import FOREIGN_LABEL_MAP, run_db_worker
from viewer.tiles.volumes import volume_cache

REDIS = ("127.0.0.1", 6379)
REDIS_TEST_URL = "redis://127.0.0.1:6379/15"  # a database of its own, emptied by the test


def upload(api, image, label=None, **fields):
    with open(image, "rb") as image_file:
        data = {"image": image_file, **fields}
        if label is None:
            return api.post("/api/uploads/", data, format="multipart")
        with open(label, "rb") as label_file:
            return api.post("/api/uploads/", {**data, "label": label_file}, format="multipart")


def check_result_is_shown(api, alice, job_id: int) -> dict:
    """The API, the page, the tiles and the download all show the finished job."""
    body = api.get(f"/api/jobs/{job_id}/").json()
    assert body["status"] == "succeeded", body["error"]
    assert body["progress"] == 1.0 and body["device"] == "cpu"
    assert {"read_s", "predict_s", "network_s", "write_s", "total_s"} <= set(body["timings"])
    page = alice.get(f"/jobs/{job_id}/").content.decode()
    assert "Mean of Vertebrae" in page and "Mean of Spine" in page
    volume = api.get(f"/api/jobs/{job_id}/volume/").json()
    assert volume["layers"] == ["labels", "reference", "compare"]
    assert {v["value"] for v in volume["vertebrae"]} >= set(body["labels_present"])
    for layer in volume["layers"]:
        tile = api.get(f"/api/jobs/{job_id}/slices/axial/10.png?layer={layer}")
        assert tile.status_code == 200 and tile["Content-Type"] == "image/png"
        assert tile["Cache-Control"].startswith("private")
    download = api.get(body["urls"]["prediction"])
    assert download.status_code == 200
    job = SegmentationJob.objects.get(pk=job_id)
    assert b"".join(download.streaming_content) == jobs.media_path(job.prediction_path).read_bytes()
    return body


@pytest.mark.django_db(transaction=True)
def test_nifti_upload_end_to_end_through_the_database_queue(api, alice, model, phantom_files):
    image_path, label_path = phantom_files
    response = upload(api, image_path, label_path, mode="fast")
    assert response.status_code == 201, response.content
    job_id = response.json()["job"]["id"]
    job = SegmentationJob.objects.get(pk=job_id)
    assert DBTaskResult.objects.get(id=job.task_id).status == "READY"  # in the queue, not run

    run_db_worker()

    # The worker read the upload through the viewer's cache: the result page opens warm.
    files = jobs.job_files(job)
    cache = volume_cache()
    cache.wait()
    cached = {entry.key for entry in cache.entries() if entry.last_used is not None}
    assert SourceIdentity.of(files.image).key("image") in cached
    assert SourceIdentity.of(files.reference).key("label") in cached
    body = check_result_is_shown(api, alice, job_id)
    assert DBTaskResult.objects.get(id=job.task_id).status == "SUCCESSFUL"
    assert body["model"]["dataset_name"] == "Dataset999_Tiny" and body["model"]["mode"] == "fast"
    job.refresh_from_db()
    # The result lies on the uploaded file's grid, in its stored (LPS) orientation.
    uploaded, stored = nib.load(image_path), nib.load(jobs.media_path(job.prediction_path))
    assert stored.shape == uploaded.shape and nib.aff2axcodes(stored.affine) == ("L", "P", "S")
    assert np.allclose(stored.affine, uploaded.affine)
    assert stored.get_data_dtype() == np.uint8
    # ... and it is exactly what nnUNetPredictor gives for the file as its SimpleITKIO-planned
    # model reads it: the stored voxel order, not RAS+.
    direct = VertebraPredictor(PredictorConfig(model_dir=model, device="cpu", mirroring=False))
    expected = direct.predict_result(
        image=np.asanyarray(uploaded.dataobj), spacing_mm=uploaded.header.get_zooms()[:3]
    ).labels
    assert np.array_equal(np.asanyarray(stored.dataobj), expected)
    assert body["labels_present"] == sorted(set(np.unique(expected).tolist()) - {0})
    metrics = body["metrics"]
    assert metrics["counts"]["reference_labels"] == [19, 20, 21, 22]
    assert metrics["spine"]["dice"] > 0.3  # the tiny model does find the bone
    assert metrics["mean_of_vertebrae"]["labels"] == len(metrics["per_label"])


@pytest.mark.django_db(transaction=True)
def test_dicom_zip_end_to_end_with_mapped_labels(
    api, alice, model, foreign_model, settings, dicom_zip, dicom_labels
):
    """The real DICOM series, zipped, with its real ground truth (stored LAS, while the series
    converts to LPS): the grids must agree after conversion, and the model's own label values
    come out as CTSpine1K values through CTSPINE_NNUNET_LABEL_MAP."""
    settings.CTSPINE_NNUNET_MODEL_DIR = str(foreign_model)
    settings.CTSPINE_NNUNET_LABEL_MAP = FOREIGN_LABEL_MAP
    response = upload(api, dicom_zip, dicom_labels)
    assert response.status_code == 201, response.content
    stored = response.json()["upload"]
    assert stored["kind"] == "dicom" and stored["dicom_files"] == 20
    assert stored["shape"] == [512, 512, 20] and stored["axis_codes"] == "LPS"
    assert stored["label_values"] == [18, 19]

    run_db_worker()

    body = check_result_is_shown(api, alice, response.json()["job"]["id"])
    job = SegmentationJob.objects.get(pk=body["id"])
    prediction = nib.load(jobs.media_path(job.prediction_path))
    converted = nib.load(jobs.media_path(job.upload.image_path))
    assert prediction.shape == converted.shape == (512, 512, 20)
    assert np.allclose(prediction.affine, converted.affine)
    values = set(np.unique(np.asarray(prediction.dataobj)).tolist())
    assert values <= {0, 18, 19, 20, 21} and len(values) > 1  # T11, T12, L1, L2; sacrum dropped
    assert body["model"]["label_map"] == {"1": 18, "2": 19, "3": 20, "4": 21}
    assert body["metrics"]["counts"]["reference_labels"] == [18, 19]


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_end_to_end_through_rq_and_redis(api, alice, model, phantom_files, settings):
    """CTSPINE_TASKS_BACKEND=rq: the job goes through Redis to an rq worker (SimpleWorker, as a
    GPU machine runs it: one process that keeps the model loaded), against this test database."""
    if not service_listening(*REDIS):
        pytest.skip("Redis is not listening on 127.0.0.1:6379, so the rq backend is not tested")
    settings.CTSPINE_TASKS_BACKEND = "rq"
    settings.TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default"]}}
    settings.RQ_QUEUES = {"default": {"URL": REDIS_TEST_URL, "DEFAULT_TIMEOUT": 600}}
    queue = django_rq.get_queue("default", job_class=RQJob)
    queue.empty()
    try:
        response = upload(api, *phantom_files)
        assert response.status_code == 201, response.content
        job = SegmentationJob.objects.get(pk=response.json()["job"]["id"])
        assert queue.count == 1 and queue.job_ids == [job.task_id]

        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            worker = SimpleWorker([queue], connection=queue.connection, job_class=RQJob)
            assert worker.work(burst=True)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

        body = check_result_is_shown(api, alice, job.pk)
        assert body["metrics"]["counts"]["reference_labels"] == [19, 20, 21, 22]
        assert RQJob.fetch(job.task_id, connection=queue.connection).get_status() == "finished"
    finally:
        queue.empty()
