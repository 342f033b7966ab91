"""The compressed volume store: round trips, planes in display orientation, damage, the slab cache."""

from __future__ import annotations

import numpy as np
import pytest

from ctspine.imaging import display
from ctspine.volume_store import (
    DecodedSlabs,
    StoreError,
    StoreLayout,
    file_crc32,
    open_store,
    write_store,
)

SMALL = StoreLayout(chunks=(8, 16, 16), blocks=(4, 8, 8))


def _volume(shape=(37, 29, 21), seed=0) -> np.ndarray:
    """A RAS (X, Y, Z) int16 volume with no symmetry (every voxel different modulo 30011)."""
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 3000, size=shape, dtype=np.int16)


def _store(tmp_path, ras: np.ndarray, *, layout=SMALL, slabs=None):
    path = tmp_path / "volume.b2nd"
    crc = write_store(path, ras.T, layout=layout)
    return path, crc, open_store(path, shape=ras.shape, dtype=ras.dtype, slabs=slabs)


def test_round_trip_whole_volume_and_metadata(tmp_path):
    ras = _volume()
    path, crc, stored = _store(tmp_path, ras)
    assert stored.shape == ras.shape and stored.dtype == np.int16
    assert stored.nbytes == ras.nbytes
    assert stored.blocks == (4, 8, 8)
    assert crc == file_crc32(path)
    assert np.array_equal(stored.read(), ras)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


@pytest.mark.parametrize("plane", display.PLANES)
@pytest.mark.parametrize("order", ["stepping", "scattered"])
def test_every_tile_equals_the_source_plane(tmp_path, plane, order):
    ras = _volume()
    _, _, stored = _store(tmp_path, ras, slabs=DecodedSlabs(1 << 20))
    indices = list(range(display.slice_count(ras.shape, plane=plane)))
    if order == "scattered":  # every other slab first: single planes, then slabs, mixed
        indices = indices[::5] + indices[::-1]
    for index in indices:
        tile = stored.tile(plane=plane, index=index)
        assert not tile.flags.writeable
        assert np.array_equal(tile, display.slice_tile(ras, plane=plane, index=index))


def test_tiles_without_a_slab_cache(tmp_path):
    ras = _volume()
    _, _, stored = _store(tmp_path, ras)
    assert np.array_equal(
        stored.tile(plane="sagittal", index=5), display.slice_tile(ras, plane="sagittal", index=5)
    )


def test_bad_tile_index_or_plane(tmp_path):
    _, _, stored = _store(tmp_path, _volume())
    with pytest.raises(ValueError, match="out of range 0-20"):
        stored.tile(plane="axial", index=21)
    with pytest.raises(ValueError, match="unknown plane"):
        stored.tile(plane="oblique", index=0)


def test_ras_indexing_and_voxels(tmp_path):
    ras = _volume()
    _, _, stored = _store(tmp_path, ras)
    assert stored.voxel((3, 4, 5)) == ras[3, 4, 5]
    assert stored[3, 4, 5] == ras[3, 4, 5]
    assert np.array_equal(stored[2:9, :, 4:11], ras[2:9, :, 4:11])
    assert np.array_equal(stored[:, 7], ras[:, 7])
    assert np.array_equal(stored[:, 7, 3:6], ras[:, 7, 3:6])
    assert np.array_equal(stored[..., 2], ras[..., 2])
    assert np.array_equal(stored[-1, -2, -3], ras[-1, -2, -3])
    with pytest.raises(IndexError, match="step 1"):
        stored[::2]
    with pytest.raises(IndexError, match="out of range"):
        stored[37, 0, 0]
    with pytest.raises(IndexError, match="unsupported index"):
        stored[[1, 2]]


def test_small_volumes_fit_the_layout(tmp_path):
    ras = _volume((3, 2, 1))
    _, _, stored = _store(tmp_path, ras, layout=StoreLayout())
    assert np.array_equal(stored.read(), ras)
    assert np.array_equal(stored.tile(plane="axial", index=0), ras[::-1, ::-1, 0].T)


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    ras = _volume()
    path, _, _ = _store(tmp_path, ras)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("ctspine.volume_store.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_store(path, np.zeros((4, 4, 4), np.int16), layout=SMALL)
    assert path.read_bytes() == before  # the old file is intact, no temporary left
    assert list(tmp_path.iterdir()) == [path]


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="3D volume"):
        write_store(tmp_path / "x.b2nd", np.zeros((4, 4), np.int16))
    with pytest.raises(ValueError, match="unknown blosc2 codec"):
        write_store(tmp_path / "x.b2nd", np.zeros((4, 4, 4)), layout=StoreLayout(codec="nope"))
    with pytest.raises(ValueError, match="max_bytes"):
        DecodedSlabs(-1)


