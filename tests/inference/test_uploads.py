"""Uploads: what is accepted, and every refusal (one test each), through the real API and page.

Each refusal must give a clear message naming the problem, store no row, queue nothing and leave
no file behind (the media folder is empty afterwards).
"""

from __future__ import annotations

import gzip
import io
import stat
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import StopUpload
from django.test import Client
from django_tasks_db.models import DBTaskResult
from rest_framework.test import APIClient

from inference.models import SegmentationJob, Upload
from inference.upload_handlers import StreamingUploadHandler
from tests.inference.conftest import files_under, phantom_volumes

pytestmark = pytest.mark.django_db


def nifti_bytes(data: np.ndarray, affine=None, *, compressed: bool = True) -> bytes:
    image = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine)
    raw = image.to_bytes()
    return gzip.compress(raw, compresslevel=1) if compressed else raw


@pytest.fixture(scope="module")
def phantom():
    return phantom_volumes(shape=(48, 48, 32))


@pytest.fixture
def ct_bytes(phantom) -> bytes:
    return nifti_bytes(phantom[0])


def upload(
    api, image: bytes, label: bytes | None = None, *, name="ct.nii.gz", label_name="seg.nii.gz"
):
    data = {"image": SimpleUploadedFile(name, image)}
    if label is not None:
        data["label"] = SimpleUploadedFile(label_name, label)
    return api.post("/api/uploads/", data, format="multipart")


def assert_refused(response, media: Path, status: int, *fragments: str, field: str | None = None):
    """Refused with a message holding every fragment; nothing stored, queued or left on disk."""
    assert response.status_code == status, response.content
    body = response.json()
    for fragment in fragments:
        assert fragment in body["error"], body["error"]
    if field is not None:
        assert body["field"] == field
    assert not Upload.objects.exists()
    assert not SegmentationJob.objects.exists()
    assert not DBTaskResult.objects.exists()
    assert files_under(media) == []


# --- accepted -------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the task is enqueued when the transaction commits
def test_nifti_upload_is_checked_stored_and_queued(api, model, media, phantom, ct_bytes):
    response = upload(api, ct_bytes, nifti_bytes(phantom[1]))
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["upload"]["shape"] == [48, 48, 32]
    assert body["upload"]["spacing_mm"] == [2.0, 2.0, 2.0]
    assert body["upload"]["label_values"] == [19, 20, 21, 22]
    assert body["upload"]["warnings"] == []
    assert body["job"]["status"] == "queued" and body["job"]["has_reference"]
    job = SegmentationJob.objects.get()
    assert job.task_id and DBTaskResult.objects.get(id=job.task_id).status == "READY"
    stored = {p.name for p in files_under(media)}
    assert stored == {"image.nii.gz", "label.nii.gz"}  # nothing left in incoming/


def test_uncompressed_nifti_is_stored_as_is(api, model, media, phantom):
    raw = nifti_bytes(phantom[0], compressed=False)
    response = upload(api, raw, name="ct.nii")
    assert response.status_code == 201, response.content
    (stored,) = files_under(media)
    assert stored.name == "image.nii" and stored.read_bytes() == raw


def test_mr_like_intensities_give_a_warning_not_a_refusal(api, model, media, phantom):
    mr = (phantom[0].astype(np.float32) + 1024).clip(0, None).astype(np.int16)  # nothing below 0
    response = upload(api, nifti_bytes(mr))
    assert response.status_code == 201, response.content
    (warning,) = response.json()["upload"]["warnings"]
    assert "may be an MR" in warning
    page = api.get(response.json()["job"]["urls"]["page"])
    assert "may be an MR" in page.content.decode()


def test_files_stream_to_disk_never_to_memory(tmp_path):
    handler = StreamingUploadHandler(directory=tmp_path, limit_bytes=100)
    handler.new_file("image", "../../etc/ct.nii.gz", "application/gzip", None)
    handler.receive_data_chunk(b"x" * 40, 0)
    handler.receive_data_chunk(b"y" * 40, 40)
    received = handler.file_complete(80)
    assert received.path.read_bytes() == b"x" * 40 + b"y" * 40
    assert received.path.parent.parent == tmp_path  # the user's path does not leave the folder
    assert received.name == "ct.nii.gz"
    handler.discard()
    assert files_under(tmp_path) == []


