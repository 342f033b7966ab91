"""Whole tiles of every plane of an asymmetric case, stored LPS, against arrays built here by
plain numpy indexing of the RAS array that was written (not with the functions under test);
the voxel read-out and the legend's vertebra positions at a foreground voxel."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.management import call_command

from tests.ctspine.conftest import BONE, phantom_labels, phantom_ras, reorient
from tests.support.datasets import copy_dataset, replace_case
from tests.support.tiles import png_pixels, window

pytestmark = pytest.mark.django_db

CASE = "HN_P001"  # a phantom case, replaced by tests/ctspine/conftest.py's asymmetric volume
WIDTH, LEVEL = 2000, 0  # a window under which every HU of the volume keeps its own grey
L2 = 21


@pytest.fixture(scope="module")
def asymmetric_root(phantom_root, tmp_path_factory):
    root = copy_dataset(phantom_root, tmp_path_factory.mktemp("asymmetric") / "CTSpine1K")
    data, affine = phantom_ras()
    stored, stored_affine = reorient(data, affine, "LPS")
    labels, _ = reorient(phantom_labels(), affine, "LPS")
    replace_case(root, CASE, image=stored, labels=labels, affine=stored_affine)
    return root


@pytest.fixture
def asymmetric_case(db, asymmetric_root, settings):
    settings.CTSPINE_DATA_ROOT = asymmetric_root
    call_command("ingest", str(asymmetric_root), verbosity=0)
    return f"/api/cases/{CASE}"


def _tile(client, url: str, plane: str, index: int) -> np.ndarray:
    params = {"overlay": 0, "ww": WIDTH, "wl": LEVEL}
    return png_pixels(client.get(f"{url}/slices/{plane}/{index}.png", params))


def test_the_volume_is_asymmetric_in_every_axis():
    data, _ = phantom_ras()
    for axis in range(3):
        assert not np.array_equal(data, np.flip(data, axis=axis)), axis


def test_axial_tiles_whole(client, asymmetric_case):
    data, _ = phantom_ras()
    for k in range(data.shape[2]):
        # Seen from the feet: column c is i = X-1-c (patient's right on the left), row r is
        # j = Y-1-r (anterior up).
        expected = window(data[::-1, ::-1, k].T, WIDTH, LEVEL)
        assert np.array_equal(_tile(client, asymmetric_case, "axial", k), expected), k


def test_sagittal_tiles_whole(client, asymmetric_case):
    data, _ = phantom_ras()
    for i in range(data.shape[0]):
        # Seen from the patient's left: column c is j = Y-1-c (anterior on the left), row r is
        # k = Z-1-r (superior up).
        expected = window(data[i, ::-1, ::-1].T, WIDTH, LEVEL)
        assert np.array_equal(_tile(client, asymmetric_case, "sagittal", i), expected), i


def test_coronal_tiles_whole(client, asymmetric_case):
    data, _ = phantom_ras()
    for j in range(data.shape[1]):
        # Seen from the front: column c is i = X-1-c (patient's right on the left), row r is
        # k = Z-1-r (superior up).
        expected = window(data[::-1, j, ::-1].T, WIDTH, LEVEL)
        assert np.array_equal(_tile(client, asymmetric_case, "coronal", j), expected), j


def test_markers_land_where_a_reader_expects_them(client, asymmetric_case):
    """The left marker on the viewer's right in axial and coronal tiles; the anterior marker on
    the left of sagittal tiles; the superior marker at the top of coronal tiles."""
    data, _ = phantom_ras()
    x, y, z = data.shape
    axial = _tile(client, asymmetric_case, "axial", 8)
    left = window(700, WIDTH, LEVEL)
    columns = np.nonzero(np.any(np.abs(axial - left) <= 1, axis=0))[0]
    assert columns.min() >= x // 2  # the patient's left is on the viewer's right
    sagittal = _tile(client, asymmetric_case, "sagittal", 12)
    anterior = window(500, WIDTH, LEVEL)
    columns = np.nonzero(np.any(np.abs(sagittal - anterior) <= 1, axis=0))[0]
    assert columns.max() < y // 2  # anterior on the left
    coronal = _tile(client, asymmetric_case, "coronal", 10)
    superior = window(300, WIDTH, LEVEL)
    rows = np.nonzero(np.any(np.abs(coronal - superior) <= 1, axis=1))[0]
    assert rows.max() < z // 2  # superior up


def test_voxel_readout_at_a_foreground_voxel_in_every_plane(client, asymmetric_case):
    data, _ = phantom_ras()
    labels = phantom_labels()
    x, y, z = data.shape
    i, j, k = 12, 6, 10
    assert labels[i, j, k] == L2 and data[i, j, k] >= BONE  # inside L2's bone
    pixels = {
        "axial": (k, x - 1 - i, y - 1 - j),
        "sagittal": (i, y - 1 - j, z - 1 - k),
        "coronal": (j, x - 1 - i, z - 1 - k),
    }
    for plane, (index, col, row) in pixels.items():
        readout = client.get(
            f"{asymmetric_case}/voxel/", {"plane": plane, "index": index, "x": col, "y": row}
        ).json()
        assert readout["voxel"] == [i, j, k], plane
        assert readout["hu"] == float(data[i, j, k]), plane
        assert readout["label"] == {"value": L2, "name": "L2"}, plane


def test_legend_positions_point_at_each_vertebra(client, asymmetric_case):
    data, affine = phantom_ras()
    labels = phantom_labels()
    x, y, z = data.shape
    info = client.get(f"{asymmetric_case}/volume/").json()
    assert info["stored_orientation"] == "LPS" and info["shape"] == [x, y, z]
    vertebrae = {v["value"]: v for v in info["vertebrae"]}
    assert set(vertebrae) == {20, 21}
    for value, vertebra in vertebrae.items():
        centre = np.argwhere(labels == value).mean(axis=0)  # voxel centroid, RAS
        assert vertebra["centroid_mm"] == pytest.approx((affine @ [*centre, 1.0])[:3], abs=1e-3)
        i, j, k = (int(round(c)) for c in centre)
        assert vertebra["voxel"] == [i, j, k] and labels[i, j, k] == value  # foreground
        assert vertebra["positions"] == {
            "axial": {"index": k, "col": x - 1 - i, "row": y - 1 - j},
            "sagittal": {"index": i, "col": y - 1 - j, "row": z - 1 - k},
            "coronal": {"index": j, "col": x - 1 - i, "row": z - 1 - k},
        }
