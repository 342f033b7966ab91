"""Attacks on a running instance (issue 14), one test each: the hostile request is refused (or
survived) within bounded time and memory. Memory is the process's peak RSS growth around the
request (``tests.support.memory``), which sees the C allocations of SimpleITK, zlib and numpy.
"""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from inference.dicom_zip import check_decoded_size
from inference.models import Upload
from inference.uploads import UploadError
from tests.inference.conftest import files_under
from tests.support.hostile_files import deflated_dicom_zip, nifti_with_vox_offset
from tests.support.memory import peak_rss_growth

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
