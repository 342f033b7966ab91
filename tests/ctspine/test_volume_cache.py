"""The decoded-volume cache: correctness, one conversion across processes, damage, staleness,
eviction and cached projections."""

from __future__ import annotations

import json
import multiprocessing
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ctspine import volume_cache
from ctspine.atomic import lock_file
from ctspine.imaging import display, projection
from ctspine.imaging.volume_io import VolumeError, read_volume
from ctspine.volume_cache import (
    DATA_FILE,
    META_FILE,
    SAGITTAL_FILE,
    SAGITTAL_META_FILE,
    VolumeCache,
)
from tests.ctspine import cache_workers
from tests.ctspine.conftest import phantom_labels, phantom_ras, reorient, write_nifti


def entry_intact(volume) -> bool:
    """Whether a cache entry's files match the CRC-32 in their sidecars (the sagittal copy too,
    if committed, and made from this version of the volume)."""
    directory = volume.directory
    try:
        meta = json.loads((directory / META_FILE).read_text())
        if zlib.crc32(np.load(directory / DATA_FILE, mmap_mode="r")) != meta["crc32"]:
            return False
        if not (directory / SAGITTAL_META_FILE).exists():
            return True
        side = json.loads((directory / SAGITTAL_META_FILE).read_text())
        copy = np.load(directory / SAGITTAL_FILE, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return side["volume_crc32"] == meta["crc32"] and zlib.crc32(copy) == side["crc32"]


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
    assert entry_intact(reopened)


def test_image_pair_and_intensity_range(sample_dir, tmp_path):
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30)
    image, labels = cache.get_many(
        [
            (sample_dir / "ts_example_ct_3mm.nii.gz", "image"),
            (sample_dir / "ts_example_ct_3mm_vertebrae.nii.gz", "label"),
        ]
    )
    cache.wait()
    assert image.data.dtype == np.int16 and labels.data.dtype == np.uint8
    assert image.intensity_range == (-1100.0, 1207.0)
    assert image.pixel_spacing(plane="sagittal") == display.PixelSpacing(3.0, 3.0)


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
    assert not entry_intact(volume)
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
    assert sum(e.size_bytes for e in cache.entries()) <= 3 * one
    # Using v2 makes v1 the least recently used; the next conversion evicts v1.
    cache.get(sources[2])
    cache.get(sources[0])
    remaining = {entry.key for entry in cache.entries()}
    assert volumes[1].key not in remaining and volumes[2].key in remaining
    assert sum(e.size_bytes for e in cache.entries()) <= 3 * one
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
    image, label_volume = cache.get_many([(source, "image"), (label_source, "label")])
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
    image2, labels2 = fresh.get_many([(source, "image"), (label_source, "label")])
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


# ----------------------------------------------------------------- sagittal copies


def _sagittal_cache(root: Path, **options) -> VolumeCache:
    """A cache that copies every volume's sagittal tiles, however small."""
    return VolumeCache(root, max_bytes=1 << 30, sagittal_min_bytes=0, **options)


def _assert_all_sagittal_tiles(volume, expected: np.ndarray) -> None:
    for index in range(expected.shape[0]):
        tile = volume.tile(plane="sagittal", index=index)
        assert np.array_equal(tile, display.slice_tile(expected, plane="sagittal", index=index))


