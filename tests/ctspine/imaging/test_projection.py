"""Projections along each plane equal plain numpy reductions over the same slab."""

from __future__ import annotations

import numpy as np
import pytest

from ctspine.imaging import display, projection
from ctspine.imaging.projection import Slab, project, project_with_labels, slab_range

_REDUCE = {"mip": np.max, "minip": np.min, "mean": np.mean}


def _volume(shape=(9, 8, 7)) -> np.ndarray:
    return np.random.default_rng(5).integers(-1000, 1500, size=shape).astype(np.int16)


@pytest.fixture(params=["c", "kji"])
def volume(request) -> np.ndarray:
    """The same values as a C-ordered array and as the cache's (k, j, i) layout seen as RAS."""
    v = _volume()
    return v if request.param == "c" else np.ascontiguousarray(v.T).T


@pytest.mark.parametrize("mode", projection.MODES)
@pytest.mark.parametrize("plane", display.PLANES)
def test_projection_equals_numpy_over_the_slab(volume, plane, mode, monkeypatch):
    monkeypatch.setattr(projection, "_CHUNK_VOXELS", 150)  # force several chunks along k
    axis = display.NORMAL_AXIS[plane]
    for slab in (None, Slab(start=2, stop=5)):
        result = project(volume, plane=plane, mode=mode, slab=slab)
        start, stop = (0, volume.shape[axis]) if slab is None else (slab.start, slab.stop)
        sub = np.take(volume, range(start, stop), axis=axis)
        expected = display.to_display(_REDUCE[mode](sub, axis=axis))
        assert result.shape == display.tile_shape(volume.shape, plane=plane)
        if mode == "mean":
            assert result.dtype == np.float32
            assert np.allclose(result, expected, atol=1e-3)
        else:
            assert result.dtype == volume.dtype
            assert np.array_equal(result, expected)


def test_slab_range_from_thickness():
    assert slab_range(count=100, spacing_mm=2.0, center=50, thickness_mm=10) == Slab(48, 53)
    assert slab_range(count=100, spacing_mm=2.0, center=50, thickness_mm=8) == Slab(49, 53)
    assert slab_range(count=100, spacing_mm=2.0, center=1, thickness_mm=10) == Slab(0, 4)
    assert slab_range(count=100, spacing_mm=2.0, center=99, thickness_mm=10) == Slab(97, 100)
    assert slab_range(count=100, spacing_mm=2.0, center=5, thickness_mm=0.5) == Slab(5, 6)
    with pytest.raises(ValueError, match="out of range"):
        slab_range(count=10, spacing_mm=1.0, center=10, thickness_mm=3)
    with pytest.raises(ValueError, match="thickness"):
        slab_range(count=10, spacing_mm=1.0, center=5, thickness_mm=0)


def test_invalid_mode_and_slab(volume):
    with pytest.raises(ValueError, match="unknown projection"):
        project(volume, plane="axial", mode="max")
    with pytest.raises(ValueError, match="outside"):
        project(volume, plane="axial", slab=Slab(3, 30))


@pytest.mark.parametrize("mode", ["mip", "minip"])
@pytest.mark.parametrize("plane", display.PLANES)
def test_label_of_the_voxel_that_produced_the_intensity(volume, plane, mode, monkeypatch):
    monkeypatch.setattr(projection, "_CHUNK_VOXELS", 150)
    labels = np.random.default_rng(6).integers(0, 26, size=volume.shape).astype(np.uint8)
    axis = display.NORMAL_AXIS[plane]
    result = project_with_labels(volume, labels, plane=plane, mode=mode)
    pick = np.argmax if mode == "mip" else np.argmin
    index = np.expand_dims(pick(volume, axis=axis), axis)
    source_label = np.take_along_axis(labels, index, axis=axis).squeeze(axis)
    extreme = np.take_along_axis(volume, index, axis=axis)
    ties = (volume == extreme).sum(axis=axis)
    tied_max = np.where(volume == extreme, labels, 0).max(axis=axis)
    expected_labels = np.where(ties > 1, tied_max, source_label)
    assert np.array_equal(result.labels, display.to_display(expected_labels))
    assert np.array_equal(result.tile, project(volume, plane=plane, mode=mode))


def test_tied_maxima_take_the_largest_label():
    volume = np.zeros((2, 2, 4), dtype=np.int16)
    volume[0, 0, 1] = volume[0, 0, 3] = 900
    labels = np.zeros((2, 2, 4), dtype=np.uint8)
    labels[0, 0, 1], labels[0, 0, 3], labels[0, 0, 2] = 20, 21, 25
    result = project_with_labels(volume, labels, plane="axial", mode="mip")
    assert result.labels[1, 1] == 21 and result.tile[1, 1] == 900


def test_mean_labels_take_the_nearest_labelled_voxel():
    volume = np.zeros((3, 4, 5), dtype=np.int16)
    labels = np.zeros((3, 4, 5), dtype=np.uint8)
    labels[1, 1, 1], labels[1, 1, 3] = 20, 21  # along k: lowest k is nearest (seen from the feet)
    labels[0, 1, 2], labels[0, 3, 2] = 8, 9  # along j: highest j is nearest (seen from the front)
    labels[0, 2, 4], labels[2, 2, 4] = 1, 2  # along i: lowest i is nearest (seen from the left)
    axial = project_with_labels(volume, labels, plane="axial", mode="mean").labels
    coronal = project_with_labels(volume, labels, plane="coronal", mode="mean").labels
    sagittal = project_with_labels(volume, labels, plane="sagittal", mode="mean").labels
    assert axial[4 - 1 - 1, 3 - 1 - 1] == 20
    assert coronal[5 - 1 - 2, 3 - 1 - 0] == 9
    assert sagittal[5 - 1 - 4, 4 - 1 - 2] == 1


def test_slab_with_labels_restricts_both(volume):
    labels = np.zeros(volume.shape, dtype=np.uint8)
    labels[:, :, 0] = 5
    volume = volume.copy()
    volume[:, :, 0] = 3000  # the brightest voxels lie outside the slab below
    result = project_with_labels(volume, labels, plane="axial", mode="mip", slab=Slab(2, 6))
    assert (result.labels == 0).all()
    assert (result.tile < 3000).all()
