"""Without CTSPINE_NNUNET_MODEL_DIR the application uses the committed demo model."""

from __future__ import annotations

from pathlib import Path

from ctspine_site.settings import base
from inference import demo_model


def test_the_default_model_is_the_committed_demo_model():
    # The settings name the folder by path (they load before any app); it must be the one
    # inference.demo_model describes and ships. Tests themselves pick their model explicitly.
    assert Path(base.DEMO_NNUNET_MODEL_DIR) == demo_model.MODEL_DIR
    assert (demo_model.MODEL_DIR / "fold_all" / "checkpoint_final.pth").is_file()
    assert demo_model.model_notice({"dataset_name": demo_model.DATASET_NAME})
