"""Hostile NIfTI headers (issue 14) are refused by the header reading every path shares: the
upload check, ingestion (``read_header_info``) and the cache reader (``read_volume``), before
any large read; peak RSS growth around each read is measured (``tests.support.memory``)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ctspine.imaging.volume_io import (
    MAX_VOX_OFFSET_BYTES,
    VolumeError,
    read_header_info,
    read_volume,
)
from tests.support.hostile_files import nifti_with_vox_offset
from tests.support.memory import peak_rss_growth

GIB = 1 << 30


@pytest.fixture(scope="module")
def far_offset(tmp_path_factory) -> Path:
    """A ~10 MB .nii.gz whose header says vox_offset = 1 GiB (zeros up to there)."""
    path = tmp_path_factory.mktemp("hostile") / "far_offset.nii.gz"
    return nifti_with_vox_offset(path, vox_offset=GIB)


def test_a_far_vox_offset_is_refused_when_the_header_is_read(far_offset):
    with peak_rss_growth() as peak, pytest.raises(VolumeError) as refused:
        read_header_info(far_offset)
    assert f"{GIB} bytes into the file (vox_offset)" in str(refused.value)
    assert f"at most {MAX_VOX_OFFSET_BYTES} bytes" in str(refused.value)
    assert peak.mib < 5, f"reading the header took {peak.mib:.0f} MiB"


def test_a_far_vox_offset_is_refused_before_the_cache_reader_inflates_the_file(far_offset):
    # Before the check, read_volume inflated the whole file: +2 GiB.
    with peak_rss_growth() as peak, pytest.raises(VolumeError, match="vox_offset"):
        read_volume(far_offset)
    # Only the compressed file itself (~10 MB) is read.
    assert peak.mib < 2 * far_offset.stat().st_size / 2**20 + 5, f"{peak.mib:.0f} MiB"


def test_a_usual_vox_offset_with_an_extension_is_read(tmp_path):
    path = nifti_with_vox_offset(tmp_path / "extension.nii.gz", vox_offset=4096, shape=(8, 6, 4))
    assert read_header_info(path).vox_offset == 4096
    assert read_volume(path).data.shape == (8, 6, 4)


def _zero_voxel_size(path: Path, *, sform: bool) -> Path:
    image = nib.Nifti1Image(np.zeros((8, 8, 8), dtype=np.int16), np.eye(4))
    image.header["pixdim"][1:4] = 0
    image.set_qform(None, code=0)
    if sform:
        image.set_sform(np.diag([0.7, 0.7, 2.0, 1.0]), code=1)
    else:
        image.set_sform(None, code=0)
    image.header["vox_offset"] = 352
    raw = image.header.binaryblock  # to_filename would "fix" pixdim; write the block by hand
    path.write_bytes(raw + b"\0" * 4 + np.zeros(8**3, dtype=np.int16).tobytes())
    return path


def test_zero_voxel_size_without_qform_or_sform_is_refused(tmp_path):
    path = _zero_voxel_size(tmp_path / "no_size.nii", sform=False)
    for read in (read_header_info, read_volume):
        with pytest.raises(VolumeError) as refused:
            read(path)
        assert "voxel size is unknown: pixdim is 0 x 0 x 0" in str(refused.value)


def test_zero_pixdim_with_an_sform_takes_the_sform_spacing(tmp_path):
    path = _zero_voxel_size(tmp_path / "sform.nii", sform=True)
    assert read_header_info(path).spacing_ras == pytest.approx((0.7, 0.7, 2.0))
