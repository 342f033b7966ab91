"""The per-vertebra metrics table shown beside the viewer, on the job page and on an evaluated
case's page (one partial: ``inference/_metrics_table.html``). No I/O.

Rows are ``ctspine.metrics.LabelMetrics``, shown in the paper's units: Dice and NSD as
fractions (3 decimals), distances in mm (2 decimals). On the job page each vertebra row carries
the viewer query of its centroid (the prediction's, or the ground truth's for a missed
vertebra), so a click can put the crosshair there: the viewer's own URL state (``ax``, ``co``,
``sa``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

from ctspine.metrics import CONVENTIONS, LabelMetrics, MeanMetrics


@dataclass(frozen=True)
class VertebraRow:
    """A vertebra's metrics and where the viewer shows it (``voxel``: RAS indices i, j, k)."""

    metrics: LabelMetrics
    voxel: tuple[int, int, int] | None = None

    @property
    def query(self) -> str:
        if self.voxel is None:
            return ""
        i, j, k = self.voxel
        return urlencode({"ax": k, "co": j, "sa": i})


@dataclass(frozen=True)
class MetricsTable:
    """``spine``: the binary whole spine (``LabelMetrics``; ASSD and NSD may be None where
    they are not stored). ``callouts``: sentences summarising what went wrong; ``details``: the
    per-vertebra level notes behind them."""

    vertebrae: list[VertebraRow]
    mean_of_vertebrae: MeanMetrics
    spine: LabelMetrics | None
    callouts: list[str]
    details: list[str] = field(default_factory=list)
    conventions: tuple[str, ...] = CONVENTIONS
    tolerance_mm: float = 2.0


def metrics_table(metrics: dict | None, centroids: dict | None) -> MetricsTable | None:
    """The table for a job's stored comparison (``Comparison.to_dict()``; None without ground
    truth). ``centroids``: kind ("prediction", "reference") -> label -> {"voxel": [i, j, k]}."""
    if not metrics:
        return None
    centroids = centroids or {}

    def voxel_of(label: int) -> tuple[int, int, int] | None:
        for kind in ("prediction", "reference"):
            found = centroids.get(kind, {}).get(str(label))
            if found:
                return tuple(found["voxel"])
        return None

    rows = [
        VertebraRow(LabelMetrics.from_dict(row), voxel_of(row["label"]))
        for row in metrics["per_label"]
    ]
    spine = metrics.get("spine")
    return MetricsTable(
        vertebrae=rows,
        mean_of_vertebrae=MeanMetrics(**metrics["mean_of_vertebrae"]),
        spine=None if spine is None else LabelMetrics.from_dict(spine),
        callouts=list(
            metrics.get("level_summary")
            or [*metrics["counts"]["callouts"], *(e["message"] for e in metrics["level_errors"])]
        ),
        details=[e["message"] for e in metrics["level_errors"]]
        if metrics.get("level_summary")
        else [],
        tolerance_mm=metrics.get("tolerance_mm", 2.0),
    )