@pytest.mark.parametrize("write_behind", [True, False])
@pytest.mark.parametrize("axcodes", ["RAS", "LPS", "PIR"])
def test_sagittal_copy_gives_identical_tiles(tmp_path, write_behind, axcodes):
    data, affine = phantom_ras()
    labels = phantom_labels()
    image_path = write_nifti(tmp_path / "image.nii.gz", *reorient(data, affine, axcodes))
    label_path = write_nifti(tmp_path / "labels.nii.gz", *reorient(labels, affine, axcodes))
    cache = _sagittal_cache(tmp_path / "cache", write_behind=write_behind)
    image, label_volume = cache.get_many([(image_path, "image"), (label_path, "label")])
    _assert_all_sagittal_tiles(image, data)  # before the copy exists: the strided view
    cache.wait()
    for path, kind, expected in ((image_path, "image", data), (label_path, "label", labels)):
        volume = cache.get(path, kind=kind)
        assert volume.sagittal is not None and volume.sagittal.shape == (24, 16, 20)
        _assert_all_sagittal_tiles(volume, expected)
        assert volume.tile(plane="sagittal", index=5).flags.c_contiguous
        side = json.loads((volume.directory / SAGITTAL_META_FILE).read_text())
        assert (
            side["volume_crc32"] == json.loads((volume.directory / META_FILE).read_text())["crc32"]
        )
        assert entry_intact(volume)
        # Another process opens the entry with its copy, memory-mapped.
        reopened = _sagittal_cache(tmp_path / "cache").get(path, kind=kind)
        assert isinstance(reopened.sagittal, np.memmap)
        _assert_all_sagittal_tiles(reopened, expected)
        for plane in ("axial", "coronal"):  # other planes are unaffected
            index = expected.shape[display.NORMAL_AXIS[plane]] // 2
            assert np.array_equal(
                reopened.tile(plane=plane, index=index),
                display.slice_tile(expected, plane=plane, index=index),
            )
    with pytest.raises(ValueError, match="out of range"):
        image.tile(plane="sagittal", index=24)


def test_small_volumes_get_no_sagittal_copy(tmp_path):
    source = _big_phantom(tmp_path, shape=(20, 20, 20))
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30)  # default threshold: 32 MiB
    volume = cache.get(source)
    cache.wait()
    assert cache.get(source).sagittal is None
    assert not (volume.directory / SAGITTAL_FILE).exists()


@pytest.mark.parametrize(
    "damage", ["truncate", "sidecar", "other volume", "flipped bytes", "missing sidecar"]
)
def test_damaged_sagittal_copy_is_rebuilt(tmp_path, conversions, damage):
    source = _big_phantom(tmp_path, shape=(30, 20, 10))
    expected = read_volume(source).data
    cache = _sagittal_cache(tmp_path / "cache")
    first = cache.get(source)
    cache.wait()
    directory = first.directory
    copy, side = directory / SAGITTAL_FILE, directory / SAGITTAL_META_FILE
    if damage == "truncate":
        with open(copy, "r+b") as handle:
            handle.truncate(copy.stat().st_size - 7)
    elif damage == "sidecar":
        side.write_text("{not json")
    elif damage == "other volume":
        side.write_text(json.dumps({**json.loads(side.read_text()), "volume_crc32": 1}))
    elif damage == "flipped bytes":
        with open(copy, "r+b") as handle:
            handle.seek(-10, os.SEEK_END)
            handle.write(b"\xff" * 10)
    else:
        side.unlink()
    if damage != "missing sidecar":
        assert not entry_intact(first)
    fresh = _sagittal_cache(tmp_path / "cache", verify_checksum=damage == "flipped bytes")
    volume = fresh.get(source)
    _assert_all_sagittal_tiles(volume, expected)  # served from the strided view meanwhile
    fresh.wait()
    rebuilt = _sagittal_cache(tmp_path / "cache", verify_checksum=True).get(source)
    assert rebuilt.sagittal is not None and entry_intact(rebuilt)
    _assert_all_sagittal_tiles(rebuilt, expected)
    assert fresh.get(source).sagittal is not None  # attached to the open volume too
    assert _count(conversions) == 1  # volume.npy itself was kept


