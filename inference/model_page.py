"""The model page (``/models/``): which nnU-Net model the settings name, where it came from, and
on which device the workers last ran it. Reads JSON and the job table only (no torch)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_GET

from ctspine.labels import label_name
from inference.model_settings import configured_model, model_error_message
from inference.models import SegmentationJob
from inference.nnunet.config import ModelConfigError, ModelInfo, check_model_folder


@dataclass(frozen=True)
class LabelRow:
    value: int  # the model's output value
    name: str  # as dataset.json names it
    ctspine: str  # the CTSpine1K vertebra it becomes, or "" when dropped


def label_rows(info: ModelInfo) -> list[LabelRow]:
    return [
        LabelRow(
            value=value,
            name=name,
            ctspine=label_name(info.label_map[value]) if info.label_map.get(value) else "",
        )
        for value, name in sorted(info.model_labels.items())
        if value
    ]


def last_run(model_dir: str) -> SegmentationJob | None:
    """The most recently started job that ran this model folder: its ``device`` and ``worker``
    are what a worker used when it loaded the model for that job."""
    return (
        SegmentationJob.objects.filter(model__model_dir=model_dir, started_at__isnull=False)
        .exclude(device="")
        .order_by("-started_at")
        .only("pk", "device", "worker", "started_at")
        .first()
    )


@login_required
@require_GET
def model_page(request):
    context: dict = {"error": ""}
    try:
        config = configured_model()
        info = check_model_folder(config)
    except ModelConfigError as exc:
        context["error"] = model_error_message(exc)
        return render(request, "inference/model.html", context)
    context.update(
        info=info,
        labels=label_rows(info),
        mode=(settings.CTSPINE_NNUNET_MODE or "").strip().lower() or "accurate",
        mirroring=config.mirroring,
        configured_device=config.device,
        last_run=last_run(info.model_dir),
    )
    return render(request, "inference/model.html", context)
