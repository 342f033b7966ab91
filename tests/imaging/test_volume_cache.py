"""The decoded-volume cache: correctness, one conversion across processes, damage, staleness,
eviction and cached projections."""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from viewer.imaging import display, projection, volume_cache
from viewer.imaging.volume_cache import DATA_FILE, META_FILE, VolumeCache
from viewer.imaging.volume_io import VolumeError, read_volume

from . import cache_workers
from .conftest import phantom_labels, phantom_ras, write_nifti


@pytest.fixture
def conversions(tmp_path, monkeypatch) -> Path:
    """Count conversions in this process: returns the counter file (one line per conversion)."""
    counter = tmp_path / "conversions.log"
    counter.touch()
    monkeypatch.setattr(volume_cache.VolumeCache, "_convert", volume_cache.VolumeCache._convert)
    cache_workers.count_conversions(counter)
    return counter


def _count(counter: Path) -> int:
    return len(counter.read_text().splitlines())


def _big_phantom(tmp_path: Path, name: str = "big.nii.gz", shape=(96, 80, 60), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    data = rng.integers(-1000, 1500, size=shape, dtype=np.int16)
    affine = np.diag([0.7, 0.8, 1.5, 1.0])
    return write_nifti(tmp_path / name, data, affine)


@pytest.mark.parametrize("write_behind", [True, False])
def test_cached_volume_equals_nibabel_canonical(sample_dir, tmp_path, write_behind):
    path = sample_dir / "ts_example_dicom_vertebrae.nii.gz"
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30, write_behind=write_behind)
    volume = cache.get(path, kind="label")
    canonical = nib.as_closest_canonical(nib.load(path))
    expected = np.asanyarray(canonical.dataobj)
    assert np.array_equal(volume.data, expected)
    assert volume.persisted is not write_behind  # write-behind serves the decoded copy first
    cache.wait()
    assert cache.get(path, kind="label").persisted  # then swaps in the memmapped file
    reopened = VolumeCache(tmp_path / "cache", max_bytes=1 << 30).get(path, kind="label")
    assert reopened.persisted and isinstance(reopened.data.base, np.memmap)
    assert np.array_equal(reopened.data, expected)
    assert np.allclose(reopened.affine, canonical.affine)
    assert reopened.spacing == pytest.approx((0.9765625, 0.9765625, 2.0))
    assert reopened.original_axcodes == "LAS"
    assert reopened.intensity_range == (0.0, 19.0)
    for plane in display.PLANES:
        index = reopened.slice_count(plane=plane) // 2
        assert np.array_equal(
            reopened.tile(plane=plane, index=index),
            display.slice_tile(expected, plane=plane, index=index),
        )
    meta = json.loads((reopened.directory / META_FILE).read_text())
    assert meta["layout"] == "kji" and meta["storage_shape"] == [20, 512, 512]
    assert cache.verify(reopened)


def test_image_pair_and_intensity_range(sample_dir, tmp_path):
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30)
    image, labels = cache.get_pair(
        sample_dir / "ts_example_ct_3mm.nii.gz", sample_dir / "ts_example_ct_3mm_vertebrae.nii.gz"
    )
    cache.wait()
    assert image.data.dtype == np.int16 and labels.data.dtype == np.uint8
    assert image.intensity_range == (-1100.0, 1207.0)
    assert image.pixel_spacing(plane="sagittal") == display.PixelSpacing(3.0, 3.0)


def test_pair_grid_mismatch(tmp_path):
    data, affine = phantom_ras()
    image = write_nifti(tmp_path / "image.nii.gz", data, affine)
    shifted = affine.copy()
    shifted[2, 3] += 1.0
    labels = write_nifti(tmp_path / "labels.nii.gz", phantom_labels(), shifted)
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30)
    with pytest.raises(VolumeError, match="affine differs"):
        cache.get_pair(image, labels)
    cache.wait()


def test_two_processes_convert_once(tmp_path):
    source = _big_phantom(tmp_path)
    counter = tmp_path / "conversions.log"
    counter.touch()
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    args = (str(tmp_path / "cache"), str(source), str(counter), barrier, results)
    workers = [context.Process(target=cache_workers.get_volume, args=args) for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    expected = read_volume(source).data
    assert {pid for pid, _, _ in outcomes} == {w.pid for w in workers}
    for _, shape, total in outcomes:
        assert shape == expected.shape and total == int(expected.astype(np.int64).sum())
    assert _count(counter) == 1


def test_threads_of_one_process_convert_once(tmp_path, conversions):
    source = _big_phantom(tmp_path, shape=(40, 40, 40))
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30)
    with ThreadPoolExecutor(max_workers=4) as pool:
        volumes = list(pool.map(lambda _: cache.get(source), range(4)))
    cache.wait()
    assert _count(conversions) == 1
    expected = read_volume(source).data
    assert all(np.array_equal(v.data, expected) for v in volumes)


def test_truncated_cache_file_is_rebuilt(tmp_path, conversions):
    source = _big_phantom(tmp_path)
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30)
    volume = cache.get(source)
    cache.wait()
    data_path = volume.directory / DATA_FILE
    with open(data_path, "r+b") as handle:
        handle.truncate(data_path.stat().st_size // 2)
    fresh = VolumeCache(tmp_path / "cache", max_bytes=1 << 30)  # as another process would
    rebuilt = fresh.get(source)
    fresh.wait()
    assert _count(conversions) == 2
    assert np.array_equal(rebuilt.data, read_volume(source).data)
    again = VolumeCache(tmp_path / "cache", max_bytes=1 << 30).get(source)
    assert again.persisted and _count(conversions) == 2


def test_damaged_sidecar_is_rebuilt(tmp_path, conversions):
    source = _big_phantom(tmp_path, shape=(20, 20, 20))
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30)
    volume = cache.get(source)
    cache.wait()
    (volume.directory / META_FILE).write_text("{not json")
    VolumeCache(tmp_path / "cache", max_bytes=1 << 30, write_behind=False).get(source)
    assert _count(conversions) == 2
    assert json.loads((volume.directory / META_FILE).read_text())["format"] == 1


