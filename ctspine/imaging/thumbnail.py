"""Case thumbnails: a small coronal MIP in the bone window with the vertebra labels overlaid,
drawn at the physical aspect ratio (pixels resampled by their spacing in mm)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .display import PixelSpacing
from .encode import EncodedImage, encode_image
from .overlay import overlay_labels
from .windowing import Window, apply_window, window_preset


def thumbnail_size(
    *, rows: int, cols: int, spacing: PixelSpacing, max_height: int, max_width: int
) -> tuple[int, int]:
    """(width, height) in pixels of a ``rows`` x ``cols`` tile drawn at its physical aspect ratio
    (``spacing`` in mm), as tall as ``max_height`` unless that makes it wider than ``max_width``."""
    width_mm, height_mm = cols * spacing.col_mm, rows * spacing.row_mm
    height = float(max_height)
    width = height * width_mm / height_mm
    if width > max_width:
        height *= max_width / width
        width = float(max_width)
    return max(1, int(round(width))), max(1, int(round(height)))


def render_thumbnail(
    *,
    tile: np.ndarray,
    spacing: PixelSpacing,
    labels: np.ndarray | None = None,
    window: Window | None = None,
    opacity: float = 0.6,
    max_height: int = 160,
    max_width: int = 320,
    fmt: str = "png",
) -> EncodedImage:
    """Encode a projection ``tile`` (HU, display-oriented) with its ``labels`` tile overlaid, in
    ``window`` (default bone), resized to the physical aspect ratio (pixel ``spacing`` in mm)."""
    window = window or window_preset("bone")
    grey = apply_window(tile, width=window.width, level=window.level)
    picture = overlay_labels(grey, labels, opacity=opacity) if labels is not None else grey
    size = thumbnail_size(
        rows=tile.shape[0],
        cols=tile.shape[1],
        spacing=spacing,
        max_height=max_height,
        max_width=max_width,
    )
    resized = Image.fromarray(picture).resize(
        size, resample=Image.Resampling.LANCZOS, reducing_gap=2.0
    )
    return encode_image(np.asarray(resized), fmt=fmt)
