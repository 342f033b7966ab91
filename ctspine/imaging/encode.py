"""Encoding uint8 tiles (grey (rows, cols), RGB or RGBA (rows, cols, 3|4)) as PNG, WebP or JPEG.

PNG is written here, not by Pillow: each row gets the PNG "Sub" filter (difference to the pixel
on its left, one vectorised numpy subtraction for the whole tile) and the rows are deflated by
ISA-L (``isal.isal_zlib``, level 1): many times faster than Pillow's PNG writer at compress
level 1, for files no larger (``bench/hand_written.py`` measures both). Any PNG decoder reads
them (standard IHDR/IDAT/IEND, 8-bit, no interlace).

WebP and JPEG go through Pillow: JPEG quality 85, lossy WebP quality 80 at ``method`` 1
(libwebp's effort: much faster than Pillow's default method 4, for files about a quarter larger,
still a fraction of the PNG's; figures in docs/performance.md).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

try:  # ISA-L is a declared dependency (requirements.txt); zlib keeps a broken install working.
    from isal import isal_zlib as _isal
except ImportError:  # pragma: no cover
    _isal = None

MEDIA_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
_ALIASES = {"jpg": "jpeg"}
WEBP_METHOD = 1

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG colour type by channel count: grey, RGB, RGBA.
_PNG_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}
_PNG_FILTER_SUB = 1
_crc32 = _isal.crc32 if _isal is not None else zlib.crc32


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


def _check_tile(array: np.ndarray) -> None:
    if array.dtype != np.uint8:
        raise ValueError(f"tiles must be uint8 to encode, not {array.dtype}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(
            f"expected a grey (rows, cols) or RGB(A) (rows, cols, 3|4) array, got {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"cannot encode an empty tile of shape {array.shape}")


def _to_pil(array: np.ndarray) -> Image.Image:
    _check_tile(array)
    # Pillow infers L / RGB / RGBA from a uint8 array's shape.
    return Image.fromarray(np.ascontiguousarray(array))


def _png_chunk(tag: bytes, payload: bytes) -> bytes:
    crc = _crc32(payload, _crc32(tag))
    return b"".join((struct.pack(">I", len(payload)), tag, payload, struct.pack(">I", crc)))


def png_filtered_rows(array: np.ndarray) -> np.ndarray:
    """The PNG scanlines of a uint8 (rows, cols[, channels]) array with the "Sub" filter: per row
    a filter-type byte (1) then each byte minus the byte one pixel to its left (mod 256)."""
    rows, cols = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    out = np.empty((rows, 1 + cols * channels), dtype=np.uint8)
    out[:, 0] = _PNG_FILTER_SUB
    if array.flags.c_contiguous:  # one flat subtraction per row
        pixels, body = array.reshape(rows, cols * channels), out[:, 1:]
        step = channels
    else:  # any strided view (e.g. a flipped tile), without copying it first
        pixels = array[:, :, None] if array.ndim == 2 else array
        body, step = out[:, 1:].reshape(rows, cols, channels), 1
    body[:, :step] = pixels[:, :step]
    np.subtract(pixels[:, step:], pixels[:, :-step], out=body[:, step:])
    return out


def _deflate(data: np.ndarray, level: int) -> bytes:
    if _isal is not None and 1 <= level <= 3:
        return _isal.compress(data, level)  # zlib stream, ISA-L levels 0-3
    return zlib.compress(data, level)


def encode_png(array: np.ndarray, *, compress_level: int = 1) -> bytes:
    """PNG bytes of a uint8 grey/RGB/RGBA tile; ``compress_level`` 0-9 (0: stored; 1-3: ISA-L,
    1 is the fast default; 4-9: zlib)."""
    _check_tile(array)
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be 0-9, not {compress_level}")
    rows, cols = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    header = struct.pack(">IIBBBBB", cols, rows, 8, _PNG_COLOUR_TYPES[channels], 0, 0, 0)
    idat = _deflate(png_filtered_rows(array), compress_level)
    return b"".join(
        (
            PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", idat),
            _png_chunk(b"IEND", b""),
        )
    )


def encode_webp(
    array: np.ndarray, *, quality: int = 80, lossless: bool = False, method: int = WEBP_METHOD
) -> bytes:
    """WebP bytes of a uint8 grey/RGB/RGBA tile (lossy ``quality`` 0-100 at libwebp ``method``
    0-6, or lossless at the fastest method)."""
    buffer = io.BytesIO()
    options = (
        {"lossless": True, "method": 0} if lossless else {"quality": quality, "method": method}
    )
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
