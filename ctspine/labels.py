"""The CTSpine1K label table and window presets, loaded from ``labels.json`` (data, not code).

Label values: 0 background, 1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_TABLE = json.loads((Path(__file__).with_name("labels.json")).read_text())

MAX_LABEL = 25
L6 = 25
LUMBAR_LABELS = tuple(range(20, 26))


@dataclass(frozen=True)
class Label:
    value: int
    name: str
    region: str
    colour: str  # "#rrggbb"

    @property
    def rgb(self) -> tuple[int, int, int]:
        return tuple(int(self.colour[i : i + 2], 16) for i in (1, 3, 5))


@dataclass(frozen=True)
class WindowPreset:
    name: str
    width: float  # HU
    level: float  # HU
    title: str


LABELS: tuple[Label, ...] = tuple(Label(**entry) for entry in _TABLE["labels"])
LABEL_BY_VALUE: dict[int, Label] = {label.value: label for label in LABELS}
LABEL_BY_NAME: dict[str, Label] = {label.name: label for label in LABELS}
WINDOW_PRESETS: dict[str, WindowPreset] = {
    name: WindowPreset(name=name, **spec) for name, spec in _TABLE["windows"].items()
}


def label_name(value: int) -> str:
    """Name of a label value ("C1" ... "L6"); raises KeyError for values outside 1-25."""
    return LABEL_BY_VALUE[int(value)].name


def parse_label(token: str) -> int:
    """A label given as a name ("L1", case-insensitive) or a number ("20"); ValueError if unknown."""
    token = token.strip()
    if token.isdigit():
        value = int(token)
        if value in LABEL_BY_VALUE:
            return value
    elif token.upper() in LABEL_BY_NAME:
        return LABEL_BY_NAME[token.upper()].value
    raise ValueError(f"unknown vertebra label {token!r}: use C1-C7, T1-T12, L1-L6 or 1-25")


def colour_lut(alpha: int = 255) -> np.ndarray:
    """RGBA lookup table of shape (26, 4), uint8; row 0 (background) is fully transparent."""
    lut = np.zeros((MAX_LABEL + 1, 4), dtype=np.uint8)
    for label in LABELS:
        lut[label.value, :3] = label.rgb
        lut[label.value, 3] = alpha
    return lut


def mask_of(values) -> int:
    """Bit mask with bit ``v`` set for each label value ``v`` (used to store 'which vertebrae')."""
    mask = 0
    for value in values:
        mask |= 1 << int(value)
    return mask


def values_of(mask: int) -> list[int]:
    """Inverse of :func:`mask_of`: label values 1-25 whose bit is set, ascending."""
    return [v for v in range(1, MAX_LABEL + 1) if mask >> v & 1]
