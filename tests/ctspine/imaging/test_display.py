"""The display convention: which voxel each tile pixel shows, for every orientation on disk."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from ctspine.imaging import display
from ctspine.imaging.volume_io import read_volume
from tests.ctspine.conftest import ANTERIOR_MARK, LEFT_MARK, SHAPE, SUPERIOR_MARK


def _random_volume(shape=(7, 5, 4)) -> np.ndarray:
    return np.random.default_rng(3).integers(-1000, 2000, size=shape).astype(np.int16)


@pytest.mark.parametrize("plane", display.PLANES)
def test_tile_formula(plane):
    v = _random_volume()
    x, y, z = v.shape
    index = 2
    tile = display.slice_tile(v, plane=plane, index=index)
    assert tile.shape == display.tile_shape(v.shape, plane=plane)
    for r in range(tile.shape[0]):
        for c in range(tile.shape[1]):
            expected = {
                "axial": v[x - 1 - c, y - 1 - r, index],
                "coronal": v[x - 1 - c, index, z - 1 - r],
                "sagittal": v[index, y - 1 - c, z - 1 - r],
            }[plane]
            assert tile[r, c] == expected


@pytest.mark.parametrize("plane", display.PLANES)
def test_pixel_and_voxel_mappings_are_inverse(plane):
    v = _random_volume()
    count = display.slice_count(v.shape, plane=plane)
    for index in range(count):
        tile = display.slice_tile(v, plane=plane, index=index)
        for r in range(tile.shape[0]):
            for c in range(tile.shape[1]):
                voxel = display.tile_to_voxel(shape=v.shape, plane=plane, index=index, col=c, row=r)
                assert v[voxel] == tile[r, c]
                position = display.voxel_to_tiles(shape=v.shape, voxel=voxel)[plane]
                assert (position.index, position.col, position.row) == (index, c, r)


def test_crosshair_positions_show_the_voxel_on_all_planes():
    v = _random_volume()
    voxel = (5, 1, 3)
    for plane, position in display.voxel_to_tiles(shape=v.shape, voxel=voxel).items():
        tile = display.slice_tile(v, plane=plane, index=position.index)
        assert tile[position.row, position.col] == v[voxel]


def _centroid_col_row(tile: np.ndarray, value: int) -> tuple[float, float]:
    rows, cols = np.nonzero((tile >= value) & (tile < value + 7))
    assert rows.size, f"marker {value} not on this tile"
    return cols.mean(), rows.mean()


@pytest.mark.parametrize("codes", ["RAS", "LPS", "LAS", "PIR"])
def test_same_anatomy_same_side_of_the_screen(phantom_files, codes):
    v = read_volume(phantom_files[codes]).data
    x, y, z = SHAPE
    # Axial through the left marker: patient's left is on the viewer's right.
    col, _ = _centroid_col_row(display.slice_tile(v, plane="axial", index=7), LEFT_MARK)
    assert col > x / 2
    # Axial through the anterior marker: anterior is up.
    _, row = _centroid_col_row(display.slice_tile(v, plane="axial", index=7), ANTERIOR_MARK)
    assert row < y / 2
    # Coronal through the left marker: patient's left on the viewer's right.
    col, _ = _centroid_col_row(display.slice_tile(v, plane="coronal", index=9), LEFT_MARK)
    assert col > x / 2
    # Coronal / sagittal through the superior marker: superior is up.
    _, row = _centroid_col_row(display.slice_tile(v, plane="coronal", index=9), SUPERIOR_MARK)
    assert row < z / 2
    _, row = _centroid_col_row(display.slice_tile(v, plane="sagittal", index=7), SUPERIOR_MARK)
    assert row < z / 2
    # Sagittal through the anterior marker: anterior on the left.
    col, _ = _centroid_col_row(display.slice_tile(v, plane="sagittal", index=11), ANTERIOR_MARK)
    assert col < y / 2


def test_orientations_give_identical_tiles(phantom_files):
    volumes = {codes: read_volume(path).data for codes, path in phantom_files.items()}
    for plane in display.PLANES:
        tiles = [display.slice_tile(v, plane=plane, index=3) for v in volumes.values()]
        for tile in tiles[1:]:
            assert np.array_equal(tile, tiles[0])


def test_real_las_labels_follow_the_convention(sample_dir):
    path = sample_dir / "ts_example_dicom_vertebrae.nii.gz"
    canonical = np.asanyarray(nib.as_closest_canonical(nib.load(path)).dataobj)
    v = read_volume(path, kind="label").data
    i, j, k = np.argwhere(canonical == 19)[0]
    x, y, z = v.shape
    assert display.slice_tile(v, plane="axial", index=k)[y - 1 - j, x - 1 - i] == 19
    assert display.slice_tile(v, plane="coronal", index=j)[z - 1 - k, x - 1 - i] == 19
    assert display.slice_tile(v, plane="sagittal", index=i)[z - 1 - k, y - 1 - j] == 19


def test_pixel_spacing_and_shapes():
    spacing = (0.7, 0.8, 2.5)
    assert display.pixel_spacing(spacing, plane="axial") == display.PixelSpacing(0.7, 0.8)
    assert display.pixel_spacing(spacing, plane="coronal") == display.PixelSpacing(0.7, 2.5)
    assert display.pixel_spacing(spacing, plane="sagittal") == display.PixelSpacing(0.8, 2.5)
    assert display.tile_shape((10, 20, 30), plane="axial") == (20, 10)
    assert display.tile_shape((10, 20, 30), plane="coronal") == (30, 10)
    assert display.tile_shape((10, 20, 30), plane="sagittal") == (30, 20)
    assert [display.slice_count((10, 20, 30), plane=p) for p in display.PLANES] == [30, 20, 10]


def test_voxel_to_world():
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    affine[:3, 3] = (10, 20, 30)
    assert display.voxel_to_world(affine=affine, voxel=(2, 4, 1)) == (11.0, 22.0, 32.0)


def test_invalid_plane_and_index():
    v = _random_volume()
    with pytest.raises(ValueError, match="unknown plane"):
        display.slice_tile(v, plane="oblique", index=0)
    with pytest.raises(ValueError, match="out of range"):
        display.slice_tile(v, plane="axial", index=4)
    with pytest.raises(ValueError, match="out of range"):
        display.slice_tile(v, plane="axial", index=-1)
    with pytest.raises(ValueError, match="integer"):
        display.slice_tile(v, plane="axial", index=1.5)
    with pytest.raises(ValueError, match="outside"):
        display.tile_to_voxel(shape=v.shape, plane="axial", index=0, col=7, row=0)
    with pytest.raises(ValueError, match="outside"):
        display.voxel_to_tiles(shape=v.shape, voxel=(7, 0, 0))
