"""What the job page shows beside the viewer: the per-vertebra metrics table, shaped from the
job's stored comparison (``ctspine.metrics.Comparison.to_dict()``). No I/O.

Dice is shown in percent, distances in mm. Each vertebra row carries the RAS voxel of its
centroid (the prediction's, or the ground truth's for a missed vertebra), so a click can put the
viewer's crosshair there: the ``query`` is the viewer's own URL state (``ax``, ``co``, ``sa``).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from ctspine.metrics import CONVENTIONS


@dataclass(frozen=True)
class MetricRow:
    """One row: a vertebra (``label`` 1-25), or a summary row (``label`` None)."""

    name: str
    label: int | None
    dice_pct: float | None
    hd95_mm: float | None
    assd_mm: float | None
    nsd_pct: float | None
    ref_voxels: int | None = None
    pred_voxels: int | None = None
    found: str = ""  # "both", "missed" (ground truth only) or "extra" (prediction only)
    voxel: tuple[int, int, int] | None = None

    @property
    def query(self) -> str:
        if self.voxel is None:
            return ""
        i, j, k = self.voxel
        return urlencode({"ax": k, "co": j, "sa": i})


@dataclass(frozen=True)
class MetricsTable:
    vertebrae: list[MetricRow]
    mean_of_vertebrae: MetricRow
    spine: MetricRow | None
    callouts: list[str]
    conventions: tuple[str, ...] = CONVENTIONS
    tolerance_mm: float = 2.0


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100.0 * value, 2)


def _mm(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def metrics_table(metrics: dict | None, centroids: dict | None) -> MetricsTable | None:
    """The table for a job's stored metrics (None without ground truth)."""
    if not metrics:
        return None
    centroids = centroids or {}

    def voxel_of(label: int) -> tuple[int, int, int] | None:
        for kind in ("prediction", "reference"):
            found = centroids.get(kind, {}).get(str(label))
            if found:
                return tuple(found["voxel"])
        return None

    rows = []
    for row in metrics["per_label"]:
        found = "both"
        if not row["pred_voxels"]:
            found = "missed"
        elif not row["ref_voxels"]:
            found = "extra"
        rows.append(
            MetricRow(
                name=row["name"],
                label=row["label"],
                dice_pct=_pct(row["dice"]),
                hd95_mm=_mm(row["hd95_mm"]),
                assd_mm=_mm(row["assd_mm"]),
                nsd_pct=_pct(row["nsd"]),
                ref_voxels=row["ref_voxels"],
                pred_voxels=row["pred_voxels"],
                found=found,
                voxel=voxel_of(row["label"]),
            )
        )
    mean = metrics["mean_of_vertebrae"]
    spine = metrics.get("spine")
    callouts = [*metrics["counts"]["callouts"], *(e["message"] for e in metrics["level_errors"])]
    return MetricsTable(
        vertebrae=rows,
        mean_of_vertebrae=MetricRow(
            name="Mean of Vertebrae",
            label=None,
            dice_pct=_pct(mean["dice"]),
            hd95_mm=_mm(mean["hd95_mm"]),
            assd_mm=_mm(mean["assd_mm"]),
            nsd_pct=_pct(mean["nsd"]),
        ),
        spine=None
        if spine is None
        else MetricRow(
            name="Mean of Spine",
            label=None,
            dice_pct=_pct(spine["dice"]),
            hd95_mm=_mm(spine["hd95_mm"]),
            assd_mm=_mm(spine["assd_mm"]),
            nsd_pct=_pct(spine["nsd"]),
            ref_voxels=spine["ref_voxels"],
            pred_voxels=spine["pred_voxels"],
        ),
        callouts=callouts,
        tolerance_mm=metrics.get("tolerance_mm", 2.0),
    )
