"""What the model tests share: settings that select a model folder (the committed demo model or
a tiny one), and the held-out phantom case the demo-model tests segment."""

from __future__ import annotations

import numpy as np

from ctspine.phantom.plan import PhantomSpec
from inference import demo_model
from tests.support.model_folder import use_model


def use_demo_model(settings) -> None:
    """Point the settings at the committed demo model: CPU, fast mode, quick heartbeats."""
    use_model(settings, demo_model.MODEL_DIR)


def anisotropic_lps(specs: list[PhantomSpec]) -> PhantomSpec:
    """The smallest case stored LPS, outside the cervical section, whose slice spacing differs
    from its in-plane spacing by more than 15%."""
    return min(
        (
            s
            for s in specs
            if s.orientation == "LPS"
            and s.section != "cervical"
            and abs(s.spacing_mm[2] / s.spacing_mm[0] - 1) > 0.15
        ),
        key=lambda s: np.prod(s.shape),
    )