def test_streaming_stops_at_the_limit_and_deletes_the_partial_file(tmp_path):
    handler = StreamingUploadHandler(directory=tmp_path, limit_bytes=100)
    handler.new_file("image", "ct.nii.gz", "application/gzip", None)
    handler.receive_data_chunk(b"x" * 60, 0)
    with pytest.raises(StopUpload):
        handler.receive_data_chunk(b"x" * 60, 60)
    assert handler.too_large
    assert files_under(tmp_path) == []


# --- refused: not a usable NIfTI ----------------------------------------------------------------


def test_upload_without_an_image_or_with_a_bad_mode_names_the_parameter(
    api, model, media, ct_bytes
):
    response = api.post("/api/uploads/", {}, format="multipart")
    assert_refused(response, media, 400, "image: No file was submitted.", field="image")
    assert response.json()["image"] == ["No file was submitted."]
    response = api.post(
        "/api/uploads/",
        {"image": SimpleUploadedFile("ct.nii.gz", ct_bytes), "mode": "slow"},
        format="multipart",
    )
    assert_refused(response, media, 400, 'mode: "slow" is not a valid choice.', field="mode")


def test_not_nifti_is_refused(api, model, media):
    response = upload(api, b"just some text, not an image\n" * 20, name="notes.nii.gz")
    assert_refused(response, media, 400, "notes.nii.gz", "neither a NIfTI file", field="image")


def test_bad_nifti_magic_is_refused(api, model, media, phantom):
    raw = bytearray(nifti_bytes(phantom[0], compressed=False))
    raw[344:348] = b"zz+\x00"
    response = upload(api, bytes(raw), name="ct.nii")
    assert_refused(response, media, 400, "ct.nii", "NIfTI", field="image")


