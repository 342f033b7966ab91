"""The volume cache: correctness of every plane from the compressed store, one conversion across
processes, atomic writes, damage, staleness, eviction, the decoded-slab bound and projections."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ctspine import volume_cache, volume_store
from ctspine.imaging import display, projection
from ctspine.imaging.volume_io import VolumeError, read_volume
from ctspine.volume_cache import (
    DATA_FILE,
    FORMAT_VERSION,
    META_FILE,
    VERIFIED_FILE,
    VolumeCache,
)
from ctspine.volume_store import StoredVolume, StoreError, StoreLayout
from tests.ctspine import cache_workers
from tests.ctspine.conftest import phantom_labels, phantom_ras, reorient, write_nifti


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
    assert np.array_equal(volume.read(), expected)
    assert volume.persisted is not write_behind  # write-behind serves the decoded copy first
    cache.wait()
    assert cache.get(path, kind="label").persisted  # then swaps in the store
    reopened = VolumeCache(tmp_path / "cache", max_bytes=1 << 30).get(path, kind="label")
    assert reopened.persisted and isinstance(reopened.data, StoredVolume)
    assert np.array_equal(reopened.read(), expected)
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
    assert meta["layout"] == "kji" and meta["shape_ras"] == [512, 512, 20]
    assert meta["store"]["codec"] == "lz4" and meta["data_file"] == "volume.b2nd"
    assert sorted(p.name for p in reopened.directory.iterdir()) == sorted(
        [DATA_FILE, META_FILE, VERIFIED_FILE]
    )


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
    assert all(np.array_equal(v.read(), expected) for v in volumes)


def test_truncated_store_is_reported_and_rebuilt(tmp_path, conversions, caplog):
    source = _big_phantom(tmp_path)
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30)
    volume = cache.get(source)
    cache.wait()
    data_path = volume.directory / DATA_FILE
    size = data_path.stat().st_size
    with open(data_path, "r+b") as handle:
        handle.truncate(size // 2)
    fresh = VolumeCache(tmp_path / "cache", max_bytes=1 << 30)  # as another process would
    rebuilt = fresh.get(source)
    fresh.wait()
    assert _count(conversions) == 2
    assert f"{size // 2} bytes, expected {size} (truncated or replaced)); rebuilding" in caplog.text
    assert np.array_equal(rebuilt.read(), read_volume(source).data)
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
    assert json.loads((volume.directory / META_FILE).read_text())["format"] == FORMAT_VERSION


def _flip(path: Path, *, at: float = 0.5, count: int = 64) -> None:
    """Invert ``count`` bytes from ``at`` (a fraction of the file's size) on."""
    start = int(path.stat().st_size * at)
    with open(path, "r+b") as handle:
        handle.seek(start)
        payload = handle.read(count)
        handle.seek(start)
        handle.write(bytes(b ^ 0xFF for b in payload))


def test_checksum_verification_catches_flipped_bytes(tmp_path, conversions, caplog):
    source = _big_phantom(tmp_path, shape=(40, 40, 40))
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30, write_behind=False)
    volume = cache.get(source)
    _flip(volume.directory / DATA_FILE)
    fresh = VolumeCache(tmp_path / "cache", max_bytes=1 << 30, verify_checksum=True)
    rebuilt = fresh.get(source)
    assert _count(conversions) == 2
    assert "checksum mismatch (the file is damaged)); rebuilding" in caplog.text
    assert np.array_equal(rebuilt.read(), read_volume(source).data)


