"""A case's image rewritten at the same size with a new modification time (as a re-save of an
uncompressed file would be): the next tile shows the new pixels, and its ETag changes."""

from __future__ import annotations

import os

import numpy as np
import pytest
from django.core.management import call_command

from tests.ctspine.conftest import phantom_labels, phantom_ras
from tests.support.datasets import copy_dataset, replace_case, save_stored_gzip
from tests.support.tiles import png_pixels, window

pytestmark = pytest.mark.django_db

CASE = "HN_P002"
WIDTH, LEVEL = 2000, 0


@pytest.fixture
def case_files(db, phantom_root, tmp_path, settings):
    root = copy_dataset(phantom_root, tmp_path / "CTSpine1K")
    data, affine = phantom_ras()
    spec = replace_case(root, CASE, image=data, labels=phantom_labels(), affine=affine)
    settings.CTSPINE_DATA_ROOT = root
    call_command("ingest", str(root), verbosity=0)
    return root / spec.image_relpath, data, affine


def test_same_size_rewrite_shows_the_new_pixels(client, case_files):
    path, data, affine = case_files
    k = 8
    url = f"/api/cases/{CASE}/slices/axial/{k}.png"
    params = {"overlay": 0, "ww": WIDTH, "wl": LEVEL}
    first = client.get(url, params)
    assert np.array_equal(png_pixels(first), window(data[::-1, ::-1, k].T, WIDTH, LEVEL))

    changed = data.copy()
    changed[:, :, k] = -1000 + np.arange(changed.shape[0])[:, None]  # a left-right ramp
    before = path.stat()
    save_stored_gzip(path, changed, affine)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert path.stat().st_size == before.st_size

    second = client.get(url, params)
    assert np.array_equal(png_pixels(second), window(changed[::-1, ::-1, k].T, WIDTH, LEVEL))
    assert second["ETag"] != first["ETag"]
    # A browser revalidating with the old ETag gets the new tile, not "not modified".
    revalidated = client.get(url, params, HTTP_IF_NONE_MATCH=first["ETag"])
    assert revalidated.status_code == 200
    assert np.array_equal(png_pixels(revalidated), png_pixels(second))
