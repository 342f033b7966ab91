"""One evaluated case in the viewer: the image with the run's prediction, the ground truth and
the comparison overlay, beside the case's per-vertebra metrics. Tile endpoints reuse
viewer.tiles.urls with a VolumeSet whose labels are the prediction and reference the truth."""

from __future__ import annotations

import json
from pathlib import Path

from django.http import Http404
from django.shortcuts import render
from django.urls import reverse

from ctspine.metrics import LabelMetrics, MeanMetrics
from evaluation.models import OK, CaseResult
from inference.presentation import MetricsTable, VertebraRow
from viewer.permissions import dataset_page
from viewer.tiles.case import case_volumes, require_dataset_access
from viewer.tiles.urls import Unavailable
from viewer.tiles.volumes import VolumeSet

LAYER_TITLES = json.dumps(
    {"labels": "Prediction", "reference": "Ground truth", "compare": "Comparison"}
)


def evaluated_volumes(run_id: int, case_id: str, user) -> tuple[CaseResult, VolumeSet]:
    """The case's image and ground truth from the catalog, and the run's prediction; raises
    Unavailable with the status and message to answer. Visibility first: to whoever may not see
    the dataset, every case answers alike (which cases a run holds is not told)."""
    require_dataset_access(user)
    result = CaseResult.objects.filter(run_id=run_id, case_id=case_id).first()
    if result is None:
        raise Unavailable(404, f"case {case_id} is not in evaluation run {run_id}")
    if result.status != OK:
        raise Unavailable(409, f"case {case_id} was not evaluated: {result.get_status_display()}")
    case, volumes = case_volumes(case_id, user)
    prediction = Path(result.prediction_path)
    if not prediction.is_file():
        raise Unavailable(404, f"the prediction file of {case_id} is gone: {prediction.name}")
    return result, VolumeSet(
        image=volumes.image, labels=prediction, reference=volumes.labels, public=volumes.public
    )


def resolve_evaluated_case(request, *, run_id: int, case_id: str):
    """The tile endpoints' resolver for evaluated cases."""
    return evaluated_volumes(run_id, case_id, request.user)


def evaluated_centroids(result: CaseResult, volumes: VolumeSet) -> dict[int, tuple]:
    """Ground-truth vertebra centroids (RAS mm) from the catalog, for the legend's jump."""
    if not result.catalog_case_id:
        return {}
    return {
        v.label: (v.centroid_x, v.centroid_y, v.centroid_z)
        for v in result.catalog_case.vertebrae.all()
    }


@dataset_page
def evaluated_case_page(request, run_id: int, case_id: str):
    """The case in the viewer beside its metrics; a scored case that cannot be shown in the
    viewer (no prediction, or ground truth outside the catalog) gets its metrics and why."""
    result = CaseResult.objects.filter(run_id=run_id, case_id=case_id).first()
    if result is None or not (result.scored or result.status == OK):
        raise Http404(f"case {case_id} has no metrics in evaluation run {run_id}")
    try:
        evaluated_volumes(run_id, case_id, request.user)
        not_viewable = ""
    except Unavailable as exc:
        not_viewable = f"Not shown in the viewer: {exc}."
    context = {
        "result": result,
        "run": result.run,
        "table": metrics_table(result),
        "not_viewable": not_viewable,
        "api_base": tiles_base(run_id, case_id),
        "layer_titles": LAYER_TITLES,
    }
    return render(request, "evaluation/case.html", context)


def tiles_base(run_id: int, case_id: str) -> str:
    """The prefix of the case's tile endpoints, to which the viewer appends ``volume/``,
    ``slices/...``: tile_urlpatterns names the endpoints, not their prefix."""
    return reverse("evaluation:api-case-volume", args=[run_id, case_id]).removesuffix("volume/")


def metrics_table(result: CaseResult) -> MetricsTable:
    """The case's stored rows in the metrics table the job page shows too."""
    labels = [VertebraRow(row.metrics()) for row in result.labels.order_by("label")]
    with_distances = [row for row in labels if row.metrics.hd95_mm is not None]
    return MetricsTable(
        vertebrae=labels,
        mean_of_vertebrae=MeanMetrics(
            dice=result.mean_dice,
            hd95_mm=result.mean_hd95_mm,
            assd_mm=result.mean_assd_mm,
            nsd=result.mean_nsd,
            labels=len(labels),
            labels_with_distances=len(with_distances),
        ),
        # Only the spine's Dice and HD95 are stored.
        spine=LabelMetrics(
            label=0,
            name="spine",
            dice=result.spine_dice,
            hd95_mm=result.spine_hd95_mm,
            assd_mm=None,
            nsd=None,
            ref_voxels=None,
            pred_voxels=None,
        )
        if result.spine_dice is not None
        else None,
        callouts=list(result.level_summary) or list(result.messages),
        details=list(result.messages) if result.level_summary else [],
        tolerance_mm=result.run.tolerance_mm,
    )