def test_damage_found_while_reading_is_a_clear_volume_error(tmp_path):
    source = _big_phantom(tmp_path, shape=(40, 40, 40))
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30, write_behind=False)
    # Without verify_checksum only a damaged block header is noticed (here, 1/5 into the file);
    # damage inside compressed data can go unnoticed, which the checksum test covers.
    _flip(cache.get(source).directory / DATA_FILE, at=0.2, count=400)
    unchecked = VolumeCache(tmp_path / "cache", max_bytes=1 << 30, verify_checksum=False)
    unchecked = unchecked.get(source)
    with pytest.raises(StoreError, match="cannot be decoded") as raised:
        unchecked.read()
    assert isinstance(raised.value, VolumeError)  # the tile views answer 422 with the message


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
    assert np.array_equal(second.read(), data)
    assert not first.directory.exists()  # the stale entry of the same path is removed
    assert len(cache.entries()) == 1


def test_eviction_keeps_the_cache_under_max_bytes_lru_first(tmp_path, conversions):
    sources = [_big_phantom(tmp_path, f"v{n}.nii.gz", shape=(40, 40, 40), seed=n) for n in range(4)]
    cache = VolumeCache(
        tmp_path / "cache", max_bytes=1 << 30, write_behind=False, touch_interval_s=0
    )
    volumes = [cache.get(path) for path in sources[:3]]
    one = max(entry.size_bytes for entry in cache.entries())  # store + sidecar, similar for all
    cache.max_bytes = int(3.5 * one)
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
    assert np.array_equal(cache.get(sources[1]).read(), read_volume(sources[1]).data)
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


@pytest.mark.parametrize("mode", projection.MODES)
@pytest.mark.parametrize("plane", display.PLANES)
def test_projections_of_the_store_equal_those_of_the_array(tmp_path, plane, mode):
    data, affine = phantom_ras()
    image_path = write_nifti(tmp_path / "image.nii.gz", data, affine)
    label_path = write_nifti(tmp_path / "labels.nii.gz", phantom_labels(), affine)
    # Blocks of 4 k-slices: projections along k merge several blocks.
    layout = StoreLayout(chunks=(8, 8, 8), blocks=(4, 4, 4))
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30, write_behind=False, layout=layout)
    image, labels = cache.get_many([(image_path, "image"), (label_path, "label")])
    assert isinstance(image.data, StoredVolume) and image.data.k_step % 4 == 0
    slab = projection.Slab(start=3, stop=9)
    for volume_slab in (None, slab):
        got = projection.project_with_labels(
            image.data, labels.data, plane=plane, mode=mode, slab=volume_slab
        )
        expected = projection.project_with_labels(
            data, phantom_labels(), plane=plane, mode=mode, slab=volume_slab
        )
        assert np.array_equal(got.tile, expected.tile)
        assert np.array_equal(got.labels, expected.labels)
        assert np.array_equal(
            projection.project(image.data, plane=plane, mode=mode, slab=volume_slab),
            projection.project(data, plane=plane, mode=mode, slab=volume_slab),
        )


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


# ----------------------------------------------------------------- tiles from the store


@pytest.mark.parametrize("axcodes", ["RAS", "LPS"])
@pytest.mark.parametrize("write_behind", [True, False])
def test_every_tile_of_every_plane_equals_the_source(tmp_path, axcodes, write_behind):
    data, affine = phantom_ras()
    expected = {"image": data, "label": phantom_labels()}
    paths = {
        kind: write_nifti(tmp_path / f"{kind}.nii.gz", *reorient(array, affine, axcodes))
        for kind, array in expected.items()
    }
    layout = StoreLayout(chunks=(8, 8, 8), blocks=(4, 4, 4))  # tiles cross several blocks
    cache = VolumeCache(
        tmp_path / "cache", max_bytes=1 << 30, write_behind=write_behind, layout=layout
    )
    for kind, path in paths.items():
        cache.get(path, kind=kind)  # in memory (write-behind) or from the store
    cache.wait()
    reopened = VolumeCache(tmp_path / "cache", max_bytes=1 << 30)  # always from the store
    for kind, path in paths.items():
        for volume in (cache.get(path, kind=kind), reopened.get(path, kind=kind)):
            assert volume.original_axcodes == axcodes and isinstance(volume.data, StoredVolume)
            for plane in display.PLANES:
                for index in range(volume.slice_count(plane=plane)):
                    assert np.array_equal(
                        volume.tile(plane=plane, index=index),
                        display.slice_tile(expected[kind], plane=plane, index=index),
                    )
            assert volume.voxel((3, 17, 11)) == expected[kind][3, 17, 11]
    with pytest.raises(ValueError, match="out of range 0-23"):
        volume.tile(plane="sagittal", index=24)