def test_open_detects_missing_truncated_damaged_and_unexpected_files(tmp_path):
    ras = _volume()
    path, crc, _ = _store(tmp_path, ras)
    size = path.stat().st_size
    with pytest.raises(StoreError, match="cannot read the store file"):
        open_store(tmp_path / "absent.b2nd")
    with pytest.raises(StoreError, match=r"shape \(37, 29, 21\), expected \(1, 2, 3\)"):
        open_store(path, shape=(1, 2, 3))
    with pytest.raises(StoreError, match="dtype int16, expected uint8"):
        open_store(path, dtype=np.uint8)
    payload = bytearray(path.read_bytes())

    truncated = tmp_path / "truncated.b2nd"
    truncated.write_bytes(payload[: size // 2])
    with pytest.raises(StoreError, match=f"{size // 2} bytes, expected {size}"):
        open_store(truncated, size=size)
    with pytest.raises(StoreError, match="not a readable blosc2 store"):
        open_store(truncated)  # without the expected size: the frame itself is incomplete

    damaged = tmp_path / "damaged.b2nd"
    payload[size // 2 : size // 2 + 64] = bytes(64)
    damaged.write_bytes(payload)
    with pytest.raises(StoreError, match="checksum mismatch"):
        open_store(damaged, size=size, crc32=crc)

    junk = tmp_path / "junk.b2nd"
    junk.write_bytes(b"not a store" * 100)
    with pytest.raises(StoreError, match="not a readable blosc2 store"):
        open_store(junk)


def test_damaged_block_raises_store_error_on_read(tmp_path):
    ras = _volume()
    path, _, _ = _store(tmp_path, ras)
    payload = bytearray(path.read_bytes())
    start = len(payload) // 3
    payload[start : start + 400] = bytes(b ^ 0xFF for b in payload[start : start + 400])
    path.write_bytes(payload)
    stored = open_store(path)  # header intact: only reading finds the damage
    with pytest.raises(StoreError, match="cannot be decoded"):
        stored.read()


def test_slabs_are_decoded_when_stepping_and_stay_within_their_bound(tmp_path):
    ras = _volume()
    slab_bytes = 4 * 29 * 37 * 2  # one axial slab: 4 k-slices (the block extent) of 29 x 37
    slabs = DecodedSlabs(2 * slab_bytes)
    _, _, stored = _store(tmp_path, ras, slabs=slabs)
    stored.tile(plane="axial", index=0)
    stored.tile(plane="axial", index=1)
    assert slabs.nbytes == 0  # single reads, and one neighbour, decode only their plane
    third = stored.tile(plane="axial", index=2)  # a run of two: the slab is decoded and kept
    assert slabs.nbytes == slab_bytes
    assert stored.tile(plane="axial", index=3).base is third.base  # not decoded again
    for index in range(4, 11):  # two more slabs: the least recently used one goes
        stored.tile(plane="axial", index=index)
    assert slabs.nbytes == 2 * slab_bytes
    assert stored.tile(plane="axial", index=2).base is not third.base
    big = DecodedSlabs(slab_bytes - 1)  # a slab larger than the whole bound is not kept
    _, _, uncached = _store(tmp_path, ras, slabs=big)
    for index in range(4):
        assert np.array_equal(uncached.tile(plane="axial", index=index), _axial_tile(ras, index))
    assert big.nbytes == 0


def test_decoded_slabs_forget_old_keys():
    slabs = DecodedSlabs(0, recent=2)
    for key in ("a", "b", "a", "c"):
        slabs.remember(key)
    assert [slabs.recalls(key) for key in ("a", "b", "c")] == [True, False, True]


def test_scattered_reads_decode_no_slab(tmp_path):
    ras = _volume()
    slabs = DecodedSlabs(1 << 20)
    _, _, stored = _store(tmp_path, ras, slabs=slabs)
    for index in (0, 2, 20, 18, 16, 8, 10, 5, 12, 9):  # same slabs again, never a run of two
        assert np.array_equal(stored.tile(plane="axial", index=index), _axial_tile(ras, index))
    assert slabs.nbytes == 0
    stored.tile(plane="axial", index=11)  # after 9 and 10: now the slab is kept
    assert slabs.nbytes == 4 * 29 * 37 * 2


def _axial_tile(ras: np.ndarray, index: int) -> np.ndarray:
    return display.slice_tile(ras, plane="axial", index=index)


def test_slab_cache_keys_follow_the_file_version(tmp_path):
    slabs = DecodedSlabs(1 << 20)
    ras = _volume()
    _, _, old = _store(tmp_path, ras, slabs=slabs)
    for index in (0, 1, 2):  # the slab is kept now
        old.tile(plane="axial", index=index)
    assert slabs.nbytes > 0
    other = _volume(seed=1)
    _, _, new = _store(tmp_path, other, slabs=slabs)  # same path, rewritten
    for index in (0, 1, 2):
        assert np.array_equal(new.tile(plane="axial", index=index), _axial_tile(other, index))
