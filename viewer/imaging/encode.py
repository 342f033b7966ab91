"""Encoding uint8 tiles (grey (rows, cols), RGB or RGBA (rows, cols, 3|4)) as PNG, WebP or JPEG.

Defaults favour speed for interactive tiles: PNG at compress level 1 (~5 ms for 512 x 512 grey,
nearly the size of level 6), JPEG quality 85, lossy WebP quality 80.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

MEDIA_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
_ALIASES = {"jpg": "jpeg"}


@dataclass(frozen=True)
class EncodedImage:
    """Encoded image bytes with their media type (e.g. "image/png") and pixel size."""

    data: bytes
    media_type: str
    width: int
    height: int


def image_format(name: str) -> str:
    """Normalise a format name ("png", "webp", "jpeg"/"jpg"); ValueError if unsupported."""
    fmt = _ALIASES.get(name.lower(), name.lower())
    if fmt not in MEDIA_TYPES:
        raise ValueError(f"unsupported image format {name!r}: use one of {', '.join(MEDIA_TYPES)}")
    return fmt


def _to_pil(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        raise ValueError(f"tiles must be uint8 to encode, not {array.dtype}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(
            f"expected a grey (rows, cols) or RGB(A) (rows, cols, 3|4) array, got {array.shape}"
        )
    # Pillow infers L / RGB / RGBA from a uint8 array's shape.
    return Image.fromarray(np.ascontiguousarray(array))


def encode_png(array: np.ndarray, *, compress_level: int = 1) -> bytes:
    """PNG bytes of a uint8 grey/RGB/RGBA tile; ``compress_level`` 0-9 (1: fast, ~5 ms)."""
    buffer = io.BytesIO()
    _to_pil(array).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def encode_webp(array: np.ndarray, *, quality: int = 80, lossless: bool = False) -> bytes:
    """WebP bytes of a uint8 grey/RGB/RGBA tile (lossy ``quality`` 0-100, or lossless at the
    fastest method)."""
    buffer = io.BytesIO()
    options = {"lossless": True, "method": 0} if lossless else {"quality": quality, "method": 4}
    _to_pil(array).save(buffer, format="WEBP", **options)
    return buffer.getvalue()


def encode_jpeg(array: np.ndarray, *, quality: int = 85) -> bytes:
    """JPEG bytes of a uint8 grey or RGB tile (no alpha)."""
    image = _to_pil(array)
    if image.mode == "RGBA":
        raise ValueError("JPEG has no alpha channel: composite the overlay first or use PNG/WebP")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_image(
    array: np.ndarray, *, fmt: str = "png", quality: int | None = None
) -> EncodedImage:
    """Encode a uint8 tile as ``fmt`` ("png", "webp", "jpeg"); ``quality`` applies to lossy
    formats (default 80 WebP, 85 JPEG)."""
    fmt = image_format(fmt)
    if fmt == "png":
        data = encode_png(array)
    elif fmt == "webp":
        data = encode_webp(array, quality=80 if quality is None else quality)
    else:
        data = encode_jpeg(array, quality=85 if quality is None else quality)
    return EncodedImage(
        data=data, media_type=MEDIA_TYPES[fmt], width=array.shape[1], height=array.shape[0]
    )
