"""Label overlays: label tiles to RGBA with the fixed colour table, and compositing over grey.

Tiles are 2D arrays in display orientation (rows, cols). Label values are 0 (background,
transparent) to 25 (see :mod:`.labels`). Colours come from :func:`.labels.colour_lut` and are
looked up with ``np.take(lut, labels, axis=0)`` (much faster than ``lut[labels]``).

Blending over a grey tile uses one precomputed table per colour table and opacity: row
``code * 256 + grey`` holds the blended RGB, so a whole overlay is one ``np.take`` instead of
alpha-compositing the labelled pixels, with exactly :func:`composite`'s integer rounding.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import numpy as np

from ctspine.labels import MAX_LABEL, colour_lut

#: Comparison classes of a reference vs prediction overlay (stored as uint8 codes).
NONE, AGREEMENT, MISSED, EXTRA, MISLABELLED = 0, 1, 2, 3, 4
#: Colour-blind-safe (Okabe-Ito) colours for the comparison classes, RGB.
COMPARISON_COLOURS: dict[str, tuple[int, int, int]] = {
    "agreement": (0, 158, 115),  # bluish green: same vertebra in both
    "missed": (213, 94, 0),  # vermillion: in the reference only
    "extra": (86, 180, 233),  # sky blue: in the prediction only
    "mislabelled": (240, 228, 66),  # yellow: labelled in both, as different vertebrae
}
_COMPARISON_CODES = {
    "agreement": AGREEMENT,
    "missed": MISSED,
    "extra": EXTRA,
    "mislabelled": MISLABELLED,
}


def _alpha(opacity: float) -> int:
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1, not {opacity:g}")
    return int(round(opacity * 255))


def _visible_table(visible: Iterable[int] | None) -> np.ndarray | None:
    """Boolean table over label values 0-25 that are shown, or None when all are."""
    if visible is None:
        return None
    table = np.zeros(MAX_LABEL + 1, dtype=bool)
    for value in visible:
        value = int(value)
        if not 1 <= value <= MAX_LABEL:
            raise ValueError(f"label {value} is not a vertebra label (1-{MAX_LABEL})")
        table[value] = True
    return table


def boundary_mask(labels: np.ndarray) -> np.ndarray:
    """Non-zero pixels that have a 4-neighbour with a different value (a 1-pixel outline on each
    side of a boundary). The tile edge does not count as a boundary."""
    edge = np.zeros(labels.shape, dtype=bool)
    vertical = labels[1:, :] != labels[:-1, :]
    horizontal = labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge &= labels != 0
    return edge


def _shown(labels: np.ndarray, visible: Iterable[int] | None, outline: bool) -> np.ndarray:
    table = _visible_table(visible)
    if table is not None:
        labels = np.where(np.take(table, labels), labels, 0).astype(np.uint8)
    if outline:
        labels = np.where(boundary_mask(labels), labels, 0).astype(np.uint8)
    return labels


def label_rgba(
    labels: np.ndarray,
    *,
    opacity: float = 0.5,
    visible: Iterable[int] | None = None,
    outline: bool = False,
) -> np.ndarray:
    """RGBA (rows, cols, 4) uint8 overlay of a label tile in the fixed label colours.

    ``opacity`` 0-1 sets the alpha of labelled pixels; ``visible`` limits it to those label values
    (others transparent); ``outline`` draws only the 1-pixel boundary of each label. Background
    (0) is transparent.
    """
    lut = colour_lut(alpha=_alpha(opacity))
    return np.take(lut, _shown(labels, visible, outline), axis=0)


def composite(grey: np.ndarray, rgba: np.ndarray) -> np.ndarray:
    """Alpha-blend an RGBA overlay over a uint8 grey (rows, cols) or RGB tile; returns RGB uint8.

    Only pixels with non-zero alpha are blended (overlays are sparse), with integer rounding.
    """
    base = grey if grey.ndim == 3 else grey[:, :, None]
    out = np.empty(rgba.shape[:2] + (3,), dtype=np.uint8)
    out[...] = base
    alpha = rgba[:, :, 3]
    where = np.nonzero(alpha)
    if where[0].size:
        a = alpha[where].astype(np.uint16)[:, None]
        colour = rgba[where][:, :3].astype(np.uint16)
        under = out[where].astype(np.uint16)
        out[where] = ((colour * a + under * (255 - a) + 127) // 255).astype(np.uint8)
    return out


@lru_cache(maxsize=64)
def _blend_table(rgba_bytes: bytes) -> np.ndarray:
    """RGB (n * 256, 3) uint8: each RGBA colour of the table alpha-blended over each grey level
    0-255, rounded as :func:`composite` does; row ``code * 256 + grey``."""
    rgba = np.frombuffer(rgba_bytes, dtype=np.uint8).reshape(-1, 4)
    grey = np.arange(256, dtype=np.uint16)[None, :, None]
    colour = rgba[:, None, :3].astype(np.uint16)
    alpha = rgba[:, None, 3:].astype(np.uint16)
    blended = (colour * alpha + grey * (255 - alpha) + 127) // 255
    table = np.where(alpha > 0, blended, grey).astype(np.uint8).reshape(-1, 3)
    table.flags.writeable = False
    return table


def _blend(grey: np.ndarray, codes: np.ndarray, rgba_lut: np.ndarray) -> np.ndarray:
    """RGB (rows, cols, 3) uint8: ``rgba_lut[codes]`` alpha-blended over the 2D ``grey`` tile,
    one ``np.take`` in a table of all (code, grey) pairs (contiguous output; a packed uint32
    table gathers faster but its RGB view then has to be copied out)."""
    if codes.shape != grey.shape:
        raise ValueError(f"label tile {codes.shape} and grey tile {grey.shape} differ")
    table = _blend_table(np.ascontiguousarray(rgba_lut, dtype=np.uint8).tobytes())
    index = codes.astype(np.uint16)
    index <<= 8
    index |= grey
    return np.take(table, index, axis=0)


@lru_cache(maxsize=256)
def _visible_lut(alpha: int, visible: frozenset[int] | None) -> np.ndarray:
    lut = colour_lut(alpha=alpha)
    table = _visible_table(visible)
    if table is not None:
        lut[~table, 3] = 0
    lut.flags.writeable = False
    return lut


def _frozen(visible: Iterable[int] | None) -> frozenset[int] | None:
    return None if visible is None else frozenset(int(v) for v in visible)


def blend_labels(
    grey: np.ndarray,
    labels: np.ndarray,
    *,
    opacity: float = 0.5,
    visible: Iterable[int] | None = None,
    outline: bool = False,
) -> np.ndarray:
    """:func:`overlay_labels` for a 2D ``grey`` tile, but ``grey`` itself (2D, no copy) when no
    label pixel would be drawn: tiles without visible labels stay single-channel (smaller and
    faster to encode). Otherwise an RGB (rows, cols, 3) uint8 array."""
    if labels.shape != grey.shape:
        raise ValueError(f"label tile {labels.shape} and grey tile {grey.shape} differ")
    alpha = _alpha(opacity)
    visible = _frozen(visible)
    lut = _visible_lut(alpha, visible)  # checks the visible values
    if alpha == 0:
        return grey
    # One gather of a strided tile instead of one per pass below (tiles from the volume store
    # are contiguous already: then no copy).
    labels = np.ascontiguousarray(labels)
    if outline:
        labels = _shown(labels, visible, outline=True)
        lut = _visible_lut(alpha, None)
    if not labels.any():
        return grey
    if visible is not None and not outline and not np.take(lut[:, 3], labels).any():
        return grey
    return _blend(grey, labels, lut)


def overlay_labels(
    grey: np.ndarray,
    labels: np.ndarray,
    *,
    opacity: float = 0.5,
    visible: Iterable[int] | None = None,
    outline: bool = False,
) -> np.ndarray:
    """Grey tile (uint8) with the label tile composited on top; RGB uint8 (rows, cols, 3)."""
    if grey.ndim != 2:
        return composite(
            grey, label_rgba(labels, opacity=opacity, visible=visible, outline=outline)
        )
    blended = blend_labels(grey, labels, opacity=opacity, visible=visible, outline=outline)
    return blended if blended.ndim == 3 else np.repeat(grey[:, :, None], 3, axis=2)


def comparison_classes(
    reference: np.ndarray, prediction: np.ndarray, *, visible: Iterable[int] | None = None
) -> np.ndarray:
    """Per-pixel class of a reference vs prediction label tile (uint8 codes).

    :data:`AGREEMENT` same vertebra in both; :data:`MISSED` in the reference only; :data:`EXTRA` in
    the prediction only; :data:`MISLABELLED` labelled in both as different vertebrae;
    :data:`NONE` background in both. ``visible`` limits both tiles to those label values first.
    """
    if reference.shape != prediction.shape:
        raise ValueError(f"reference {reference.shape} and prediction {prediction.shape} differ")
    reference = _shown(reference, visible, outline=False)
    prediction = _shown(prediction, visible, outline=False)
    ref_on, pred_on = reference != 0, prediction != 0
    classes = np.zeros(reference.shape, dtype=np.uint8)
    classes[ref_on & ~pred_on] = MISSED
    classes[pred_on & ~ref_on] = EXTRA
    both = ref_on & pred_on
    classes[both] = np.where(reference[both] == prediction[both], AGREEMENT, MISLABELLED)
    return classes


def comparison_lut(*, opacity: float = 0.5) -> np.ndarray:
    """RGBA table (5, 4) uint8 indexed by comparison class code; NONE is transparent."""
    lut = np.zeros((5, 4), dtype=np.uint8)
    for name, code in _COMPARISON_CODES.items():
        lut[code, :3] = COMPARISON_COLOURS[name]
        lut[code, 3] = _alpha(opacity)
    return lut


def comparison_rgba(
    reference: np.ndarray,
    prediction: np.ndarray,
    *,
    opacity: float = 0.5,
    visible: Iterable[int] | None = None,
    outline: bool = False,
) -> np.ndarray:
    """RGBA (rows, cols, 4) overlay of :func:`comparison_classes` in :data:`COMPARISON_COLOURS`;
    ``outline`` draws only the 1-pixel boundaries of each class region."""
    classes = _comparison_codes(reference, prediction, visible=visible, outline=outline)
    return np.take(comparison_lut(opacity=opacity), classes, axis=0)


def _comparison_codes(
    reference: np.ndarray, prediction: np.ndarray, *, visible, outline: bool
) -> np.ndarray:
    classes = comparison_classes(reference, prediction, visible=visible)
    if outline:
        classes = np.where(boundary_mask(classes), classes, NONE).astype(np.uint8)
    return classes


def blend_comparison(
    grey: np.ndarray,
    reference: np.ndarray,
    prediction: np.ndarray,
    *,
    opacity: float = 0.5,
    visible: Iterable[int] | None = None,
    outline: bool = False,
) -> np.ndarray:
    """``composite(grey, comparison_rgba(...))`` for a 2D ``grey`` tile, or ``grey`` itself when
    no class pixel would be drawn (see :func:`blend_labels`)."""
    lut = comparison_lut(opacity=opacity)
    classes = _comparison_codes(reference, prediction, visible=visible, outline=outline)
    if lut[1, 3] == 0 or not classes.any():
        return grey
    return _blend(grey, classes, lut)
