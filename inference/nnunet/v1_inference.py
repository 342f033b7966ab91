"""Run an imported nnU-Net v1 model in nnU-Net v2 the way v1 ran it (used by inference.predictor).

nnU-Net v2 differs from v1 in two computations that change predictions, not only in rounding:

* v1 (``GenericPreprocessor``) resamples the CT to the model spacing, then clips and normalises
  it; v2 (``DefaultPreprocessor``) normalises first. With cubic resampling the two disagree by up
  to hundreds of HU next to air/tissue edges, where the clip cuts the spline's overshoot.
* v1 averages softmax probabilities over mirrored passes, sliding-window tiles and folds and
  resamples probabilities back to the input grid; v2 averages and resamples logits.

A model folder written by ``manage.py import_nnunet_v1`` says so in ``plans.json``
(:data:`V1_INFERENCE_KEY`); :func:`run_like_v1` then switches a loaded ``nnUNetPredictor`` to
v1's order and averaging. nnU-Net v2 itself ignores the key and runs such a folder the v2 way.
"""

from __future__ import annotations

import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from inference.nnunet.v1_import import V1_INFERENCE_KEY


class ResampleThenNormalizePreprocessor(DefaultPreprocessor):
    """v2's preprocessing (transpose, crop, resample) with the normalisation moved after the
    resampling, as v1's GenericPreprocessor orders them."""

    def _normalize(
        self, data, seg, configuration_manager, foreground_intensity_properties_per_channel
    ):
        return data  # deferred to run_case_npy, after the resampling

    def run_case_npy(
        self, data, seg, properties, plans_manager, configuration_manager, dataset_json
    ):
        data, seg, properties = super().run_case_npy(
            data, seg, properties, plans_manager, configuration_manager, dataset_json
        )
        data = super()._normalize(
            data,
            seg,
            configuration_manager,
            plans_manager.foreground_intensity_properties_per_channel,
        )
        return data, seg, properties


class _V1ConfigurationManager(ConfigurationManager):
    @property
    def preprocessor_class(self):
        return ResampleThenNormalizePreprocessor


class SoftmaxOutput(torch.nn.Module):
    """A network whose output is its softmax over classes, so that nnU-Net v2's mirror, tile and
    fold averages become averages of probabilities, as in v1. Weights load into the inner network
    under their own names."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x):
        return torch.softmax(self.network(x), 1)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.network.load_state_dict(state_dict, strict=strict, assign=assign)


def is_v1_import(plans: dict) -> bool:
    return bool(plans.get(V1_INFERENCE_KEY))


def run_like_v1(predictor: nnUNetPredictor) -> None:
    """Switch an initialised predictor to v1's preprocessing order and probability averaging."""
    predictor.configuration_manager = _V1ConfigurationManager(
        predictor.configuration_manager.configuration
    )
    predictor.network = SoftmaxOutput(predictor.network)
    # Outputs are probabilities already; v2's final softmax would distort them (not the argmax).
    predictor.label_manager.inference_nonlin = _identity


def _identity(probabilities):
    return probabilities
