"""Tile encoding and case thumbnails."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from ctspine.imaging.display import PixelSpacing, pixel_spacing
from ctspine.imaging.encode import (
    MEDIA_TYPES,
    PNG_SIGNATURE,
    encode_image,
    encode_jpeg,
    encode_png,
    encode_webp,
)
from ctspine.imaging.projection import project_with_labels
from ctspine.imaging.thumbnail import render_thumbnail, thumbnail_size
from ctspine.imaging.volume_io import read_volume
from ctspine.labels import LABEL_BY_VALUE


def _decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_png_round_trip_grey_and_rgb():
    grey = np.arange(64 * 48, dtype=np.uint32).reshape(48, 64).astype(np.uint8)
    assert np.array_equal(np.asarray(_decode(encode_png(grey))), grey)
    rgb = np.stack([grey, grey[::-1], 255 - grey], axis=-1)
    assert np.array_equal(np.asarray(_decode(encode_png(rgb))), rgb)
    flipped = grey[::-1, ::-1].T  # non-contiguous views encode as they look
    assert np.array_equal(np.asarray(_decode(encode_png(flipped))), flipped)


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(tag, payload) of each chunk, checking every chunk's CRC-32 with zlib's."""
    assert data.startswith(PNG_SIGNATURE)
    chunks, at = [], len(PNG_SIGNATURE)
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        tag, payload = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(tag + payload), tag
        chunks.append((tag, payload))
        at += 12 + length
    return chunks


def _tiles(rng: np.random.Generator, rows: int, cols: int) -> dict[str, np.ndarray]:
    noise = rng.integers(0, 256, size=(rows, cols, 4), dtype=np.uint8)
    smooth = (np.add.outer(np.arange(rows), np.arange(cols)) * 3 % 256).astype(np.uint8)
    rgba = noise.copy()
    rgba[..., 0] = smooth
    return {
        "grey noise": noise[..., 0].copy(),
        "grey smooth": smooth,
        "rgb": np.ascontiguousarray(noise[..., :3]),
        "rgba": rgba,
        "grey flipped view": smooth[::-1, ::-1].T,
        "rgb view of rgba": noise[..., :3],
        "rgb flipped view": noise[::-1, :, :3],
        "grey column view": noise[:, 1, :1].reshape(rows, 1) if cols > 1 else smooth,
    }


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (2, 3), (13, 17), (511, 509)])
def test_png_decodes_to_exactly_the_input(shape):
    rng = np.random.default_rng(sum(shape))
    for name, tile in _tiles(rng, *shape).items():
        data = encode_png(tile)
        decoded = Image.open(io.BytesIO(data))
        decoded.load()
        assert decoded.format == "PNG"
        channels = 1 if tile.ndim == 2 else tile.shape[2]
        assert decoded.mode == {1: "L", 3: "RGB", 4: "RGBA"}[channels], name
        assert np.array_equal(np.asarray(decoded), tile), name
        tags = [tag for tag, _ in _png_chunks(data)]
        assert tags == [b"IHDR", b"IDAT", b"IEND"], name


def test_png_scanlines_use_the_sub_filter():
    rng = np.random.default_rng(3)
    tile = rng.integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    chunks = dict(_png_chunks(encode_png(tile)))
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (width, height, depth, colour, interlace) == (6, 5, 8, 2, 0)
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(5, 1 + 18)
    assert (raw[:, 0] == 1).all()
    rows = np.cumsum(raw[:, 1:].reshape(5, 6, 3).astype(np.int64), axis=1) % 256  # undo "Sub"
    assert np.array_equal(rows, tile)


@pytest.mark.parametrize("level", [0, 1, 2, 3, 6, 9])
def test_png_compress_levels(level):
    tile = np.tile(np.arange(40, dtype=np.uint8), (30, 1))
    data = encode_png(tile, compress_level=level)
    assert np.array_equal(np.asarray(_decode(data)), tile)
    with pytest.raises(ValueError, match="compress_level"):
        encode_png(tile, compress_level=10)


def test_png_rejects_what_it_cannot_encode():
    with pytest.raises(ValueError, match="empty"):
        encode_png(np.zeros((0, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match="grey"):
        encode_png(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4), dtype=np.float32))


def test_webp_and_jpeg():
    grey = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (32, 1))
    for encoded, fmt in ((encode_webp(grey), "WEBP"), (encode_jpeg(grey), "JPEG")):
        image = _decode(encoded)
        assert image.format == fmt and image.size == (64, 32)
    assert _decode(encode_webp(grey, lossless=True)).format == "WEBP"
    with pytest.raises(ValueError, match="alpha"):
        encode_jpeg(np.zeros((4, 4, 4), dtype=np.uint8))


def test_encode_image_media_types():
    grey = np.zeros((8, 10), dtype=np.uint8)
    for fmt, media_type in MEDIA_TYPES.items():
        encoded = encode_image(grey, fmt=fmt)
        assert encoded.media_type == media_type and (encoded.width, encoded.height) == (10, 8)
    assert encode_image(grey, fmt="JPG").media_type == "image/jpeg"
    with pytest.raises(ValueError, match="unsupported image format"):
        encode_image(grey, fmt="gif")
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4), dtype=np.int16))


def test_thumbnail_size_follows_physical_aspect():
    spacing = PixelSpacing(col_mm=0.8, row_mm=2.0)
    assert thumbnail_size(rows=100, cols=200, spacing=spacing, max_height=160, max_width=400) == (
        128,
        160,
    )
    assert thumbnail_size(rows=10, cols=200, spacing=spacing, max_height=160, max_width=320) == (
        320,
        40,
    )


def test_thumbnail_of_real_case(sample_dir):
    image = read_volume(sample_dir / "ts_example_ct_3mm.nii.gz", kind="image")
    labels = read_volume(sample_dir / "ts_example_ct_3mm_vertebrae.nii.gz", kind="label")
    mip = project_with_labels(image.data, labels.data, plane="coronal", mode="mip")
    spacing = pixel_spacing(image.spacing, plane="coronal")
    thumb = render_thumbnail(tile=mip.tile, labels=mip.labels, spacing=spacing, max_width=160)
    picture = np.asarray(_decode(thumb.data).convert("RGB")).astype(int)
    # 122 x 30 voxels of 3 mm: 366 x 90 mm, limited to 160 px wide -> 39 px tall
    assert (thumb.width, thumb.height) == (160, 39)
    assert thumb.media_type == "image/png"
    # The vertebra colours are blended in (opacity 0.6): pixels close to L1's colour exist.
    l1 = np.array(LABEL_BY_VALUE[20].rgb)
    assert (np.abs(picture - l1).sum(axis=-1) < 150).any()
    plain = render_thumbnail(tile=mip.tile, spacing=spacing, max_width=160, fmt="webp")
    assert plain.media_type == "image/webp"


def test_render_thumbnail_grey_is_bone_windowed():
    tile = np.full((20, 20), 1300, dtype=np.int16)  # at the top of the bone window: white
    thumb = render_thumbnail(tile=tile, spacing=PixelSpacing(1.0, 1.0), max_height=10)
    assert np.asarray(_decode(thumb.data)).min() == 255
