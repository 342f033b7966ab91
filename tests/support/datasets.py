"""Test-only variants of the phantom dataset: a copy of it with label files rewritten so that a
test can make the curated anomaly lists and the labels disagree, or replace a case by a volume of
known geometry. The phantom writer itself is left as it is."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from ctspine.phantom.plan import PhantomSpec, plan_cases

PHANTOM_CASES, PHANTOM_SEED = 24, 7  # the phantom of tests/conftest.py


def phantom_specs() -> dict[str, PhantomSpec]:
    """The planned cases of the test phantom, by case id."""
    return {s.case_id: s for s in plan_cases(PHANTOM_CASES, seed=PHANTOM_SEED, full_size=False)}


def copy_dataset(root: Path, destination: Path) -> Path:
    """A copy of the dataset at ``root`` that a test may change."""
    return Path(shutil.copytree(root, destination))


def relabel(path: Path, mapping: dict[int, int]) -> None:
    """Rewrite the label file at ``path`` with each value ``old`` replaced by ``mapping[old]``,
    keeping its stored orientation, affine and header (the replacement is voxel-wise, so the
    storage order does not matter)."""
    image = nib.load(path)
    data = np.asanyarray(image.dataobj)
    out = data.copy()
    for old, new in mapping.items():
        assert np.any(data == old), f"{path.name} has no label {old} to rewrite"
        out[data == old] = new
    nib.save(nib.Nifti1Image(out, image.affine, image.header), path)


def save_ras(path: Path, data: np.ndarray, spacing_mm: tuple[float, float, float]) -> Path:
    """``data`` (RAS voxel order) as a NIfTI with a diagonal affine of ``spacing_mm``."""
    affine = np.diag([*spacing_mm, 1.0])
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, path)
    return path


def save_stored_gzip(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """``data`` as a ``.nii.gz`` whose deflate blocks are stored, not compressed (level 0): its
    size depends on the shape and dtype alone, so new pixels can be written at the same size."""
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path.write_bytes(gzip.compress(image.to_bytes(), compresslevel=0, mtime=0))
    return path


def replace_case(
    root: Path, case_id: str, *, image: np.ndarray, labels: np.ndarray, affine: np.ndarray
) -> PhantomSpec:
    """Overwrite the image and label files of ``case_id`` in the dataset at ``root`` (arrays in
    the storage order ``affine`` describes); the image as a stored-deflate ``.nii.gz``."""
    spec = phantom_specs()[case_id]
    save_stored_gzip(root / spec.image_relpath, image, affine)
    save_stored_gzip(root / spec.label_relpath, labels, affine)
    return spec