def test_failed_store_write_commits_nothing_and_converts_again(tmp_path, conversions, monkeypatch):
    source = _big_phantom(tmp_path, shape=(20, 20, 20))
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30, write_behind=False)
    replace = os.replace

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("ctspine.volume_store.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        cache.get(source)
    (entry,) = cache.entries()
    assert entry.last_used is None and list(entry.directory.iterdir()) == []  # no sidecar, no temp
    monkeypatch.setattr("ctspine.volume_store.os.replace", replace)
    volume = cache.get(source)  # the lock was released: converted again, committed
    assert _count(conversions) == 2 and volume.persisted
    assert np.array_equal(volume.read(), read_volume(source).data)


def test_decoded_slabs_stay_within_their_bound(tmp_path):
    source = _big_phantom(tmp_path, shape=(64, 48, 40))
    layout = StoreLayout(chunks=(16, 16, 16), blocks=(8, 8, 8))
    slab = 8 * 48 * 64 * 2  # one axial slab: a block's 8 k-slices, int16
    cache = VolumeCache(
        tmp_path / "cache",
        max_bytes=1 << 30,
        write_behind=False,
        layout=layout,
        slab_cache_bytes=3 * slab,
    )
    volume = cache.get(source)
    expected = read_volume(source).data
    for plane in display.PLANES:
        for index in range(volume.slice_count(plane=plane)):
            tile = volume.tile(plane=plane, index=index)
            assert cache.slabs.nbytes <= 3 * slab
            assert np.array_equal(tile, display.slice_tile(expected, plane=plane, index=index))
    assert cache.slabs.nbytes > 0
    for index in (0, 1):
        volume.tile(plane="axial", index=index)
    third = volume.tile(plane="axial", index=2)  # a run of two neighbours: the slab is decoded
    assert volume.tile(plane="axial", index=7).base is third.base  # one decode for the slab


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
    assert again is labels and np.array_equal(image.read(), data)
    assert np.array_equal(labels.read(), phantom_labels())
    assert cache.get_many([(image_path, "image")]) == [cache.get(image_path)]
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image at all" * 10)
    for _ in range(2):  # no lock left held
        with pytest.raises(VolumeError, match="not a NIfTI"):
            cache.get_many([(image_path, "image"), (bad, "label")])
    cache.wait()


@pytest.mark.parametrize("write_behind", [True, False])
def test_a_deleted_cache_folder_is_made_again_on_demand(tmp_path, write_behind):
    data, affine = phantom_ras()
    first = write_nifti(tmp_path / "first.nii.gz", data, affine)
    flipped = np.ascontiguousarray(data[::-1])
    second = write_nifti(tmp_path / "second.nii.gz", flipped, affine)
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30, write_behind=write_behind)
    cache.get(first)
    cache.wait()
    shutil.rmtree(tmp_path / "cache")  # by hand, while the server runs
    assert cache.entries() == []
    volume = cache.get(second)
    cache.wait()
    assert np.array_equal(volume.read(), flipped)
    assert [entry.key for entry in cache.entries()] == [volume.key]


