"""Reading NIfTI as RAS+, header-only checks, and clear errors for bad input."""

from __future__ import annotations

import ast
import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ctspine.imaging.volume_io import (
    VolumeError,
    check_same_grid,
    read_header_info,
    read_volume,
)
from tests.ctspine.conftest import (
    SHAPE,
    SPACING,
    phantom_labels,
    phantom_ras,
    reorient,
    write_nifti,
)

IMAGING = Path(__file__).resolve().parents[3] / "ctspine"


def test_imaging_package_imports_no_django():
    for module in IMAGING.rglob("*.py"):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] in {"django", "rest_framework"} for n in names), module


def test_real_ras_image_matches_nibabel_canonical(sample_dir):
    path = sample_dir / "ts_example_ct_3mm.nii.gz"
    volume = read_volume(path)
    canonical = nib.as_closest_canonical(nib.load(path))
    assert volume.data.dtype == np.int16
    assert np.array_equal(volume.data, np.asanyarray(canonical.dataobj))
    assert np.allclose(volume.affine, canonical.affine)
    assert volume.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert volume.original_axcodes == "RAS"


def test_real_las_labels_match_nibabel_canonical(sample_dir):
    path = sample_dir / "ts_example_dicom_vertebrae.nii.gz"
    volume = read_volume(path, kind="label")
    canonical = nib.as_closest_canonical(nib.load(path))
    assert volume.original_axcodes == "LAS"
    assert volume.data.dtype == np.uint8
    assert np.array_equal(volume.data, np.asanyarray(canonical.dataobj))
    assert np.allclose(volume.affine, canonical.affine)
    assert set(np.unique(volume.data)) == {0, 18, 19}


def _check_pair(image_path, label_path):
    image, labels = read_volume(image_path, kind="image"), read_volume(label_path, kind="label")
    check_same_grid(
        image_shape=image.data.shape,
        image_affine=image.affine,
        label_shape=labels.data.shape,
        label_affine=labels.affine,
    )
    return image, labels


def test_real_pair_shares_grid(sample_dir):
    image, labels = _check_pair(
        sample_dir / "ts_example_ct_3mm.nii.gz", sample_dir / "ts_example_ct_3mm_vertebrae.nii.gz"
    )
    assert image.data.shape == labels.data.shape == (122, 101, 30)


def test_header_info_without_decoding(sample_dir):
    info = read_header_info(sample_dir / "ts_example_dicom_vertebrae.nii.gz")
    assert info.shape == (512, 512, 20)
    assert info.shape_ras == (512, 512, 20)
    assert info.spacing_ras == pytest.approx((0.9765625, 0.9765625, 2.0))
    assert info.axcodes == "LAS"
    assert info.dtype == "uint8"
    assert info.compressed and info.vox_offset == 352
    assert info.file_size == (sample_dir / "ts_example_dicom_vertebrae.nii.gz").stat().st_size


def test_header_info_reorders_shape_and_spacing(phantom_files):
    info = read_header_info(phantom_files["PIR"])
    assert info.axcodes == "PIR"
    assert info.shape == (SHAPE[1], SHAPE[2], SHAPE[0])
    assert info.shape_ras == SHAPE
    assert info.spacing_ras == pytest.approx(SPACING)


@pytest.mark.parametrize("codes", ["RAS", "LPS", "LAS", "PIR"])
def test_every_orientation_reads_as_the_same_ras_volume(phantom_files, codes):
    data, affine = phantom_ras()
    volume = read_volume(phantom_files[codes])
    assert volume.original_axcodes == codes
    assert np.array_equal(volume.data, data)
    assert np.allclose(volume.affine, affine, atol=1e-4)
    assert volume.spacing == pytest.approx(SPACING)


def test_trailing_singleton_dimension_is_3d(tmp_path):
    data, affine = phantom_ras()
    path = write_nifti(tmp_path / "t1.nii.gz", data[..., None], affine)
    assert read_volume(path).data.shape == SHAPE


def test_uncompressed_nii_and_scaling(tmp_path):
    data, affine = phantom_ras()
    image = nib.Nifti1Image((data.astype(np.int32) + 1024).astype(np.uint16), affine)
    image.header.set_slope_inter(1.0, -1024.0)
    path = tmp_path / "scaled.nii"
    nib.save(image, path)
    volume = read_volume(path)
    assert volume.data.dtype == np.int16
    assert np.array_equal(volume.data, data)


def _truncate(path: Path, keep: float) -> Path:
    raw = path.read_bytes()
    out = path.with_name("truncated_" + path.name)
    out.write_bytes(raw[: int(len(raw) * keep)])
    return out


def test_truncated_gzip(sample_dir, tmp_path):
    source = tmp_path / "ct.nii.gz"
    source.write_bytes((sample_dir / "ts_example_ct_3mm.nii.gz").read_bytes())
    truncated = _truncate(source, 0.6)
    with pytest.raises(VolumeError, match="truncated"):
        read_volume(truncated)
    with pytest.raises(VolumeError, match="truncated"):
        read_header_info(truncated)
    assert read_header_info(source).dtype == "int16"  # the intact file passes the trailer check


