"""The demo model: an nnU-Net v2 model folder the project trains itself on synthetic phantoms
(:mod:`inference.demo_model.training`), committed under ``weights/`` so that ``make run`` can
segment without a downloaded model. No torch here: the web process reads these names.
"""

from __future__ import annotations

from pathlib import Path

from inference.nnunet.model_folder import folder_name

DATASET_NAME = "Dataset990_CTSpinePhantomDemo"
MODEL_DIR = Path(__file__).resolve().parent / "weights" / DATASET_NAME / folder_name()
NOTICE = "demo model, trained on synthetic phantoms; not for real CT"


def model_notice(model: dict | None) -> str:
    """The warning to show beside a result of ``model`` (a job's ``ModelInfo.as_dict()``), or ""."""
    return NOTICE if (model or {}).get("dataset_name") == DATASET_NAME else ""
