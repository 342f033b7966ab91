"""Tile encoding and case thumbnails."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from viewer.imaging.display import PixelSpacing
from viewer.imaging.encode import MEDIA_TYPES, encode_image, encode_jpeg, encode_png, encode_webp
from viewer.imaging.labels import LABEL_BY_VALUE
from viewer.imaging.thumbnail import render_thumbnail, thumbnail_of_volume, thumbnail_size
from viewer.imaging.volume_io import read_pair


def _decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_png_round_trip_grey_and_rgb():
    grey = np.arange(64 * 48, dtype=np.uint32).reshape(48, 64).astype(np.uint8)
    assert np.array_equal(np.asarray(_decode(encode_png(grey))), grey)
    rgb = np.stack([grey, grey[::-1], 255 - grey], axis=-1)
    assert np.array_equal(np.asarray(_decode(encode_png(rgb))), rgb)
    flipped = grey[::-1, ::-1].T  # non-contiguous views encode as they look
    assert np.array_equal(np.asarray(_decode(encode_png(flipped))), flipped)


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
    image, labels = read_pair(
        sample_dir / "ts_example_ct_3mm.nii.gz", sample_dir / "ts_example_ct_3mm_vertebrae.nii.gz"
    )
    thumb = thumbnail_of_volume(
        image.data, spacing=image.spacing, labels=labels.data, max_width=160
    )
    picture = np.asarray(_decode(thumb.data).convert("RGB")).astype(int)
    # 122 x 30 voxels of 3 mm: 366 x 90 mm, limited to 160 px wide -> 39 px tall
    assert (thumb.width, thumb.height) == (160, 39)
    assert thumb.media_type == "image/png"
    # The vertebra colours are blended in (opacity 0.6): pixels close to L1's colour exist.
    l1 = np.array(LABEL_BY_VALUE[20].rgb)
    assert (np.abs(picture - l1).sum(axis=-1) < 150).any()
    plain = thumbnail_of_volume(image.data, spacing=image.spacing, max_width=160, fmt="webp")
    assert plain.media_type == "image/webp"


def test_render_thumbnail_grey_is_bone_windowed():
    tile = np.full((20, 20), 1300, dtype=np.int16)  # at the top of the bone window: white
    thumb = render_thumbnail(tile=tile, spacing=PixelSpacing(1.0, 1.0), max_height=10)
    assert np.asarray(_decode(thumb.data)).min() == 255
