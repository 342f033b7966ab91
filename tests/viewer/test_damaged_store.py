"""A cache store damaged while this process has it open (issue 14, item 6): the next tile is
served from a fresh conversion of the source, not answered 422 until the process restarts.

The stores are blosc2 files read with ordinary file I/O, not memory-mapped (checked below in
``/proc/self/maps``), so truncating one in place cannot kill the process with SIGBUS: both a
replacement by rename and a truncation in place are tested.
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

from ctspine.volume_cache import DATA_FILE
from tests.support.tiles import png_pixels, window
from viewer.models import Case
from viewer.tiles.volumes import volume_cache

pytestmark = pytest.mark.django_db


@pytest.fixture
def served(ingested_phantom, settings, tmp_path, client):
    """A case whose image store is open in this process (one tile served from it), with its
    RAS image and the store's path."""
    settings.CTSPINE_CACHE_DIR = tmp_path / "cache"  # a cache of this test's own
    case = Case.objects.filter(vertebra_mask__gt=0).first()
    image = np.asanyarray(
        nib.as_closest_canonical(nib.load(ingested_phantom / case.image_path)).dataobj
    )
    tile_url = f"/api/cases/{case.case_id}/slices/axial/{{}}.png"
    png_pixels(client.get(tile_url.format(1), {"overlay": 0}))
    volume_cache().wait()  # the store is written; the next tile opens it
    png_pixels(client.get(tile_url.format(2), {"overlay": 0}))
    volume = volume_cache().get(ingested_phantom / case.image_path)
    assert volume.persisted, "the tile must come from the open store"
    store = volume.directory / DATA_FILE
    with open("/proc/self/maps") as maps:
        assert str(store) not in maps.read(), "the store is memory-mapped"
    return tile_url, image, store


def _replace_with_garbage(store) -> None:
    garbage = store.with_name("garbage")
    garbage.write_bytes(os.urandom(store.stat().st_size))
    os.replace(garbage, store)


def _truncate(store) -> None:
    os.truncate(store, store.stat().st_size // 3)


@pytest.mark.parametrize("damage", [_replace_with_garbage, _truncate], ids=["rename", "truncate"])
def test_a_store_damaged_while_open_is_converted_again(client, served, damage, caplog):
    tile_url, image, store = served
    damage(store)
    k = image.shape[2] - 2  # far from the slices read so far: decoded from the store
    response = client.get(tile_url.format(k), {"overlay": 0, "ww": 400, "wl": 40})
    tile = png_pixels(response)
    assert np.array_equal(tile, window(image[::-1, ::-1, k].T, 400, 40))
    assert "is damaged" in caplog.text and "converting it again" in caplog.text
    volume_cache().wait()
    assert store.stat().st_size > 0  # a fresh store was written in its place
    again = client.get(tile_url.format(k - 20), {"overlay": 0, "ww": 400, "wl": 40})
    assert np.array_equal(png_pixels(again), window(image[::-1, ::-1, k - 20].T, 400, 40))


def test_a_store_damaged_again_after_the_retry_is_reported(client, served, monkeypatch):
    tile_url, image, store = served
    _replace_with_garbage(store)
    cache = volume_cache()
    monkeypatch.setattr(cache, "write_behind", False)  # the retry reads from a store again
    original = cache._persist

    def persist_then_damage(volume, lock):
        persisted = original(volume, lock)
        _replace_with_garbage(persisted.directory / DATA_FILE)
        return persisted

    monkeypatch.setattr(cache, "_persist", persist_then_damage)
    response = client.get(tile_url.format(image.shape[2] - 2), {"overlay": 0})
    assert response.status_code == 422
    message = response.json()["error"]
    assert message.startswith("this volume cannot be displayed: ")
    assert "the file is damaged" in message and str(store.parent.parent) not in message
