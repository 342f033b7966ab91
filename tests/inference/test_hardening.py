"""Attacks on a running instance (issue 14), one test each: the hostile request is refused (or
survived) within bounded time and memory. Memory is the process's peak RSS growth around the
request (``tests.support.memory``), which sees the C allocations of SimpleITK, zlib and numpy.
"""

from __future__ import annotations

import errno
import os
import time
from datetime import timedelta

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from django_tasks_db.models import DBTaskResult
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from ctspine.imaging.volume_io import write_nifti
from ctspine.volume_cache import SourceIdentity
from inference import tasks
from inference.dicom_zip import _ras_affine, _voxels, check_decoded_size
from inference.models import SegmentationJob, Upload
from inference.tasks import enqueue, failure_text, reap_dead_jobs
from inference.uploads import UploadError
from tests.inference.conftest import files_under, phantom_volumes, run_db_worker
from tests.inference.test_uploads import nifti_bytes
from tests.support.hostile_files import deflated_dicom_zip, nifti_with_vox_offset
from tests.support.memory import peak_rss_growth
from viewer.tiles.volumes import volume_cache

pytestmark = pytest.mark.django_db

# Each refused attack must cost less than this much resident memory (MiB); the attacks below aim
# at hundreds of MiB to GiB.
REFUSAL_BUDGET_MIB = 40


def post_image(api, path, name):
    with open(path, "rb") as handle:
        data = {"image": SimpleUploadedFile(name, handle.read())}
    return api.post("/api/uploads/", data, format="multipart")


# --- 1: a deflated-DICOM zip must not expand inside the request -----------------------------------


def test_deflated_dicom_zip_is_refused_from_its_headers(api, model, media, tmp_path):
    # Two 8192 x 8192 int16 slices: 256 MiB of pixels in a zip of about 260 kB.
    bomb = deflated_dicom_zip(tmp_path / "bomb.zip", rows=8192, columns=8192, slices=2)
    assert bomb.stat().st_size < 300_000
    with peak_rss_growth() as peak:
        response = post_image(api, bomb, "bomb.zip")
    assert response.status_code == 413, response.content
    message = response.json()["error"]
    assert "8192 x 8192" in message and "2 slices" in message and "256 MB" in message, message
    assert peak.mib < REFUSAL_BUDGET_MIB, f"the refusal took {peak.mib:.0f} MiB"
    assert not Upload.objects.exists()
    assert files_under(media) == []


def test_deflate_bomb_outside_the_pixels_is_refused_in_bounded_memory(api, model, media, tmp_path):
    # Small 64 x 64 slices whose deflate streams carry 300 MB of zeros after the pixel data.
    bomb = deflated_dicom_zip(
        tmp_path / "bomb.zip", rows=64, columns=64, slices=2, trailing_bytes=300 << 20
    )
    with peak_rss_growth() as peak:
        response = post_image(api, bomb, "bomb.zip")
    assert response.status_code == 413, response.content
    assert response.json()["error"] == (
        "bomb.zip: its deflated DICOM files inflate to more than 100 MB, the most a zip of this"
        " size may hold"
    )
    assert peak.mib < REFUSAL_BUDGET_MIB, f"the refusal took {peak.mib:.0f} MiB"
    assert not Upload.objects.exists() and files_under(media) == []


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        # 6 MB of private tag before Rows: pydicom stops reading the header at 4 MB.
        (
            {"private_bytes": 6 << 20},
            "its header, the tags before the pixel data, is larger than 4 MB or cannot be read",
        ),
        # No preamble: pydicom refuses the file, GDCM reads it (and inflates it) all the same.
        ({"preamble": False}, "not a DICOM file: no 'DICM' marker at byte 128"),
    ],
    ids=["header-beyond-4MB", "no-preamble"],
)
def test_deflated_dicom_whose_size_cannot_be_read_is_refused(
    api, model, media, tmp_path, options, reason
):
    # Two 8192 x 8192 slices again, but hiding their size from the header check: before the fix
    # the check skipped such files and SimpleITK decoded them (+600 MiB per slice).
    bomb = deflated_dicom_zip(tmp_path / "bomb.zip", rows=8192, columns=8192, slices=2, **options)
    with peak_rss_growth() as peak:
        response = post_image(api, bomb, "bomb.zip")
    assert response.status_code == 400, response.content
    message = response.json()["error"]
    assert message.startswith(
        "bomb.zip: 2 file(s) are not DICOM images whose size can be read from their header:"
        f" series/slice000.dcm ({reason}), series/slice001.dcm ({reason})."
    ), message
    assert peak.mib < REFUSAL_BUDGET_MIB, f"the refusal took {peak.mib:.0f} MiB"
    assert not Upload.objects.exists() and files_under(media) == []


