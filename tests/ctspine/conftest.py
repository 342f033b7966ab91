"""Fixtures for the pure imaging tests: the real samples in ../shared/samples and small synthetic
volumes of one known anatomy written in several orientations. No Django needed."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ctspine import volume_cache
from tests.ctspine import cache_workers

REPO = Path(__file__).resolve().parents[2]
SAMPLES = Path(os.environ.get("CTSPINE_SHARED_DIR", REPO.parent / "shared")) / "samples"

# Synthetic phantom, RAS+ voxel order (i: patient Right, j: Anterior, k: Superior).
SHAPE = (24, 20, 16)
SPACING = (0.8, 0.9, 2.5)
ORIGIN = (-10.0, 20.0, -300.0)
AIR, TISSUE, BONE = -1000, 40, 1200
LEFT_MARK, ANTERIOR_MARK, SUPERIOR_MARK = 700, 500, 300  # HU of three markers


def phantom_ras() -> tuple[np.ndarray, np.ndarray]:
    """A body with markers on the patient's left, anterior and superior sides; (data, affine)."""
    x, y, z = SHAPE
    data = np.full(SHAPE, AIR, dtype=np.int16)
    data[2:-2, 2:-2, :] = TISSUE
    data[10:14, 4:8, :] = BONE  # a posterior "spine" column
    data[2:5, 8:12, 6:10] = LEFT_MARK  # low i = patient's left
    data[10:14, y - 5 : y - 2, 6:10] = ANTERIOR_MARK  # high j = anterior
    data[6:9, 8:12, z - 3 :] = SUPERIOR_MARK  # high k = superior
    data += np.arange(x * y * z, dtype=np.int16).reshape(SHAPE, order="F") % 7  # break symmetry
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = ORIGIN
    return data, affine


def phantom_labels() -> np.ndarray:
    """Labels on the phantom's grid: two vertebrae in the spine column, L1 (20) below L2 (21)."""
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[10:14, 4:8, 2:7] = 20
    labels[10:14, 4:8, 8:13] = 21
    return labels


def reorient(data: np.ndarray, affine: np.ndarray, axcodes: str) -> tuple[np.ndarray, np.ndarray]:
    """The same anatomy stored in another orientation (e.g. "LPS"): (data, affine) for the file."""
    transform = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt(tuple(axcodes))
    )
    out = nib.orientations.apply_orientation(data, transform)
    return np.ascontiguousarray(out), affine @ nib.orientations.inv_ornt_aff(transform, data.shape)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    if not SAMPLES.exists():
        pytest.skip(f"real CT samples {SAMPLES} are absent (tests read them from ../shared)")
    return SAMPLES


@pytest.fixture
def phantom_files(tmp_path) -> dict[str, Path]:
    """The phantom written as RAS, LPS, LAS and PIR .nii.gz files: {axcodes: path}."""
    data, affine = phantom_ras()
    files = {}
    for codes in ("RAS", "LPS", "LAS", "PIR"):
        file_data, file_affine = reorient(data, affine, codes)
        assert "".join(nib.aff2axcodes(file_affine)) == codes
        files[codes] = write_nifti(tmp_path / f"phantom_{codes}.nii.gz", file_data, file_affine)
    return files


@pytest.fixture
def phantom_label_file(tmp_path) -> Path:
    """Phantom labels stored LPS (the image files' grid in another orientation)."""
    _, affine = phantom_ras()
    file_data, file_affine = reorient(phantom_labels(), affine, "LPS")
    return write_nifti(tmp_path / "phantom_labels_LPS.nii.gz", file_data, file_affine)


@pytest.fixture
def conversions(tmp_path, monkeypatch) -> Path:
    """Count volume-cache conversions in this process: returns the counter file (one line per
    conversion)."""
    counter = tmp_path / "conversions.log"
    counter.touch()
    monkeypatch.setattr(volume_cache.VolumeCache, "_convert", volume_cache.VolumeCache._convert)
    cache_workers.count_conversions(counter)
    return counter
