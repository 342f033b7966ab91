"""Geometry of the per-vertebra Dice strip plot, drawn as inline SVG by the run page (pure).

One column per vertebra; one dot per case (its Dice for that vertebra), spread sideways by a
fixed jitter from the case id so the plot is the same on every load; a box from the first to
the third quartile and a line at the median. All coordinates are SVG user units (pixels), y
grows downward: Dice 1 at the top of the plotting area, 0 at the bottom.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ctspine.labels import LABEL_BY_VALUE

COLUMN_WIDTH = 34
PLOT_HEIGHT = 200
LEFT, TOP, BOTTOM, RIGHT = 44, 10, 28, 10
JITTER = 9  # half-width of the sideways spread, px
BOX_HALF_WIDTH = 12


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    case_id: str
    dice: float


@dataclass(frozen=True)
class StripColumn:
    label: int
    name: str
    colour: str
    x: float  # centre
    box_left: float
    box_right: float
    box_width: float
    box_top: float  # y of the third quartile
    box_height: float  # down to the first quartile
    n: int
    median_y: float
    q1_y: float
    q3_y: float
    median: float
    points: tuple[Point, ...]


@dataclass(frozen=True)
class StripPlot:
    width: int
    height: int
    plot_top: int
    plot_bottom: int
    left: int
    right: int  # x of the right end of the plotting area
    tick_x: int  # x where the y tick labels end
    label_y: int  # y of the vertebra names under the columns
    columns: tuple[StripColumn, ...]
    y_ticks: tuple[tuple[float, str], ...]  # (y, text)


def _y(dice: float) -> float:
    return TOP + (1.0 - dice) * PLOT_HEIGHT


def _jitter(case_id: str) -> float:
    return (zlib.crc32(case_id.encode()) % 1000 / 999.0 * 2.0 - 1.0) * JITTER


def strip_plot(values: Iterable[tuple[int, str, float]]) -> StripPlot:
    """Build the plot from ``(label 1-25, case id, Dice 0-1)`` triples; labels in label order,
    only those with at least one case."""
    by_label: dict[int, list[tuple[str, float]]] = {}
    for label, case_id, dice in values:
        by_label.setdefault(int(label), []).append((case_id, float(dice)))
    columns = []
    for index, label in enumerate(sorted(by_label)):
        cases = sorted(by_label[label])
        x = LEFT + COLUMN_WIDTH * (index + 0.5)
        dice = np.array([d for _, d in cases])
        q1, median, q3 = (float(q) for q in np.percentile(dice, [25, 50, 75]))
        columns.append(
            StripColumn(
                label=label,
                name=LABEL_BY_VALUE[label].name,
                colour=LABEL_BY_VALUE[label].colour,
                x=x,
                box_left=x - BOX_HALF_WIDTH,
                box_right=x + BOX_HALF_WIDTH,
                box_width=2 * BOX_HALF_WIDTH,
                box_top=_y(q3),
                box_height=max(1.0, _y(q1) - _y(q3)),
                n=len(cases),
                median_y=_y(median),
                q1_y=_y(q1),
                q3_y=_y(q3),
                median=median,
                points=tuple(
                    Point(round(x + _jitter(case_id), 1), round(_y(d), 1), case_id, d)
                    for case_id, d in cases
                ),
            )
        )
    return StripPlot(
        width=LEFT + COLUMN_WIDTH * max(1, len(columns)) + RIGHT,
        height=TOP + PLOT_HEIGHT + BOTTOM,
        plot_top=TOP,
        plot_bottom=TOP + PLOT_HEIGHT,
        left=LEFT,
        right=LEFT + COLUMN_WIDTH * max(1, len(columns)),
        tick_x=LEFT - 4,
        label_y=TOP + PLOT_HEIGHT + 18,
        columns=tuple(columns),
        y_ticks=tuple((_y(v), f"{v:.2f}") for v in (0.0, 0.25, 0.5, 0.75, 1.0)),
    )