def test_a_converted_series_keeps_simpleitks_geometry(tmp_path):
    # An oblique image: the affine written through the project's NIfTI writer is the one
    # SimpleITK's own writer puts in the header (LPS -> RAS).
    image = sitk.Image(5, 4, 3, sitk.sitkInt16)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((-12.0, 30.5, 101.0))
    rotation = sitk.VersorTransform((0.3, -0.2, 1.0), 0.4).GetMatrix()
    image.SetDirection(rotation)
    image[1, 2, 0] = 77
    sitk.WriteImage(image, str(tmp_path / "sitk.nii.gz"))
    ours = write_nifti(tmp_path / "ours.nii.gz", _voxels(image), _ras_affine(image))
    theirs, written = nib.load(tmp_path / "sitk.nii.gz"), nib.load(ours)
    assert np.allclose(written.affine, theirs.affine, atol=1e-5)
    assert np.array_equal(np.asanyarray(written.dataobj), np.asanyarray(theirs.dataobj))
    assert written.dataobj[1, 2, 0] == 77


def test_dicom_series_beyond_the_voxel_cap_is_refused_from_its_headers(tmp_path):
    # Headers claiming 65535 x 65535 pixels (4.3 G voxels), with no pixel data at all: only the
    # headers are read, so the refusal names the voxel count.
    path = tmp_path / "huge.dcm"
    header = Dataset()
    header.Rows = header.Columns = 65535
    header.BitsAllocated = 8
    header.SamplesPerPixel = 1
    header.file_meta = FileMetaDataset()
    header.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    header.file_meta.MediaStorageSOPClassUID = CTImageStorage
    header.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    header.save_as(path, enforce_file_format=True)
    with pytest.raises(UploadError) as refused:
        check_decoded_size({path: "huge.dcm"}, name="huge.zip", max_bytes=1 << 40)
    assert refused.value.status == 413
    assert "1 slices of up to 65535 x 65535 pixels x 1 bytes: 4294836225 voxels" in str(
        refused.value
    )


# --- 2: a huge vox_offset is refused from the header ----------------------------------------------


def test_upload_with_a_far_vox_offset_is_refused_from_its_header(api, model, media, tmp_path):
    # ~10 MB on the wire; before the check, the upload check read 1 GiB of "header" in one call.
    hostile = nifti_with_vox_offset(tmp_path / "far.nii.gz", vox_offset=1 << 30)
    with peak_rss_growth() as peak:
        response = post_image(api, hostile, "far.nii.gz")
    assert response.status_code == 400, response.content
    assert "1073741824 bytes into the file (vox_offset)" in response.json()["error"]
    assert peak.mib < REFUSAL_BUDGET_MIB, f"the refusal took {peak.mib:.0f} MiB"
    assert not Upload.objects.exists()
    assert files_under(media) == []


# --- 3: work on the model's grid is bounded before queueing; users take turns ---------------------


def coarse_ct_bytes() -> bytes:
    """32^3 voxels of 20 mm: under 1 kB compressed, 320^3 voxels on a 2 mm model grid."""
    data = np.full((32, 32, 32), -1000, dtype=np.int16)
    return nifti_bytes(data, np.diag([20.0, 20.0, 20.0, 1.0]))