def test_damaged_volume_is_never_copied(tmp_path):
    source = _big_phantom(tmp_path, shape=(30, 20, 10))
    first = VolumeCache(tmp_path / "cache", max_bytes=1 << 30, write_behind=False)
    volume = first.get(source)  # no copy: default threshold
    with open(volume.directory / DATA_FILE, "r+b") as handle:
        handle.seek(-10, os.SEEK_END)
        handle.write(b"\xff" * 10)
    cache = _sagittal_cache(tmp_path / "cache")
    cache.get(source)
    cache.wait()
    assert not (volume.directory / SAGITTAL_META_FILE).exists()
    assert cache.get(source).sagittal is None


def test_copy_built_elsewhere_is_picked_up_by_open_volumes(tmp_path):
    source = _big_phantom(tmp_path, shape=(30, 20, 10))
    VolumeCache(tmp_path / "cache", max_bytes=1 << 30, write_behind=False).get(source)
    reader = _sagittal_cache(tmp_path / "cache", sagittal_poll_s=0)
    key = volume_cache.SourceIdentity.of(source).key("image")
    # Another process is building the copy: this one leaves it alone.
    busy = lock_file(tmp_path / "cache" / "locks" / f"{key}.sagittal.lock")
    try:
        volume = reader.get(source)
        reader.wait()
        assert reader.get(source) is volume
        reader.wait()
        assert volume.sagittal is None
    finally:
        os.close(busy)
    builder = _sagittal_cache(tmp_path / "cache")
    builder.get(source)
    builder.wait()
    assert reader.get(source) is volume and volume.sagittal is not None
    _assert_all_sagittal_tiles(volume, read_volume(source).data)


def test_sagittal_copies_count_in_eviction(tmp_path, conversions):
    sources = [_big_phantom(tmp_path, f"v{n}.nii.gz", shape=(40, 40, 40), seed=n) for n in range(3)]
    one = 40 * 40 * 40 * 2 + 128 + 1024  # data + npy header + a generous sidecar
    cache = _sagittal_cache(tmp_path / "cache", write_behind=False, touch_interval_s=0)
    cache.max_bytes = 3 * one  # room for three volumes without copies, one and a half with
    first = cache.get(sources[0])
    cache.wait()
    entry = {e.key: e for e in cache.entries()}[first.key]
    assert entry.size_bytes >= 2 * 40 * 40 * 40 * 2  # the volume and its copy
    past = first.directory / META_FILE
    os.utime(past, (past.stat().st_atime - 100, past.stat().st_mtime - 100))
    second = cache.get(sources[1])
    cache.wait()  # the copy makes the cache too big: the least recently used entry goes
    remaining = {e.key for e in cache.entries()}
    assert first.key not in remaining and second.key in remaining
    assert sum(e.size_bytes for e in cache.entries()) <= 3 * one
    # The entry that grew by its copy is never the one evicted for it.
    third = cache.get(sources[2])
    cache.wait()
    assert third.key in {e.key for e in cache.entries()}


def test_get_many_decodes_in_parallel_threads(tmp_path, conversions, monkeypatch):
    data, affine = phantom_ras()
    image_path = write_nifti(tmp_path / "image.nii.gz", data, affine)
    label_path = write_nifti(tmp_path / "labels.nii.gz", phantom_labels(), affine)
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30)
    threads = []
    convert = volume_cache.VolumeCache._convert

    def recording(self, key, **kwargs):
        import threading

        threads.append(threading.current_thread().name)
        return convert(self, key, **kwargs)

    monkeypatch.setattr(volume_cache.VolumeCache, "_convert", recording)
    image, labels, again = cache.get_many(
        [(image_path, "image"), (label_path, "label"), (label_path, "label")]
    )
    cache.wait()
    assert len(set(threads)) == 2  # one decode per file, each in its own thread
    assert again is labels and np.array_equal(image.data, data)
    assert np.array_equal(labels.data, phantom_labels())
    assert cache.get_many([(image_path, "image")]) == [cache.get(image_path)]
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image at all" * 10)
    for _ in range(2):  # no lock left held
        with pytest.raises(VolumeError, match="not a NIfTI"):
            cache.get_many([(image_path, "image"), (bad, "label")])
    cache.wait()