def test_checksum_verification_catches_flipped_bytes(tmp_path, conversions):
    source = _big_phantom(tmp_path, shape=(20, 20, 20))
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30, write_behind=False)
    volume = cache.get(source)
    with open(volume.directory / DATA_FILE, "r+b") as handle:
        handle.seek(-10, os.SEEK_END)
        handle.write(b"\xff" * 10)
    assert not cache.verify(volume)
    VolumeCache(tmp_path / "cache", max_bytes=1 << 30, verify_checksum=True).get(source)
    assert _count(conversions) == 2


def test_changed_source_is_converted_again(tmp_path, conversions):
    source = _big_phantom(tmp_path, shape=(20, 20, 20), seed=1)
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30, write_behind=False)
    first = cache.get(source)
    assert cache.get(source) is first and _count(conversions) == 1
    data, affine = phantom_ras()
    write_nifti(source, data, affine)
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    second = cache.get(source)
    assert _count(conversions) == 2
    assert np.array_equal(second.data, data)
    assert not first.directory.exists()  # the stale entry of the same path is removed
    assert len(cache.entries()) == 1


def test_eviction_keeps_the_cache_under_max_bytes_lru_first(tmp_path, conversions):
    sources = [_big_phantom(tmp_path, f"v{n}.nii.gz", shape=(40, 40, 40), seed=n) for n in range(4)]
    one = 40 * 40 * 40 * 2 + 128 + 1024  # data + npy header + a generous sidecar
    cache = VolumeCache(
        tmp_path / "cache", max_bytes=3 * one, write_behind=False, touch_interval_s=0
    )
    volumes = [cache.get(path) for path in sources[:3]]
    for age, volume in zip((300, 100, 200), volumes, strict=True):  # v1 newest, v0 oldest
        past = volume.directory / META_FILE
        os.utime(past, (past.stat().st_atime - age, past.stat().st_mtime - age))
    cache.get(sources[3])  # over the limit: the least recently used (v0) goes
    remaining = {entry.key for entry in cache.entries()}
    assert volumes[0].key not in remaining
    assert {volumes[1].key, volumes[2].key} <= remaining
    assert cache.total_bytes() <= 3 * one
    # Using v2 makes v1 the least recently used; the next conversion evicts v1.
    cache.get(sources[2])
    cache.get(sources[0])
    remaining = {entry.key for entry in cache.entries()}
    assert volumes[1].key not in remaining and volumes[2].key in remaining
    assert cache.total_bytes() <= 3 * one
    # An evicted volume is converted again when asked for.
    before = _count(conversions)
    assert np.array_equal(cache.get(sources[1]).data, read_volume(sources[1]).data)
    assert _count(conversions) == before + 1


def test_whole_volume_projections_are_cached(tmp_path, monkeypatch):
    source = _big_phantom(tmp_path, shape=(30, 20, 10))
    data = read_volume(source).data
    labels = (data > 1200).astype(np.uint8) * 20
    label_source = write_nifti(tmp_path / "labels.nii.gz", labels, np.diag([0.7, 0.8, 1.5, 1.0]))
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30)
    image, label_volume = cache.get_pair(source, label_source)
    cache.wait()
    mip = cache.projection(image, plane="coronal")
    assert np.array_equal(mip, projection.project(data, plane="coronal", mode="mip"))
    assert (image.directory / "proj-mip-coronal.npy").exists()
    labelled = cache.label_projection(image, label_volume, plane="sagittal")
    expected = projection.project_with_labels(data, labels, plane="sagittal")
    assert np.array_equal(labelled.labels, expected.labels)
    assert np.array_equal(labelled.tile, expected.tile)

    def fail(*args, **kwargs):
        raise AssertionError("recomputed a cached projection")

    monkeypatch.setattr(projection, "project", fail)
    monkeypatch.setattr(projection, "project_with_labels", fail)
    fresh = VolumeCache(tmp_path / "cache", max_bytes=1 << 30)
    image2, labels2 = fresh.get_pair(source, label_source)
    assert np.array_equal(fresh.projection(image2, plane="coronal"), mip)
    again = fresh.label_projection(image2, labels2, plane="sagittal")
    assert np.array_equal(again.labels, expected.labels)
    with pytest.raises(ValueError, match="unknown plane"):
        fresh.projection(image2, plane="oblique")


def test_bad_source_raises_and_leaves_no_lock_held(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image at all" * 10)
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30)
    for _ in range(2):  # the second attempt would hang if the lock were still held
        with pytest.raises(VolumeError, match="not a NIfTI"):
            cache.get(bad)
    with pytest.raises(VolumeError, match="cannot read"):
        cache.get(tmp_path / "absent.nii.gz")
    with pytest.raises(ValueError, match="kind"):
        cache.get(bad, kind="mask")
    cache.evict()
    assert cache.entries() == []


def test_leftovers_of_a_crashed_conversion_are_cleaned(tmp_path):
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30)
    leftover = tmp_path / "cache" / "volumes" / "0123456789abcdef-000000000000"
    leftover.mkdir(parents=True)
    (leftover / f"{DATA_FILE}.tmp-1-deadbeef").write_bytes(b"x" * 100)
    assert cache.evict() == [leftover.name]
    assert not leftover.exists()