def test_upload_too_large_on_the_model_grid_is_refused_with_the_figure(api, model, media, settings):
    settings.CTSPINE_MAX_MODEL_VOXELS = 16_000_000
    hostile = coarse_ct_bytes()
    assert len(hostile) < 1000
    started = time.perf_counter()
    response = api.post(
        "/api/uploads/", {"image": SimpleUploadedFile("coarse.nii.gz", hostile)}, format="multipart"
    )
    elapsed = time.perf_counter() - started
    assert response.status_code == 413, response.content
    assert response.json()["error"] == (
        "coarse.nii.gz: 32 x 32 x 32 voxels of 20 x 20 x 20 mm become 320 x 320 x 320 = 32.8"
        " million voxels on the model's 2 x 2 x 2 mm grid; at most 16.0 million are segmented"
        " (CTSPINE_MAX_MODEL_VOXELS)"
    )
    assert elapsed < 10  # refused from the header: nothing ran
    assert not Upload.objects.exists() and not SegmentationJob.objects.exists()
    assert files_under(media) == []


def test_queued_plus_running_jobs_per_user_are_limited(api, bob_api, model, media, settings):
    settings.CTSPINE_MAX_ACTIVE_JOBS_PER_USER = 2
    small = nifti_bytes(np.zeros((8, 8, 8), dtype=np.int16))
    for _ in range(2):
        created = api.post(
            "/api/uploads/", {"image": SimpleUploadedFile("ct.nii.gz", small)}, format="multipart"
        )
        assert created.status_code == 201, created.content
    refused = api.post(
        "/api/uploads/", {"image": SimpleUploadedFile("ct.nii.gz", small)}, format="multipart"
    )
    assert refused.status_code == 429, refused.content
    assert refused.json()["error"].startswith(
        "You already have 2 jobs queued or running; at most 2 are allowed at once"
    )
    upload = Upload.objects.first()
    again = api.post("/api/jobs/", {"upload_id": upload.pk}, format="json")
    assert again.status_code == 429, again.content
    assert Upload.objects.count() == 2 and SegmentationJob.objects.count() == 2
    # Another user is not held back by the first one's jobs.
    other = bob_api.post(
        "/api/uploads/", {"image": SimpleUploadedFile("ct.nii.gz", small)}, format="multipart"
    )
    assert other.status_code == 201, other.content


def test_workers_take_users_jobs_in_turn(user, other_user, django_user_model):
    carol = django_user_model.objects.create_user("carol", password="pw-carol-123")
    queued = [
        SegmentationJob.objects.create(owner=owner, title=f"{owner.username} {n}")
        for owner, n in [(user, 1), (user, 2), (user, 3), (other_user, 1), (carol, 1), (user, 4)]
    ]
    assert [job.status for job in queued] == ["queued"] * 6
    order = []
    while (job := SegmentationJob.objects.claim_in_turn(worker="w")) is not None:
        order.append(job.title)
        job.fail("done")  # one worker: each job ends before the next is claimed
    alice = user.username
    assert order == [
        f"{alice} 1",
        f"{other_user.username} 1",
        "carol 1",
        f"{alice} 2",
        f"{alice} 3",
        f"{alice} 4",
    ]


# --- 12: owners delete their uploads and jobs, files included --------------------------------------


@pytest.mark.django_db(transaction=True)  # the task is enqueued when the transaction commits
def test_owner_deletes_a_finished_job_then_the_upload_and_nothing_is_left(
    api, bob_api, model, media
):
    image = nifti_bytes(phantom_volumes(shape=(48, 48, 32))[0])
    created = api.post(
        "/api/uploads/", {"image": SimpleUploadedFile("ct.nii.gz", image)}, format="multipart"
    )
    assert created.status_code == 201, created.content
    upload_id, job_id = created.json()["upload"]["id"], created.json()["job"]["id"]
    run_db_worker()
    job = SegmentationJob.objects.get(pk=job_id)
    assert job.status == "succeeded", job.error
    assert (media / job.prediction_path).is_file()
    assert bob_api.delete(f"/api/jobs/{job_id}/").status_code == 404
    assert bob_api.delete(f"/api/uploads/{upload_id}/").status_code == 404

    assert api.delete(f"/api/jobs/{job_id}/").status_code == 204
    assert not SegmentationJob.objects.exists()
    assert not (media / "jobs" / str(job_id)).exists()
    assert api.delete(f"/api/uploads/{upload_id}/").status_code == 204
    assert not Upload.objects.exists()
    assert files_under(media) == []


