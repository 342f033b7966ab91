"""Tile endpoints of dataset cases: pixels, overlays, projections, caching headers, errors."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from ctspine.labels import LABEL_BY_VALUE
from tests.support.tiles import png_pixels as _png
from tests.support.tiles import window as _window
from viewer.models import Case
from viewer.tiles.volumes import volume_cache

pytestmark = pytest.mark.django_db


@pytest.fixture
def lps_case(ingested_phantom):
    case = Case.objects.filter(axis_codes="LPS", vertebra_mask__gt=0).first()
    canonical_image = nib.as_closest_canonical(nib.load(ingested_phantom / case.image_path))
    canonical_label = nib.as_closest_canonical(nib.load(ingested_phantom / case.label_path))
    return case, np.asanyarray(canonical_image.dataobj), np.asanyarray(canonical_label.dataobj)


def test_axial_tile_pixels_follow_the_window_formula(client, lps_case):
    case, image, _ = lps_case
    k = image.shape[2] // 2
    response = client.get(
        f"/api/cases/{case.case_id}/slices/axial/{k}.png", {"overlay": 0, "ww": 400, "wl": 40}
    )
    tile = _png(response)
    x, y = image.shape[:2]
    assert tile.shape == (y, x)
    # Radiological display: column c shows RAS i = X-1-c, row r shows j = Y-1-r.
    for i, j in [(5, 7), (x // 2, y // 2), (x - 3, 2)]:
        assert tile[y - 1 - j, x - 1 - i] == _window(image[i, j, k], 400, 40)
    spacing = [float(v) for v in response["X-Pixel-Spacing"].split(",")]
    assert spacing == pytest.approx([case.spacing_x, case.spacing_y], rel=1e-5)


def test_sagittal_and_coronal_tiles_have_the_display_orientation(client, lps_case):
    case, image, _ = lps_case
    x, y, z = image.shape
    sag = _png(
        client.get(
            f"/api/cases/{case.case_id}/slices/sagittal/{x // 2}.png",
            {"overlay": 0, "window": "bone"},
        )
    )
    # Whole tiles: sagittal column c is j = Y-1-c, row r is k = Z-1-r; coronal column c is
    # i = X-1-c (patient's right on the left). One pixel would pass a left-right flip.
    assert np.array_equal(sag, _window(image[x // 2, ::-1, ::-1].T, 1800, 400))
    for i in (x // 3, x - 2):
        off_centre = client.get(
            f"/api/cases/{case.case_id}/slices/sagittal/{i}.png", {"overlay": 0, "window": "bone"}
        )
        assert np.array_equal(_png(off_centre), _window(image[i, ::-1, ::-1].T, 1800, 400))
    cor = _png(client.get(f"/api/cases/{case.case_id}/slices/coronal/{y // 2}.png", {"overlay": 0}))
    assert np.array_equal(cor, _window(image[::-1, y // 2, ::-1].T, 1800, 400))
    assert not np.array_equal(cor, cor[:, ::-1])  # the tile is not left-right symmetric


def test_overlay_uses_the_colour_table(client, lps_case):
    case, _, labels = lps_case
    i, j, k = np.argwhere(labels > 0)[len(np.argwhere(labels > 0)) // 2]
    value = int(labels[i, j, k])
    x, y = labels.shape[:2]
    tile = _png(client.get(f"/api/cases/{case.case_id}/slices/axial/{k}.png", {"opacity": 1}))
    assert tuple(tile[y - 1 - j, x - 1 - i]) == LABEL_BY_VALUE[value].rgb
    hidden = _png(
        client.get(
            f"/api/cases/{case.case_id}/slices/axial/{k}.png", {"opacity": 1, "labels": "C1"}
        )
    )
    # Nothing of the overlay is drawn: the tile stays single-channel grey.
    assert hidden.ndim == 2
    off = _png(client.get(f"/api/cases/{case.case_id}/slices/axial/{k}.png", {"overlay": 0}))
    assert off.ndim == 2


@pytest.mark.parametrize("mode", ["mip", "minip", "mean"])
def test_slab_projection_equals_numpy_over_the_same_slab(client, lps_case, mode):
    case, image, _ = lps_case
    y = image.shape[1]
    center, slab_mm = y // 2, 4 * case.spacing_y
    response = client.get(
        f"/api/cases/{case.case_id}/projections/coronal.png",
        {"mode": mode, "center": center, "slab_mm": slab_mm, "overlay": 0, "ww": 2000, "wl": 0},
    )
    start, stop = (int(v) for v in response["X-Slab"].split(","))
    assert stop - start == 4 and start <= center < stop
    reduce = {"mip": np.max, "minip": np.min, "mean": np.mean}[mode]
    expected = reduce(image[:, start:stop, :].astype(np.float32), axis=1)  # (x, z)
    tile = _png(response)
    want = _window(expected[::-1, ::-1].T, 2000, 0)
    assert np.abs(tile.astype(int) - want).max() <= (1 if mode == "mean" else 0)


def test_whole_volume_mip_with_labels(client, lps_case):
    case, image, _ = lps_case
    first = client.get(f"/api/cases/{case.case_id}/projections/sagittal.png", {"mode": "mip"})
    assert first.status_code == 200
    assert first["X-Slab"] == f"0,{image.shape[0]}"
    again = client.get(f"/api/cases/{case.case_id}/projections/sagittal.png", {"mode": "mip"})
    assert again.content == first.content


def test_etag_304_and_immutable_urls(client, lps_case):
    case, _, _ = lps_case
    url = f"/api/cases/{case.case_id}/slices/axial/3.png"
    first = client.get(url)
    assert first["Cache-Control"].endswith("no-cache")
    etag = first["ETag"]
    second = client.get(url, HTTP_IF_NONE_MATCH=etag)
    assert second.status_code == 304 and second["ETag"] == etag
    assert client.get(url, {"window": "lung"}, HTTP_IF_NONE_MATCH=etag).status_code == 200
    version = client.get(f"/api/cases/{case.case_id}/volume/").json()["version"]
    pinned = client.get(url, {"v": version})
    assert "immutable" in pinned["Cache-Control"]


@pytest.mark.parametrize("ext", ["png", "webp", "jpg"])
def test_formats(client, lps_case, ext):
    case, _, _ = lps_case
    response = client.get(f"/api/cases/{case.case_id}/slices/axial/2.{ext}")
    assert response.status_code == 200
    assert (
        Image.open(io.BytesIO(response.content)).format
        == {"png": "PNG", "webp": "WEBP", "jpg": "JPEG"}[ext]
    )


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("slices/oblique/1.png", {}, "plane"),
        ("slices/axial/99999.png", {}, "index"),
        ("slices/axial/1.png", {"window": "brain"}, "window"),
        ("slices/axial/1.png", {"ww": "wide", "wl": "1"}, "ww"),
        ("slices/axial/1.png", {"ww": "400"}, "wl"),
        ("slices/axial/1.png", {"ww": "-5", "wl": "40"}, "ww"),
        ("slices/axial/1.png", {"opacity": "2"}, "opacity"),
        ("slices/axial/1.png", {"labels": "L9"}, "labels"),
        ("slices/axial/1.png", {"overlay": "maybe"}, "overlay"),
        ("slices/axial/1.png", {"layer": "compare"}, "layer"),
        ("slices/axial/1.png", {"zoom": "2"}, "zoom"),
        ("projections/axial.png", {"mode": "max"}, "mode"),
        ("projections/axial.png", {"center": "3"}, "slab_mm"),
        ("projections/axial.png", {"center": "3", "slab_mm": "-2"}, "slab_mm"),
        ("projections/axial.png", {"center": "9999", "slab_mm": "5"}, "center"),
    ],
)
def test_bad_tile_parameters_are_400(client, lps_case, path, params, parameter):
    case, _, _ = lps_case
    response = client.get(f"/api/cases/{case.case_id}/{path}", params)
    assert response.status_code == 400, response.content
    assert response.json()["parameter"] == parameter
    assert response.json()["error"]


def test_volume_and_voxel_readout(client, lps_case):
    case, image, labels = lps_case
    info = client.get(f"/api/cases/{case.case_id}/volume/").json()
    assert info["shape"] == list(image.shape)
    assert info["planes"]["axial"]["slices"] == image.shape[2]
    assert info["planes"]["sagittal"]["tile"] == {"cols": image.shape[1], "rows": image.shape[2]}
    assert info["stored_orientation"] == "LPS"
    names = [v["name"] for v in info["vertebrae"]]
    assert names == case.vertebra_names
    for vertebra in info["vertebrae"]:  # the rounded voxel centroid (it may lie in the canal)
        centre = np.argwhere(labels == vertebra["value"]).mean(axis=0)
        assert vertebra["voxel"] == [int(round(c)) for c in centre], vertebra["name"]
    i, j, k = (int(v) for v in np.argwhere(labels > 0)[0])
    x, y = image.shape[:2]
    readout = client.get(
        f"/api/cases/{case.case_id}/voxel/",
        {"plane": "axial", "index": k, "x": x - 1 - i, "y": y - 1 - j},
    ).json()
    assert readout["voxel"] == [i, j, k]
    assert readout["hu"] == float(image[i, j, k])
    assert readout["label"]["name"] == LABEL_BY_VALUE[int(labels[i, j, k])].name
    bad = client.get(
        f"/api/cases/{case.case_id}/voxel/", {"plane": "axial", "index": k, "x": 9999, "y": 0}
    )
    assert bad.status_code == 400 and bad.json()["parameter"] == "x"


def test_thumbnail_is_stored_and_served(client, lps_case, settings):
    case, _, _ = lps_case
    response = client.get(f"/api/cases/{case.case_id}/thumbnail.png")
    picture = _png(response)
    assert picture.shape[0] == 160 and picture.ndim == 3
    assert list((settings.CTSPINE_CACHE_DIR / "thumbnails").glob("*.png"))
    assert client.get(f"/api/cases/{case.case_id}/thumbnail.png").content == response.content


def test_file_downloads(client, lps_case, ingested_phantom):
    case, _, _ = lps_case
    response = client.get(f"/api/cases/{case.case_id}/files/label/")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == (ingested_phantom / case.label_path).read_bytes()
    assert client.get(f"/api/cases/{case.case_id}/files/secrets/").status_code == 404


def test_not_downloaded_and_failed_cases(client, ingested_phantom):
    Case.objects.create(
        case_id="liver_7", source="MSD-T10", split="train", image_path="data/liver/liver_7.nii.gz"
    )
    response = client.get("/api/cases/liver_7/slices/axial/0.png")
    assert response.status_code == 404 and "not downloaded" in response.json()["error"]
    broken = Case.objects.filter(downloaded=True).first()
    broken.error = "truncated gzip"
    broken.save()
    response = client.get(f"/api/cases/{broken.case_id}/slices/axial/0.png")
    assert response.status_code == 409 and "truncated gzip" in response.json()["error"]
    assert client.get("/api/cases/nope/volume/").status_code == 404


@pytest.mark.parametrize("workers", ["1", "2"])
def test_warm_cache_fills_volumes_and_thumbnails(
    ingested_phantom, settings, capsys, tmp_path, monkeypatch, workers
):
    from django.core.management import call_command

    # Count only what this command makes; the spawned workers read the environment.
    settings.CTSPINE_CACHE_DIR = tmp_path / "cache"
    monkeypatch.setenv("CTSPINE_CACHE_DIR", str(settings.CTSPINE_CACHE_DIR))
    monkeypatch.setenv("CTSPINE_DATA_ROOT", str(ingested_phantom))
    call_command("warm_cache", "--split", "test_public", "--workers", workers)
    out = capsys.readouterr().out
    count = Case.objects.filter(split="test_public").count()
    assert f"{count} cases cached, 0 failed" in out
    on_disk = re.search(r"on disk: .+ for .+ of source files \(([\d.]+)x\)", out)
    assert on_disk and float(on_disk[1]) > 0, out
    assert len(list((settings.CTSPINE_CACHE_DIR / "thumbnails").glob("*.png"))) == count
    volumes = list((settings.CTSPINE_CACHE_DIR / "volumes").glob("*/meta.json"))
    # Image and label of each case, whatever the number of workers: eviction by one worker no
    # longer deletes an entry another has just committed (tests/ctspine/test_cache_freshness.py).
    assert len(volumes) == 2 * count


def test_case_changes_apply_to_the_next_tile_request(client, lps_case):
    case, _, _ = lps_case
    url = f"/api/cases/{case.case_id}/slices/axial/3.png"
    assert client.get(url).status_code == 200
    # A queryset update sends no signal: the row is read afresh on every request anyway.
    Case.objects.filter(pk=case.pk).update(error="label grid differs")
    assert client.get(url).status_code == 409
    Case.objects.filter(pk=case.pk).update(error="", downloaded=False)
    assert client.get(url).status_code == 404
    Case.objects.filter(pk=case.pk).update(downloaded=True)
    assert client.get(url).status_code == 200


def test_sagittal_tiles_are_the_same_before_and_after_the_store_is_written(
    client, lps_case, ingested_phantom
):
    from ctspine.imaging.display import slice_tile
    from ctspine.imaging.render import DisplayOptions, compose_tile
    from ctspine.imaging.windowing import apply_window, window_preset
    from ctspine.volume_store import StoredVolume

    case, image, labels = lps_case
    cache = volume_cache()
    options = DisplayOptions(window=window_preset("bone"), opacity=0.7)
    indices = range(0, image.shape[0], 7)
    expected = [
        compose_tile(
            grey=apply_window(slice_tile(image, plane="sagittal", index=i), width=1800, level=400),
            labels=slice_tile(labels, plane="sagittal", index=i),
            options=options,
        )
        for i in indices
    ]
    url = f"/api/cases/{case.case_id}/slices/sagittal/{{}}.png"
    for index, want in zip(indices, expected, strict=True):  # decoded copy, or store meanwhile
        assert np.array_equal(_png(client.get(url.format(index), {"opacity": 0.7})), want)
    cache.wait()  # the stores are written in the background after the first request
    for path, kind in ((case.image_path, "image"), (case.label_path, "label")):
        assert isinstance(cache.get(ingested_phantom / path, kind=kind).data, StoredVolume)
    for index, want in zip(indices, expected, strict=True):
        assert np.array_equal(_png(client.get(url.format(index), {"opacity": 0.7})), want)
    assert any(want.ndim == 3 for want in expected)  # some tiles with labels drawn


def test_tiles_survive_the_cache_folder_being_deleted(client, ingested_phantom, settings):
    """Deleting the cache folder by hand while the server runs costs a re-conversion, not a 500."""
    first, second = Case.objects.filter(downloaded=True, error="")[:2]
    assert client.get(f"/api/cases/{first.case_id}/slices/axial/0.png").status_code == 200
    volume_cache().wait()  # rmtree must not race the background write of the first volume
    shutil.rmtree(settings.CTSPINE_CACHE_DIR)
    for case in (second, first):
        assert client.get(f"/api/cases/{case.case_id}/slices/axial/0.png").status_code == 200
        assert client.get(f"/api/cases/{case.case_id}/thumbnail.png").status_code == 200


def test_a_store_changed_in_place_is_never_served(client, lps_case, settings):
    """Same-size garbage written into a cached store is caught by its checksum when a server
    process opens the entry, and the volume is converted again."""
    from viewer.tiles import volumes

    case, image, _ = lps_case
    k = image.shape[2] // 2
    url = f"/api/cases/{case.case_id}/slices/axial/{k}.png"
    before = _png(client.get(url, {"overlay": 0}))
    volumes.volume_cache().wait()
    for store in Path(settings.CTSPINE_CACHE_DIR).glob("volumes/*/volume.b2nd"):
        size = store.stat().st_size
        with open(store, "r+b") as handle:  # keep the size: only the checksum can tell
            handle.seek(size // 2)
            handle.write(bytes(255 - b for b in handle.read(64)))
            assert handle.seek(0, 2) == size
    volumes._caches.clear()  # a fresh server process
    assert np.array_equal(_png(client.get(url, {"overlay": 0})), before)
