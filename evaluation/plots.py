"""Geometry of the run page's figures, drawn as inline SVG (pure): the per-vertebra Dice strip
plot, the resolution figure (per-case Dice against slice spacing, by source) and the
per-vertebra Dice by anomaly group.

One column per vertebra; one dot per case (its Dice for that vertebra), spread sideways by a
fixed jitter from the case id so the plot is the same on every load; a box from the first to
the third quartile and a line at the median. All coordinates are SVG user units (pixels), y
grows downward: Dice 1 at the top of the plotting area, 0 at the bottom.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ctspine.labels import LABEL_BY_VALUE
from evaluation.table2 import source_rank

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
class Frame:
    """What every figure shares: its size, the plotting area and the Dice axis (y)."""

    width: int
    height: int
    plot_top: int
    plot_bottom: int
    left: int
    right: int  # x of the right end of the plotting area
    tick_x: int  # x where the y tick labels end
    label_y: int  # y of the labels under the plotting area
    y_ticks: tuple[tuple[float, str], ...]  # (y, text)


def _frame(plot_width: int, *, margin: int = RIGHT, extra_height: int = 0) -> dict:
    """The Frame fields of a plotting area ``plot_width`` px wide, ``margin`` px beside it."""
    return {
        "width": LEFT + plot_width + margin,
        "height": TOP + PLOT_HEIGHT + BOTTOM + extra_height,
        "plot_top": TOP,
        "plot_bottom": TOP + PLOT_HEIGHT,
        "left": LEFT,
        "right": LEFT + plot_width,
        "tick_x": LEFT - 4,
        "label_y": TOP + PLOT_HEIGHT + 18,
        "y_ticks": tuple((_y(v), f"{v:.2f}") for v in (0.0, 0.25, 0.5, 0.75, 1.0)),
    }


@dataclass(frozen=True)
class StripPlot(Frame):
    columns: tuple[StripColumn, ...] = ()


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
    return StripPlot(**_frame(COLUMN_WIDTH * max(1, len(columns))), columns=tuple(columns))


# --- the resolution figure and Dice by anomaly group ---------------------------------------------

# One colour per source sub-dataset (and one per anomaly group), readable on the dark panel.
SOURCE_COLOURS = {
    "COLONOG": "#4e9be6",
    "HNSCC-3DCT-RT": "#e6a24e",
    "MSD-T10": "#5ec27a",
    "COVID-19": "#d65f8e",
    "VerSe": "#b08de0",
}
OTHER_COLOUR = "#aaaaaa"
GROUP_COLOURS = {"lumbarization": "#e6a24e", "sacralization": "#4e9be6", "none": "#cccccc"}
SCATTER_WIDTH = 420
LEGEND_WIDTH = 130  # px right of the plotting area
GROUP_OFFSET = 8  # px between the dots of the anomaly groups in one vertebra column


@dataclass(frozen=True)
class ScatterPoint:
    x: float
    y: float
    case_id: str
    colour: str
    z_spacing_mm: float
    dice: float


@dataclass(frozen=True)
class LegendEntry:
    name: str
    colour: str
    y: float


@dataclass(frozen=True)
class ScatterPlot(Frame):
    """Per-case Mean of Vertebrae Dice (y) against the slice spacing in mm (x)."""

    points: tuple[ScatterPoint, ...] = ()
    x_ticks: tuple[tuple[float, str], ...] = ()  # (x, text)
    legend: tuple[LegendEntry, ...] = ()
    legend_x: int = 0


def resolution_plot(values: Iterable[tuple[str, float, float, str]]) -> ScatterPlot:
    """The paper's resolution claim as a figure, from ``(case id, z spacing mm, Dice 0-1,
    source)``: x from 0 to the largest spacing rounded up to a whole mm, one colour per
    source."""
    values = sorted(values)
    top = max([1.0, *(math.ceil(z) for _, z, _, _ in values)])

    def x_of(z: float) -> float:
        return round(LEFT + z / top * SCATTER_WIDTH, 1)

    sources = sorted({source for *_, source in values}, key=source_rank)
    step = max(1, math.ceil(top / 8))
    return ScatterPlot(
        **_frame(SCATTER_WIDTH, margin=LEGEND_WIDTH, extra_height=12),
        points=tuple(
            ScatterPoint(x_of(z), round(_y(d), 1), case_id, _colour(source), z, d)
            for case_id, z, d, source in values
        ),
        x_ticks=tuple((x_of(v), f"{v:g}") for v in range(0, int(top) + 1, step)),
        legend=_legend((source, _colour(source)) for source in sources),
        legend_x=LEFT + SCATTER_WIDTH + 16,
    )


def _colour(source: str) -> str:
    return SOURCE_COLOURS.get(source, OTHER_COLOUR)


@dataclass(frozen=True)
class GroupDot:
    x: float
    y: float
    group: str
    colour: str
    dice: float
    n: int


@dataclass(frozen=True)
class GroupColumn:
    label: int
    name: str
    x: float
    dots: tuple[GroupDot, ...]


@dataclass(frozen=True)
class GroupPlot(Frame):
    """Per vertebra, the mean Dice of each anomaly group (a dot each, side by side)."""

    columns: tuple[GroupColumn, ...] = ()
    legend: tuple[LegendEntry, ...] = ()
    legend_x: int = 0


def group_plot(values: Iterable[tuple[int, str, float, int]]) -> GroupPlot:
    """From ``(label 1-25, group, mean Dice 0-1, cases)``: groups in :data:`GROUP_COLOURS`
    order, vertebrae in label order, only those with a value."""
    by_label: dict[int, dict[str, tuple[float, int]]] = {}
    for label, group, dice, n in values:
        by_label.setdefault(int(label), {})[group] = (float(dice), int(n))
    groups = list(GROUP_COLOURS)
    columns = []
    for index, label in enumerate(sorted(by_label)):
        x = LEFT + COLUMN_WIDTH * (index + 0.5)
        dots = tuple(
            GroupDot(
                x=x + (groups.index(group) - 1) * GROUP_OFFSET,
                y=round(_y(dice), 1),
                group=group,
                colour=GROUP_COLOURS[group],
                dice=dice,
                n=n,
            )
            for group, (dice, n) in sorted(
                by_label[label].items(), key=lambda g: groups.index(g[0])
            )
        )
        columns.append(GroupColumn(label, LABEL_BY_VALUE[label].name, x, dots))
    plot_width = COLUMN_WIDTH * max(1, len(columns))
    return GroupPlot(
        **_frame(plot_width, margin=LEGEND_WIDTH),
        columns=tuple(columns),
        legend=_legend(GROUP_COLOURS.items()),
        legend_x=LEFT + plot_width + 16,
    )


def _legend(entries: Iterable[tuple[str, str]]) -> tuple[LegendEntry, ...]:
    return tuple(
        LegendEntry(name, colour, TOP + 8 + 16 * i) for i, (name, colour) in enumerate(entries)
    )