@pytest.mark.django_db(transaction=True)  # the task is enqueued when the transaction commits
def test_deleting_a_job_and_its_upload_deletes_their_volume_cache_entries(
    api, model, media, settings, tmp_path
):
    settings.CTSPINE_CACHE_DIR = tmp_path / "cache"  # a cache of this test's own
    image = nifti_bytes(phantom_volumes(shape=(48, 48, 32))[0])
    created = api.post(
        "/api/uploads/", {"image": SimpleUploadedFile("ct.nii.gz", image)}, format="multipart"
    )
    upload_id, job_id = created.json()["upload"]["id"], created.json()["job"]["id"]
    run_db_worker()
    assert api.get(f"/api/jobs/{job_id}/slices/axial/10.png").status_code == 200
    cache = volume_cache()
    cache.wait()
    prediction = media / SegmentationJob.objects.get(pk=job_id).prediction_path
    upload_image = media / Upload.objects.get(pk=upload_id).image_path
    entries = {entry.key for entry in cache.entries()}
    image_key = SourceIdentity.of(upload_image).key("image")
    prediction_key = SourceIdentity.of(prediction).key("label")
    assert {image_key, prediction_key} <= entries  # the tile put both in the cache

    assert api.delete(f"/api/jobs/{job_id}/").status_code == 204
    assert prediction_key not in {entry.key for entry in cache.entries()}
    assert image_key in {entry.key for entry in cache.entries()}  # the upload is still there
    assert api.delete(f"/api/uploads/{upload_id}/").status_code == 204
    assert cache.entries() == []
    assert files_under(settings.CTSPINE_CACHE_DIR / "volumes") == []


def test_a_running_job_and_its_upload_cannot_be_deleted(api, model, media, user):
    small = nifti_bytes(np.zeros((8, 8, 8), dtype=np.int16))
    created = api.post(
        "/api/uploads/", {"image": SimpleUploadedFile("ct.nii.gz", small)}, format="multipart"
    )
    job = SegmentationJob.objects.claim(created.json()["job"]["id"], worker="w")
    response = api.delete(f"/api/jobs/{job.pk}/")
    assert response.status_code == 409
    assert response.json()["error"] == (
        f"job {job.pk} is running; cancel it, then delete it once it has stopped"
    )
    assert api.delete(f"/api/uploads/{job.upload_id}/").status_code == 409
    assert Upload.objects.count() == 1 and SegmentationJob.objects.count() == 1
    assert len(files_under(media)) == 1  # the upload's image stays


# --- 12: a chunked upload body gets a message that says so ----------------------------------------


def test_a_chunked_upload_is_refused_with_a_message_that_says_so(api, alice, model, media):
    # What a script piping into curl sends: no Content-Length, the body in chunks.
    body = {"image": SimpleUploadedFile("ct.nii.gz", b"\x1f\x8b" + bytes(100))}
    response = api.post(
        "/api/uploads/",
        body,
        format="multipart",
        HTTP_TRANSFER_ENCODING="chunked",
        CONTENT_LENGTH="",
    )
    assert response.status_code == 411
    assert response.json()["error"].startswith(
        "The upload was sent in chunks (Transfer-Encoding: chunked) without its length"
    )
    page = alice.post("/uploads/new", body, HTTP_TRANSFER_ENCODING="chunked", CONTENT_LENGTH="")
    assert page.status_code == 411
    assert "sent in chunks (Transfer-Encoding: chunked)" in page.content.decode()
    assert not Upload.objects.exists() and files_under(media) == []


# --- 12: the tasks backend's row of a dead worker does not stay RUNNING ---------------------------


@pytest.mark.django_db(transaction=True)  # the reaper re-queues after its transaction commits
def test_the_task_row_of_a_dead_worker_is_failed_with_its_job_reaped(user, model, settings):
    settings.CTSPINE_TASKS_BACKEND = "db"
    job = SegmentationJob.objects.create(owner=user, title="ct.nii.gz")
    enqueue(job.pk)
    task_id = SegmentationJob.objects.get(pk=job.pk).task_id
    # A worker took the task and the job, then died: row and job stay RUNNING, silent.
    long_ago = timezone.now() - timedelta(hours=1)
    DBTaskResult.objects.filter(id=task_id).update(status="RUNNING", started_at=long_ago)
    SegmentationJob.objects.claim(job.pk, worker="dead:1", task_id=task_id)
    SegmentationJob.objects.filter(pk=job.pk).update(heartbeat_at=long_ago)

    assert reap_dead_jobs() == [(job.pk, "queued")]
    dead_row = DBTaskResult.objects.get(id=task_id)
    assert dead_row.status == "FAILED"
    assert dead_row.traceback.startswith("The worker running this task stopped")
    # The re-queued job has a new task of its own, waiting.
    requeued = SegmentationJob.objects.get(pk=job.pk)
    assert requeued.task_id != task_id
    assert DBTaskResult.objects.get(id=requeued.task_id).status == "READY"


