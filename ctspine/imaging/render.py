"""Composing a displayed tile: window the intensities, overlay labels (or a comparison of two label
maps), encode. Inputs are display-oriented tiles (rows, cols) from :mod:`.display` or
:mod:`.projection`; intensities in HU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .encode import EncodedImage, encode_image
from .overlay import blend_comparison, blend_labels
from .windowing import Window, apply_window

LAYERS = ("labels", "reference", "compare")


@dataclass(frozen=True)
class DisplayOptions:
    """How to draw a tile. ``layer``: which label map is overlaid: ``labels`` (a case's labels or
    a job's prediction), ``reference`` (ground truth beside a prediction) or ``compare``
    (agreement / missed / extra / mislabelled of labels against reference). ``visible``: label
    values to draw (None: all). ``opacity`` 0-1."""

    window: Window
    overlay: bool = True
    layer: str = "labels"
    visible: frozenset[int] | None = None
    opacity: float = 0.5
    outline: bool = False
    fmt: str = "png"
    quality: int | None = None  # lossy formats only; None: the encoder's default

    def cache_key(self) -> str:
        """A canonical string of everything that changes the pixels (for ETags)."""
        visible = ",".join(map(str, sorted(self.visible))) if self.visible is not None else "all"
        return (
            f"w{self.window.width:g}/{self.window.level:g};o{int(self.overlay)};{self.layer};"
            f"v{visible};a{self.opacity:g};l{int(self.outline)};{self.fmt};q{self.quality}"
        )


def render_tile(
    *,
    values: np.ndarray,
    labels: np.ndarray | None,
    reference: np.ndarray | None = None,
    options: DisplayOptions,
) -> EncodedImage:
    """Window ``values`` (HU) to grey, overlay the chosen label ``layer`` and encode.

    A missing label map (e.g. a case without labels), or a label tile with nothing to draw on
    this tile, leaves the grey tile, encoded single-channel.
    """
    grey = apply_window(values, width=options.window.width, level=options.window.level)
    return encode_image(
        compose_tile(grey=grey, labels=labels, reference=reference, options=options),
        fmt=options.fmt,
        quality=options.quality,
    )


def compose_tile(
    *,
    grey: np.ndarray,
    labels: np.ndarray | None,
    reference: np.ndarray | None = None,
    options: DisplayOptions,
) -> np.ndarray:
    """The picture to encode: ``grey`` (uint8, 2D) with the chosen label ``layer`` blended in
    (RGB), or ``grey`` itself when there is nothing to draw."""
    if not options.overlay:
        return grey
    if options.layer == "compare" and labels is not None and reference is not None:
        return blend_comparison(
            grey,
            reference,
            labels,
            opacity=options.opacity,
            visible=options.visible,
            outline=options.outline,
        )
    shown = reference if options.layer == "reference" else labels
    if shown is None:
        return grey
    return blend_labels(
        grey, shown, opacity=options.opacity, visible=options.visible, outline=options.outline
    )
