"""A store damaged while a process has it open is converted again from the source, once, when a
read finds the damage (issue 14, item 6); a second failure, or a store not of this cache, is
reported. Store errors name the file by its entry and name, never the server's path to it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ctspine.imaging.volume_io import read_volume
from ctspine.volume_cache import DATA_FILE, VolumeCache
from ctspine.volume_store import StoreError, open_store, write_store
from tests.ctspine.conftest import write_nifti


def _source(tmp_path: Path) -> Path:
    data = np.random.default_rng(3).integers(-1000, 1500, size=(48, 40, 36), dtype=np.int16)
    return write_nifti(tmp_path / "ct.nii.gz", data, np.diag([0.7, 0.8, 1.5, 1.0]))


def _replace_with_garbage(store: Path) -> None:
    garbage = store.with_name("garbage")
    garbage.write_bytes(os.urandom(store.stat().st_size))
    os.replace(garbage, store)


def test_read_volume_converts_a_store_damaged_while_open_again(tmp_path, conversions, caplog):
    source = _source(tmp_path)
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30, write_behind=False)
    store = cache.get(source).directory / DATA_FILE  # open in this process
    _replace_with_garbage(store)
    volume = cache.read_volume(source)
    assert np.array_equal(volume.data, read_volume(source).data)
    assert len(conversions.read_text().splitlines()) == 2
    assert f"volume cache store {store} is damaged" in caplog.text  # the log has the full path
    assert open_store(store).shape == volume.data.shape  # a fresh store in its place


def test_an_error_of_a_store_outside_the_cache_is_not_discarded(tmp_path):
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30)
    elsewhere = tmp_path / "other" / "volume.b2nd"
    elsewhere.parent.mkdir()
    write_store(elsewhere, np.zeros((4, 4, 4), np.int16))
    assert not cache.discard_damaged(StoreError("damaged", path=elsewhere))
    assert not cache.discard_damaged(StoreError("no path"))
    assert elsewhere.exists()


def test_store_errors_name_the_entry_and_file_not_the_server_path(tmp_path):
    store = tmp_path / "entry-key" / "volume.b2nd"
    store.parent.mkdir()
    write_store(store, np.zeros((4, 4, 4), np.int16))
    _replace_with_garbage(store)
    with pytest.raises(StoreError) as raised:
        open_store(store)
    assert str(raised.value) == "entry-key/volume.b2nd: not a readable blosc2 store"
    assert raised.value.path == store
    with pytest.raises(StoreError) as raised:
        open_store(tmp_path / "entry-key" / "missing.b2nd")
    assert str(raised.value) == (
        "entry-key/missing.b2nd: cannot read the store file (No such file or directory)"
    )
