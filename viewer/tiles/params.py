"""Parsing the query parameters of tile requests into display options (pure, no Django).

Every error names the parameter, so the API can answer 400 with a message the user can act on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ctspine.imaging.display import check_plane
from ctspine.imaging.encode import image_format
from ctspine.imaging.projection import MODES
from ctspine.imaging.render import DisplayOptions
from ctspine.imaging.windowing import resolve_window
from ctspine.labels import WINDOW_PRESETS, parse_label

DEFAULT_WINDOW = "bone"
DISPLAY_PARAMETERS = {"window", "ww", "wl", "overlay", "labels", "opacity", "outline", "layer",
                      "quality", "v"}  # fmt: skip
PROJECTION_PARAMETERS = {"mode", "center", "slab_mm"}


class ParameterError(ValueError):
    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


@dataclass(frozen=True)
class ProjectionRequest:
    mode: str  # mip, minip or mean
    center: int | None  # slice index the slab is centred on; None: whole volume
    slab_mm: float | None  # slab thickness in mm

    def cache_key(self) -> str:
        return f"{self.mode};c{self.center};s{self.slab_mm}"


def _number(query: Mapping[str, str], name: str, cast=float):
    raw = query.get(name)
    if raw in (None, ""):
        return None
    try:
        value = cast(raw)
    except ValueError:
        raise ParameterError(name, f"{raw!r} is not a number") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ParameterError(name, f"{raw!r} is not a finite number")
    return value


def _flag(query: Mapping[str, str], name: str, default: bool) -> bool:
    raw = query.get(name)
    if raw in (None, ""):
        return default
    if raw in ("1", "true", "on", "yes"):
        return True
    if raw in ("0", "false", "off", "no"):
        return False
    raise ParameterError(name, f"{raw!r} is not 0 or 1")


def check_known(query: Mapping[str, str], allowed: set[str]) -> None:
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise ParameterError(unknown[0], "unknown parameter")


def parse_display(
    query: Mapping[str, str], *, ext: str, layers: tuple[str, ...] = ("labels",)
) -> DisplayOptions:
    """Display options from ``window`` (preset) or ``ww``/``wl`` (HU), ``overlay``, ``labels``
    (names or values), ``opacity`` (0-1), ``outline``, ``layer`` and ``quality`` (1-100)."""
    try:
        fmt = image_format(ext)
    except ValueError as exc:
        raise ParameterError("format", str(exc)) from None
    width, level = _number(query, "ww"), _number(query, "wl")
    preset = query.get("window") or None
    if preset is not None and preset not in WINDOW_PRESETS:
        raise ParameterError(
            "window", f"unknown preset {preset!r}: use {', '.join(WINDOW_PRESETS)}"
        )
    if (width is None) != (level is None):
        raise ParameterError("wl" if level is None else "ww", "give both ww and wl (HU)")
    try:
        window = resolve_window(preset=preset or DEFAULT_WINDOW, width=width, level=level)
    except ValueError as exc:
        raise ParameterError("ww", str(exc)) from None
    opacity = _number(query, "opacity")
    if opacity is not None and not 0 <= opacity <= 1:
        raise ParameterError("opacity", f"must be between 0 and 1, not {opacity:g}")
    visible = None
    if query.get("labels"):
        try:
            visible = frozenset(parse_label(t) for t in query["labels"].split(",") if t.strip())
        except ValueError as exc:
            raise ParameterError("labels", str(exc)) from None
    layer = query.get("layer") or layers[0]
    if layer not in layers:
        raise ParameterError("layer", f"{layer!r} is not available here: use {', '.join(layers)}")
    quality = _number(query, "quality", int)
    if quality is not None and not 1 <= quality <= 100:
        raise ParameterError("quality", f"must be 1-100, not {quality}")
    return DisplayOptions(
        window=window,
        overlay=_flag(query, "overlay", True),
        layer=layer,
        visible=visible,
        opacity=0.5 if opacity is None else opacity,
        outline=_flag(query, "outline", False),
        fmt=fmt,
        quality=quality if fmt != "png" else None,
    )


def parse_projection(query: Mapping[str, str]) -> ProjectionRequest:
    """``mode`` (mip, minip, mean), and optionally ``center`` (slice index) with ``slab_mm``."""
    mode = query.get("mode") or "mip"
    if mode not in MODES:
        raise ParameterError("mode", f"{mode!r} is not one of {', '.join(MODES)}")
    center = _number(query, "center", int)
    slab_mm = _number(query, "slab_mm")
    if slab_mm is not None and slab_mm <= 0:
        raise ParameterError("slab_mm", f"must be > 0 mm, not {slab_mm:g}")
    if (center is None) != (slab_mm is None):
        missing = "slab_mm" if slab_mm is None else "center"
        raise ParameterError(missing, "give both center and slab_mm for a slab, or neither")
    return ProjectionRequest(mode=mode, center=center, slab_mm=slab_mm)


def parse_plane(plane: str) -> str:
    try:
        return check_plane(plane)
    except ValueError as exc:
        raise ParameterError("plane", str(exc)) from None