def test_truncated_file_is_refused(api, model, media, ct_bytes):
    response = upload(api, ct_bytes[: len(ct_bytes) // 2])
    assert_refused(response, media, 400, "ct.nii.gz", "truncated", field="image")


def test_corrupt_voxel_data_is_refused(api, model, media, ct_bytes):
    data = bytearray(ct_bytes)
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # damage the deflate stream, keep the gzip trailer
    response = upload(api, bytes(data))
    assert_refused(response, media, 400, "ct.nii.gz", "corrupt", field="image")


def test_2d_image_is_refused(api, model, media):
    response = upload(api, nifti_bytes(np.zeros((64, 64), np.int16)))
    assert_refused(response, media, 400, "2D image", "3D volume is required", field="image")


def test_4d_image_is_refused(api, model, media):
    response = upload(api, nifti_bytes(np.zeros((16, 16, 16, 3), np.int16)))
    assert_refused(response, media, 400, "4D image", field="image")


def test_implausible_spacing_is_refused(api, model, media, phantom):
    affine = np.diag([2.0, 2.0, 150.0, 1.0])
    response = upload(api, nifti_bytes(phantom[0], affine))
    assert_refused(response, media, 400, "150", "not a plausible CT spacing", field="image")


# --- refused: ground truth ---------------------------------------------------------------------


def test_label_on_another_grid_is_refused(api, model, media, ct_bytes, phantom):
    response = upload(api, ct_bytes, nifti_bytes(phantom[1][:, :, :30]))
    assert_refused(response, media, 400, "seg.nii.gz", "image's voxel grid", field="label")


def test_label_shifted_from_the_image_is_refused(api, model, media, ct_bytes, phantom):
    shifted = np.diag([2.0, 2.0, 2.0, 1.0])
    shifted[2, 3] = 10.0  # 10 mm along S
    response = upload(api, ct_bytes, nifti_bytes(phantom[1], shifted))
    assert_refused(response, media, 400, "affine differs", "10 mm", field="label")


def test_label_values_outside_0_25_are_refused(api, model, media, ct_bytes, phantom):
    labels = phantom[1].astype(np.int16)
    labels[labels == 22] = 26
    response = upload(api, ct_bytes, nifti_bytes(labels))
    assert_refused(response, media, 400, "label values must be 0-25", "0 to 26", field="label")


def test_fractional_label_values_are_refused(api, model, media, ct_bytes, phantom):
    labels = phantom[1].astype(np.float32) * 0.5
    response = upload(api, ct_bytes, nifti_bytes(labels))
    assert_refused(response, media, 400, "non-integer", field="label")


def test_label_that_is_not_nifti_is_refused(api, model, media, ct_bytes):
    response = upload(api, ct_bytes, b"PK\x05\x06" + bytes(18), label_name="seg.zip")
    assert_refused(response, media, 400, "seg.zip", "must be a NIfTI label map", field="label")


# --- refused: size --------------------------------------------------------------------------------


def test_upload_declared_over_the_limit_is_refused_unread(api, model, media, settings):
    settings.CTSPINE_UPLOAD_MAX_MB = 1
    response = upload(api, bytes(3 << 20))
    assert_refused(response, media, 413, "limit of 1 MB", "CTSPINE_UPLOAD_MAX_MB")


def test_upload_over_the_limit_is_stopped_while_streaming(api, model, media, settings):
    """Within the Content-Length allowance, so the bytes are counted as they arrive: the partial
    file is deleted as soon as the count passes the limit."""
    settings.CTSPINE_UPLOAD_MAX_MB = 1
    response = upload(api, bytes((1 << 20) + (1 << 19)))
    assert_refused(response, media, 413, "limit of 1 MB")


def test_form_shows_the_size_refusal(alice, model, media, settings):
    settings.CTSPINE_UPLOAD_MAX_MB = 1
    response = alice.post(
        "/uploads/new", {"image": SimpleUploadedFile("big.nii.gz", bytes(3 << 20))}
    )
    assert response.status_code == 413
    assert "limit of 1 MB" in response.content.decode()
    assert files_under(media) == [] and not Upload.objects.exists()


# --- refused: DICOM zips --------------------------------------------------------------------------


def zip_bytes(entries: dict[str, bytes], *, symlinks: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name in symlinks:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, content)
    return buffer.getvalue()


@pytest.fixture
def series(samples) -> dict[str, bytes]:
    """The real DICOM series as zip entries: name -> bytes."""
    folder = samples / "ts_example_dicom"
    return {f"series/{p.name}": p.read_bytes() for p in sorted(folder.iterdir())}


def test_zip_entry_with_absolute_path_is_refused(api, model, media, series):
    entries = {**series, "/etc/cron.d/evil": b"* * * * * root true\n"}
    response = upload(api, zip_bytes(entries), name="series.zip")
    assert_refused(response, media, 400, "/etc/cron.d/evil", "absolute path", field="image")


def test_zip_entry_going_up_is_refused(api, model, media, series):
    entries = {**series, "series/../../outside.dcm": b"x"}
    response = upload(api, zip_bytes(entries), name="series.zip")
    assert_refused(response, media, 400, "outside the archive", field="image")


def test_zip_symlink_is_refused(api, model, media, series):
    entries = {**series, "series/link": b"/etc/passwd"}
    response = upload(api, zip_bytes(entries, symlinks=("series/link",)), name="series.zip")
    assert_refused(response, media, 400, "series/link", "symbolic link", field="image")


def test_zip_with_too_many_files_is_refused(api, model, media):
    entries = {f"many/{n:05d}.dcm": b"" for n in range(5001)}
    response = upload(api, zip_bytes(entries), name="many.zip")
    assert_refused(response, media, 400, "5001 files", "at most 5000", field="image")


def test_zip_bomb_is_refused(api, model, media):
    response = upload(api, zip_bytes({"bomb.dcm": bytes(200 << 20)}), name="bomb.zip")
    assert_refused(response, media, 400, "would expand to 200 MB", "times its own size")


def test_unreadable_zip_is_refused(api, model, media):
    response = upload(api, b"PK\x03\x04" + b"garbage" * 100, name="broken.zip")
    assert_refused(response, media, 400, "broken.zip", "not a readable zip file")


def test_empty_zip_is_refused(api, model, media):
    response = upload(api, zip_bytes({"__MACOSX/._x": b"junk"}), name="empty.zip")
    assert_refused(response, media, 400, "the zip holds no files")


def test_zip_with_non_image_files_names_them(api, model, media, series):
    entries = {**series, "series/README.txt": b"exported by ...", "series/preview.jpg": b"\xff\xd8"}
    response = upload(api, zip_bytes(entries), name="series.zip")
    assert_refused(
        response, media, 400, "2 file(s) are not DICOM images", "series/README.txt",
        "series/preview.jpg",
    )  # fmt: skip


def test_zip_with_two_series_lists_them(api, model, media, series):
    entries = {}
    for number, (name, content) in enumerate(series.items()):
        dataset = pydicom.dcmread(io.BytesIO(content))
        dataset.SeriesInstanceUID = "1.2.826.0.1.1" if number % 2 else "1.2.826.0.1.2"
        dataset.SeriesDescription = "arterial" if number % 2 else "venous"
        buffer = io.BytesIO()
        dataset.save_as(buffer)
        entries[name] = buffer.getvalue()
    response = upload(api, zip_bytes(entries), name="two.zip")
    assert_refused(
        response, media, 400, "2 DICOM series", "'arterial' (10 files)", "'venous' (10 files)",
        "one series per zip",
    )  # fmt: skip


def test_zip_with_a_missing_slice_is_refused(api, model, media, series):
    entries = dict(list(series.items())[:9] + list(series.items())[10:])
    response = upload(api, zip_bytes(entries), name="gap.zip")
    assert_refused(response, media, 400, "not evenly spaced", "missing")


def test_zip_with_a_duplicate_slice_is_refused(api, model, media, series):
    name, content = next(iter(series.items()))
    entries = {**series, "copy/of-first.dcm": content}
    response = upload(api, zip_bytes(entries), name="dup.zip")
    assert_refused(response, media, 400, "same slice position")


# --- no model ---------------------------------------------------------------------------------------


def test_without_a_model_the_page_says_how_to_configure_one(alice, no_model):
    page = alice.get("/uploads/new").content.decode()
    assert "Segmentation is unavailable" in page
    assert "CTSPINE_NNUNET_MODEL_DIR" in page and "docs/models.md" in page
    assert "export_nnunet" in page and "CTSPINE_NNUNET_LABEL_MAP" in page
    assert 'type="submit" disabled' in page


def test_without_a_model_nothing_is_stored_or_queued(api, alice, no_model, media, ct_bytes):
    response = upload(api, ct_bytes)
    assert_refused(response, media, 503, "CTSPINE_NNUNET_MODEL_DIR")
    page = alice.post("/uploads/new", {"image": SimpleUploadedFile("ct.nii.gz", ct_bytes)})
    assert page.status_code == 503
    assert files_under(media) == [] and not Upload.objects.exists()


# --- the form ---------------------------------------------------------------------------------------


def test_form_refusal_is_shown_on_the_form(alice, model, media, ct_bytes, phantom):
    response = alice.post(
        "/uploads/new",
        {
            "image": SimpleUploadedFile("ct.nii.gz", ct_bytes),
            "label": SimpleUploadedFile("seg.nii.gz", nifti_bytes(phantom[1][:, :, :30])),
            "mode": "fast",
        },
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="field-label"' in page and "seg.nii.gz: does not lie on the image" in page
    assert files_under(media) == [] and not Upload.objects.exists()


def test_form_upload_redirects_to_the_job(alice, model, media, ct_bytes):
    response = alice.post(
        "/uploads/new", {"image": SimpleUploadedFile("ct.nii.gz", ct_bytes), "mode": "accurate"}
    )
    job = SegmentationJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert job.mode == "accurate" and job.title == "ct.nii.gz"


def test_form_requires_csrf_token(user, model, media, ct_bytes):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post("/uploads/new", {"image": SimpleUploadedFile("ct.nii.gz", ct_bytes)})
    assert response.status_code == 403
    assert files_under(media) == [] and not Upload.objects.exists()


def test_api_upload_failing_csrf_leaves_no_file(user, model, media, ct_bytes):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    response = upload(client, ct_bytes)
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    assert files_under(media) == [] and not Upload.objects.exists()


def test_upload_page_needs_a_login(client, model):
    response = client.get("/uploads/new")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