@pytest.mark.django_db
def test_the_task_row_of_a_live_job_stays_running(user, model, settings):
    settings.CTSPINE_TASKS_BACKEND = "db"
    job = SegmentationJob.objects.create(owner=user, title="ct.nii.gz")
    enqueue(job.pk)
    task_id = SegmentationJob.objects.get(pk=job.pk).task_id
    long_ago = timezone.now() - timedelta(hours=1)
    DBTaskResult.objects.filter(id=task_id).update(status="RUNNING", started_at=long_ago)
    SegmentationJob.objects.claim(job.pk, worker="alive:1", task_id=task_id)  # heartbeat now
    assert reap_dead_jobs() == []
    assert DBTaskResult.objects.get(id=task_id).status == "RUNNING"


@pytest.mark.django_db
def test_reaping_with_the_rq_backend_leaves_the_database_backends_rows_alone(user, settings):
    # rq task ids are not the database backend's UUIDs: reaping must not query that table.
    settings.CTSPINE_TASKS_BACKEND = "rq"
    job = SegmentationJob.objects.create(owner=user, title="ct.nii.gz")
    SegmentationJob.objects.claim(job.pk, worker="alive:1", task_id="TWkERSdOSM0JngUsoTCf8U")
    assert reap_dead_jobs() == []
    assert SegmentationJob.objects.get(pk=job.pk).status == SegmentationJob.Status.RUNNING


# --- 10: messages name files, not the server's paths to them --------------------------------------


@pytest.mark.django_db(transaction=True)  # the job's task runs after the upload commits
def test_a_job_failing_on_a_server_file_names_the_file_not_its_path(
    api, model, media, monkeypatch, settings
):
    settings.CTSPINE_TASKS_BACKEND = "db"
    hidden = media / "jobs" / "results" / "prediction.nii.gz"

    def denied(job, monitor):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(hidden))

    monkeypatch.setattr(tasks, "_run", denied)
    small = nifti_bytes(np.zeros((8, 8, 8), dtype=np.int16))
    created = api.post(
        "/api/uploads/", {"image": SimpleUploadedFile("ct.nii.gz", small)}, format="multipart"
    )
    run_db_worker()
    job = SegmentationJob.objects.get(pk=created.json()["job"]["id"])
    assert job.status == SegmentationJob.Status.FAILED
    assert job.error == (
        "Segmentation failed unexpectedly (PermissionError: prediction.nii.gz: Permission"
        " denied). The worker's log has the details."
    )
    shown = api.get(f"/api/jobs/{job.pk}/").content.decode()
    assert str(media) not in shown and "prediction.nii.gz: Permission denied" in shown
    row = DBTaskResult.objects.get(id=job.task_id)
    assert str(hidden) in row.traceback  # the operator's record keeps the whole path


def test_failure_text_leaves_out_the_servers_folders(settings, tmp_path):
    settings.CTSPINE_MEDIA_DIR = tmp_path / "media"
    settings.CTSPINE_CACHE_DIR = tmp_path / "media" / "cache"  # nested: the deepest goes first
    error = RuntimeError(
        f"cannot open {tmp_path}/media/jobs/3/out.nii.gz nor {tmp_path}/media/cache/x/volume.b2nd"
    )
    assert failure_text(error) == "cannot open jobs/3/out.nii.gz nor x/volume.b2nd"
    wrapped = ValueError("no predictions")
    wrapped.__cause__ = FileNotFoundError(2, "No such file or directory", f"{tmp_path}/p/a.nii.gz")
    assert failure_text(wrapped) == "a.nii.gz: No such file or directory"