def test_truncated_uncompressed(tmp_path):
    data, affine = phantom_ras()
    path = tmp_path / "ct.nii"
    nib.save(nib.Nifti1Image(data, affine), path)
    truncated = _truncate(path, 0.7)
    with pytest.raises(VolumeError, match="truncated"):
        read_volume(truncated)
    with pytest.raises(VolumeError, match="truncated"):
        read_header_info(truncated)


def test_corrupt_gzip(phantom_files, tmp_path):
    raw = bytearray(phantom_files["RAS"].read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 64] = bytes(64)
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(bytes(raw))
    with pytest.raises(VolumeError, match="corrupt or truncated gzip"):
        read_volume(path)


def test_a_gzip_file_of_several_members_reads_like_one(phantom_files, tmp_path):
    # Single members are inflated straight from a memory map; concatenated members (gzip allows
    # them, some tools write them) take the gzip module's path: same volume either way.
    source = phantom_files["RAS"]
    inner = gzip.decompress(source.read_bytes())
    half = len(inner) // 2
    path = tmp_path / "members.nii.gz"
    path.write_bytes(gzip.compress(inner[:half]) + gzip.compress(inner[half:]))
    assert np.array_equal(read_volume(path).data, read_volume(source).data)


def test_a_missing_file_is_a_volume_error(tmp_path):
    with pytest.raises(VolumeError, match="cannot read file"):
        read_volume(tmp_path / "gone.nii.gz")


def test_not_nifti(tmp_path):
    text = tmp_path / "notes.nii.gz"
    text.write_bytes(b"this is not an image\n" * 40)
    gz = tmp_path / "random.nii.gz"
    gz.write_bytes(gzip.compress(np.random.default_rng(0).bytes(4000)))
    for path in (text, gz):
        with pytest.raises(VolumeError, match="not a NIfTI"):
            read_volume(path)
        with pytest.raises(VolumeError, match="not a NIfTI"):
            read_header_info(path)


def test_missing_file(tmp_path):
    with pytest.raises(VolumeError, match="cannot read"):
        read_volume(tmp_path / "absent.nii.gz")


def test_4d_and_2d_rejected(tmp_path):
    data, affine = phantom_ras()
    four = write_nifti(tmp_path / "4d.nii.gz", np.stack([data, data], axis=-1), affine)
    two = write_nifti(tmp_path / "2d.nii.gz", data[:, :, 0], affine)
    one_slice = write_nifti(tmp_path / "slice.nii.gz", data[:, :, :1], affine)
    with pytest.raises(VolumeError, match="4D"):
        read_volume(four)
    with pytest.raises(VolumeError, match="4D"):
        read_header_info(four)
    for path in (two, one_slice):
        with pytest.raises(VolumeError, match="2D"):
            read_volume(path)


def test_grid_mismatch(tmp_path):
    data, affine = phantom_ras()
    image = write_nifti(tmp_path / "image.nii.gz", data, affine)
    cropped = write_nifti(tmp_path / "cropped.nii.gz", phantom_labels()[:, :, :-1], affine)
    shifted_affine = affine.copy()
    shifted_affine[0, 3] += 0.01
    shifted = write_nifti(tmp_path / "shifted.nii.gz", phantom_labels(), shifted_affine)
    with pytest.raises(VolumeError, match="label grid"):
        _check_pair(image, cropped)
    with pytest.raises(VolumeError, match="affine differs"):
        _check_pair(image, shifted)


def test_grid_tolerance_and_orientation_independence(tmp_path, phantom_label_file):
    data, affine = phantom_ras()
    image = write_nifti(tmp_path / "image.nii.gz", data, affine)
    _, labels = _check_pair(image, phantom_label_file)  # LPS labels on the RAS image's grid
    assert np.array_equal(labels.data, phantom_labels())
    nudged = affine.copy()
    nudged[:3, 3] += 0.0004
    check_same_grid(image_shape=SHAPE, image_affine=affine, label_shape=SHAPE, label_affine=nudged)


@pytest.mark.parametrize(
    ("values", "dtype", "message"),
    [(26, np.uint8, "0-25"), (-1, np.int16, "0-25"), (2.5, np.float32, "non-integer")],
)
def test_label_values_out_of_range(tmp_path, values, dtype, message):
    _, affine = phantom_ras()
    labels = phantom_labels().astype(dtype)
    labels[0, 0, 0] = values
    path = write_nifti(tmp_path / "labels.nii.gz", labels, affine)
    with pytest.raises(VolumeError, match=message):
        read_volume(path, kind="label")


def test_float_labels_become_uint8(tmp_path):
    _, affine = phantom_ras()
    path = write_nifti(tmp_path / "labels.nii.gz", phantom_labels().astype(np.float32), affine)
    volume = read_volume(path, kind="label")
    assert volume.data.dtype == np.uint8
    assert np.array_equal(volume.data, phantom_labels())


def test_reorient_helper_round_trip():
    data, affine = phantom_ras()
    file_data, file_affine = reorient(data, affine, "LPS")
    assert np.array_equal(file_data[::-1, ::-1, :], data)
    assert "".join(nib.aff2axcodes(file_affine)) == "LPS"