@pytest.mark.parametrize("axcodes", ["RAS", "LPS", "SAR"])
@pytest.mark.parametrize("write_behind", [True, False])
def test_read_volume_through_the_cache_equals_read_volume(tmp_path, axcodes, write_behind):
    """What the segmentation pipeline and the evaluation read: the same Volume as from the file
    (data, geometry, the file's orientation and stored shape), first from the freshly decoded
    copy and then from the store."""
    data, affine = phantom_ras()
    files = {
        "image": write_nifti(tmp_path / "image.nii.gz", *reorient(data, affine, axcodes)),
        "label": write_nifti(tmp_path / "label.nii", *reorient(phantom_labels(), affine, axcodes)),
    }
    cache = VolumeCache(tmp_path / "cache", max_bytes=1 << 30, write_behind=write_behind)
    for kind, path in files.items():
        expected = read_volume(path, kind=kind)
        first = cache.read_volume(path, kind=kind)
        cache.wait()
        reopened = VolumeCache(tmp_path / "cache", max_bytes=1 << 30).read_volume(path, kind=kind)
        for volume in (first, reopened):
            assert np.array_equal(volume.data, expected.data)
            assert volume.data.dtype == expected.data.dtype
            assert np.allclose(volume.affine, expected.affine)
            assert volume.spacing == pytest.approx(expected.spacing)
            assert volume.original_axcodes == expected.original_axcodes == axcodes
            assert volume.original_shape == expected.original_shape


def test_a_store_whose_bytes_were_lost_is_rebuilt_by_default(tmp_path, conversions, caplog):
    # Stores are written without fsync (the CRC-32 is checked on every open instead): what a
    # crash can leave, the right size with some bytes never written, must not be served.
    source = _big_phantom(tmp_path, shape=(40, 40, 40))
    written = VolumeCache(tmp_path / "cache", max_bytes=1 << 30, write_behind=False).get(source)
    store = written.directory / DATA_FILE
    content = store.read_bytes()
    lost = slice(len(content) // 3, 2 * len(content) // 3)  # header and chunk index intact
    store.write_bytes(content[: lost.start] + bytes(lost.stop - lost.start) + content[lost.stop :])
    rebuilt = VolumeCache(tmp_path / "cache", max_bytes=1 << 30).get(source)
    assert _count(conversions) == 2
    assert "rebuilding" in caplog.text
    assert np.array_equal(rebuilt.read(), read_volume(source).data)


def test_a_store_is_read_whole_once_per_version_per_boot(tmp_path, monkeypatch):
    source = _big_phantom(tmp_path, shape=(40, 40, 40))
    VolumeCache(tmp_path / "cache", max_bytes=1 << 30, write_behind=False).get(source)
    reads = []
    real_crc = volume_store.file_crc32
    monkeypatch.setattr(
        volume_store, "file_crc32", lambda path: reads.append(path) or real_crc(path)
    )
    # Other server processes: the writer already vouched for this file since the boot.
    VolumeCache(tmp_path / "cache", max_bytes=1 << 30).get(source)
    VolumeCache(tmp_path / "cache", max_bytes=1 << 30).get(source)
    assert reads == []
    monkeypatch.setattr(volume_cache, "_boot_id", lambda: "after a reboot")
    VolumeCache(tmp_path / "cache", max_bytes=1 << 30).get(source)
    VolumeCache(tmp_path / "cache", max_bytes=1 << 30).get(source)
    assert len(reads) == 1  # checked again after the reboot, then vouched for


def test_a_store_rewritten_in_place_after_its_check_is_checked_again(tmp_path, conversions):
    source = _big_phantom(tmp_path, shape=(40, 40, 40))
    written = VolumeCache(tmp_path / "cache", max_bytes=1 << 30, write_behind=False).get(source)
    store = written.directory / DATA_FILE
    content = bytearray(store.read_bytes())
    third = len(content) // 3
    content[third : 2 * third] = bytes(third)
    with open(store, "r+b") as handle:  # same inode, same size: only the mtime tells
        handle.write(content)
    rebuilt = VolumeCache(tmp_path / "cache", max_bytes=1 << 30).get(source)
    assert _count(conversions) == 2
    assert np.array_equal(rebuilt.read(), read_volume(source).data)
