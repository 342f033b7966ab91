"""The volume cache never serves a stale volume: a source rewritten at the same size with a new
modification time is decoded again, in the same process and in another; and an entry committed
by one process is never deleted by another whose view of the cache is out of date."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ctspine.volume_cache import META_FILE, SourceIdentity, VolumeCache
from tests.ctspine.conftest import phantom_ras, write_nifti


def _rewrite_same_size(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Overwrite ``path`` (an uncompressed .nii, so its size depends on the shape alone) and move
    its mtime on by a second, as a re-save would."""
    before = path.stat()
    write_nifti(path, data, affine)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    after = path.stat()
    assert after.st_size == before.st_size and after.st_mtime_ns != before.st_mtime_ns


def test_source_identity_key_follows_path_size_mtime_and_kind():
    base = SourceIdentity(path="/data/a.nii", size=1000, mtime_ns=5)
    keys = {
        base.key("image"),
        base.key("label"),
        SourceIdentity(path="/data/a.nii", size=1000, mtime_ns=6).key("image"),
        SourceIdentity(path="/data/a.nii", size=1001, mtime_ns=5).key("image"),
        SourceIdentity(path="/data/b.nii", size=1000, mtime_ns=5).key("image"),
    }
    assert len(keys) == 5
    assert base.key("image") == SourceIdentity("/data/a.nii", 1000, 5).key("image")
    # Versions of one path share the first half (so stale versions can be found and removed).
    newer = SourceIdentity(path="/data/a.nii", size=1000, mtime_ns=6)
    assert base.key("image").split("-")[0] == newer.key("image").split("-")[0]


@pytest.mark.parametrize("write_behind", [True, False])
def test_same_size_rewrite_serves_the_new_pixels(tmp_path, write_behind):
    data, affine = phantom_ras()
    source = write_nifti(tmp_path / "ct.nii", data, affine)
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30, write_behind=write_behind)
    first = cache.get(source)
    assert np.array_equal(first.read(), data)
    cache.wait()
    changed = data.copy()
    changed[:, :, 0] = 999  # the bottom slice
    _rewrite_same_size(source, changed, affine)
    second = cache.get(source)
    assert np.array_equal(second.read(), changed)
    assert second.key != first.key
    cache.wait()
    assert [entry.key for entry in cache.entries()] == [second.key]  # the stale one is gone
    # Another process (a cache instance of its own) sees the new pixels too.
    other = VolumeCache(tmp_path / "cache", max_bytes=1 << 30)
    assert np.array_equal(other.get(source).read(), changed)


def test_eviction_never_deletes_an_entry_committed_after_its_snapshot(tmp_path, monkeypatch):
    """The two-worker warm_cache race: worker A lists the cache while worker B is converting a
    volume (B's entry has no sidecar yet and is locked), B commits and releases its lock, then A
    takes the lock and deleted the committed entry as if it were a crashed conversion's."""
    data, affine = phantom_ras()
    source = write_nifti(tmp_path / "ct.nii.gz", data, affine)
    root = tmp_path / "cache"
    worker_a = VolumeCache(root, max_bytes=1 << 30)
    worker_b = VolumeCache(root, max_bytes=1 << 30, write_behind=False)
    snapshot = []
    convert = VolumeCache._convert

    def convert_and_let_a_look(self, key, **kwargs):
        volume = convert(self, key, **kwargs)  # B's directory exists, no sidecar, lock held
        snapshot.extend(worker_a.entries())
        return volume

    monkeypatch.setattr(worker_b, "_convert", convert_and_let_a_look.__get__(worker_b))
    volume = worker_b.get(source)  # committed, lock released
    assert [(e.key, e.last_used) for e in snapshot] == [(volume.key, None)]
    monkeypatch.setattr(worker_a, "entries", lambda: snapshot)  # A acts on its older listing
    assert worker_a.evict() == []
    assert (volume.directory / META_FILE).exists()
    again = VolumeCache(root, max_bytes=1 << 30)
    assert again._open_entry(volume.key, source=volume.source, kind="image") is not None


def test_eviction_keeps_an_entry_used_after_its_snapshot(tmp_path, monkeypatch):
    """LRU eviction with an out-of-date listing: an entry used meanwhile (its sidecar touched)
    is no longer the least recently used, so it stays."""
    data, affine = phantom_ras()
    sources = [write_nifti(tmp_path / f"ct{n}.nii", data + n, affine) for n in range(2)]
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30, write_behind=False)
    old, new = (cache.get(path) for path in sources)
    for volume, age in ((old, 200), (new, 100)):
        meta = volume.directory / META_FILE
        os.utime(meta, (meta.stat().st_atime - age, meta.stat().st_mtime - age))
    snapshot = cache.entries()
    os.utime(old.directory / META_FILE)  # used by another process after the listing
    monkeypatch.setattr(cache, "entries", lambda: snapshot)
    cache.max_bytes = max(e.size_bytes for e in snapshot)  # room for one entry only
    assert cache.evict() == [new.key]
    assert (old.directory / META_FILE).exists() and not new.directory.exists()
