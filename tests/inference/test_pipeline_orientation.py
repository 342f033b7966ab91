"""The network gets each scan in the voxel order its nnU-Net reader would give it, and the
prediction comes back on the RAS+ grid and in the file's stored orientation."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from inference.pipeline import segment
from inference.predictor import PredictionResult, PredictionTimings

SPACING_STORED = (0.8, 0.9, 2.5)  # along the stored axes i, j, k


class RecordingPredictor:
    """A model stand-in: records what it is given and labels voxels above 500 HU as L1 (20)."""

    device_name = "cpu"
    tiles = 1

    def __init__(self, *, sees_stored_orientation: bool):
        self.sees_stored_orientation = sees_stored_orientation
        self.given = None

    def predict_result(self, *, image, spacing_mm, progress=None):
        self.given = (np.array(image), tuple(spacing_mm))
        labels = np.where(np.asarray(image) > 500, 20, 0).astype(np.uint8)
        return PredictionResult(
            labels=labels,
            timings=PredictionTimings(preprocess_s=0, network_s=0, export_s=0, total_s=0),
            device="cpu",
            tiles=1,
        )


@pytest.fixture
def lps_file(tmp_path):
    """An asymmetric volume stored with axes (j, i, k) permuted and i, j flipped: 'PLS'."""
    rng = np.random.default_rng(0)
    stored = rng.integers(-1000, 0, size=(12, 10, 6)).astype(np.int16)
    stored[1:3, 7:9, 4] = 1200  # bone in one corner only
    affine = np.array(
        [[0, -0.9, 0, 5.0], [-0.8, 0, 0, 7.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]], dtype=float
    )
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(stored, affine), path)
    assert "".join(nib.aff2axcodes(affine)) == "PLS"
    return path, stored


@pytest.mark.parametrize("stored_order", [True, False])
def test_network_input_order_follows_the_models_reader(lps_file, tmp_path, stored_order):
    path, stored = lps_file
    predictor = RecordingPredictor(sees_stored_orientation=stored_order)
    outcome = segment(predictor=predictor, image_path=path, output_dir=tmp_path / "out")

    given, spacing = predictor.given
    canonical = nib.as_closest_canonical(nib.load(path))
    if stored_order:  # what SimpleITKIO / NibabelIO give nnU-Net: the file's own voxel order
        assert np.array_equal(given, stored)
        assert spacing == pytest.approx(SPACING_STORED)
    else:  # NibabelIOWithReorient: RAS+
        assert np.array_equal(given, np.asanyarray(canonical.dataobj))
        assert spacing == pytest.approx(canonical.header.get_zooms()[:3])
    # Either way the prediction lands on the bone, in the file's stored orientation.
    written = nib.load(outcome.prediction_path)
    assert np.allclose(written.affine, nib.load(path).affine)
    assert np.array_equal(np.asanyarray(written.dataobj), np.where(stored > 500, 20, 0))
    assert outcome.labels_present == (20,)
