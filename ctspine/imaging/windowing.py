"""Window/level: CT values (HU) to 8-bit grey.

``grey = clip((value - (level - width / 2)) / width, 0, 1) * 255``, rounded half up: values at or
below ``level - width/2`` are black, at or above ``level + width/2`` white.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctspine.labels import WINDOW_PRESETS


@dataclass(frozen=True)
class Window:
    """A display window in HU: ``width`` > 0 and centre ``level``."""

    width: float
    level: float


def window_preset(name: str) -> Window:
    """The preset window called ``name`` ("bone", "soft_tissue", "lung"); ValueError if unknown."""
    try:
        preset = WINDOW_PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown window preset {name!r}: use one of {', '.join(WINDOW_PRESETS)}"
        ) from None
    return Window(width=float(preset.width), level=float(preset.level))


def resolve_window(
    *, preset: str | None = None, width: float | None = None, level: float | None = None
) -> Window:
    """A window from a preset name, or from explicit ``width``/``level`` in HU (both given).

    Explicit values override the preset's. ValueError for an unknown preset, a missing value or
    ``width <= 0``.
    """
    base = window_preset(preset) if preset else None
    width = width if width is not None else (base.width if base else None)
    level = level if level is not None else (base.level if base else None)
    if width is None or level is None:
        raise ValueError("give a window preset, or both width and level (HU)")
    width, level = float(width), float(level)
    if not np.isfinite(width) or width <= 0:
        raise ValueError(f"window width must be > 0 HU, not {width:g}")
    if not np.isfinite(level):
        raise ValueError("window level must be a finite number of HU")
    return Window(width=width, level=level)


def apply_window(values: np.ndarray, *, width: float, level: float) -> np.ndarray:
    """Map ``values`` (HU, any real dtype, any shape) to uint8 grey with window ``width``/``level``.

    Works in one float32 temporary, in place. NaN maps to 0.
    """
    if not width > 0:
        raise ValueError(f"window width must be > 0 HU, not {width:g}")
    lower = np.float32(level - width / 2.0)
    scale = np.float32(255.0 / width)
    work = np.empty(np.shape(values), dtype=np.float32)
    np.subtract(values, lower, out=work, casting="unsafe")
    work *= scale
    np.clip(work, 0.0, 255.0, out=work)
    work += np.float32(0.5)
    if np.asarray(values).dtype.kind == "f":  # only float input can hold NaN
        np.nan_to_num(work, copy=False, nan=0.0)
    return work.astype(np.uint8)
