"""The nnU-Net model the settings name (``CTSPINE_NNUNET_*``, ``CTSPINE_DEVICE``), as a checked
:class:`~inference.nnunet.config.PredictorConfig`. Reads JSON only: no torch in the web process.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from inference.nnunet.config import ModelConfigError, PredictorConfig

DOCS_MODELS = "docs/models.md"


def configured_model(mode: str | None = None) -> PredictorConfig:
    """The model the settings name, checked without loading it (no torch). Raises
    ``ModelNotConfigured`` / ``ModelConfigError`` naming the variable to fix."""
    return PredictorConfig.from_env_values(
        model_dir=settings.CTSPINE_NNUNET_MODEL_DIR,
        folds=settings.CTSPINE_NNUNET_FOLDS,
        checkpoint=settings.CTSPINE_NNUNET_CHECKPOINT,
        device=settings.CTSPINE_DEVICE,
        label_map=settings.CTSPINE_NNUNET_LABEL_MAP,
        mode=mode or settings.CTSPINE_NNUNET_MODE,
    )


@dataclass(frozen=True)
class ModelStatus:
    """Whether segmentation is available; ``message`` says why not and what to set."""

    available: bool
    message: str = ""
    variable: str | None = None


def model_status() -> ModelStatus:
    try:
        configured_model()
    except ModelConfigError as exc:
        return ModelStatus(available=False, message=model_error_message(exc), variable=exc.variable)
    return ModelStatus(available=True)


def model_error_message(exc: ModelConfigError) -> str:
    return (
        f"Segmentation is unavailable: {exc}. Set the CTSPINE_NNUNET_* variables and restart the"
        f" web server and the workers (see {DOCS_MODELS})."
    )
