"""Build a tiny but real nnU-Net v2 model folder, for tests and demos.

The folder is what ``nnUNetv2_train`` would leave behind (``dataset.json``, ``plans.json``,
``fold_<f>/checkpoint_final.pth``), for a 3-stage PlainConvUNet with 8/16/32 features and a 64³
patch: small enough to predict a 64³ CT in well under a second on a CPU. Its weights are seeded,
and its final layer is fitted to a synthetic spine phantom (see
:func:`inference.predictor.write_checkpoint`), so it labels bright bone rather than nothing.

Writing the checkpoint needs torch, so that part lives in :mod:`inference.predictor`; this module
only writes JSON and draws the phantom with numpy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ctspine.labels import LABELS
from inference.predictor import write_checkpoint

CTSPINE_LABEL_NAMES: tuple[str, ...] = tuple(label.name for label in LABELS)  # C1 ... L6
TRAINER = "nnUNetTrainer"
PLANS = "nnUNetPlans"
CONFIGURATION = "3d_fullres"

# nnU-Net's CT normalisation clips to these percentiles of the foreground intensities (HU), then
# subtracts the mean and divides by the std; values typical of labelled vertebrae in CTSpine1K.
CT_INTENSITY_PROPERTIES = {
    "max": 3071.0,
    "mean": 320.0,
    "median": 260.0,
    "min": -1024.0,
    "percentile_00_5": -150.0,
    "percentile_99_5": 1350.0,
    "std": 230.0,
}


def build_tiny_model_folder(
    root: Path,
    *,
    seed: int = 0,
    label_names: Sequence[str] = CTSPINE_LABEL_NAMES,
    patch_size: Sequence[int] = (64, 64, 64),
    spacing: Sequence[float] = (2.0, 2.0, 2.0),
    features_per_stage: Sequence[int] = (8, 16, 32),
    dataset_id: int = 999,
    dataset_name: str = "Tiny",
    folds: Sequence[int | str] = ("all",),
    fit_to_phantom: bool = True,
) -> Path:
    """Write ``root/Dataset<id>_<name>/nnUNetTrainer__nnUNetPlans__3d_fullres/`` and return it.

    ``label_names``: foreground label names, given values 1, 2, ... in order (background is 0).
    ``patch_size`` (voxels) and ``spacing`` (mm) are in nnU-Net's (k, j, i) order, as plans.json
    stores them; every patch edge must be divisible by 4 (two 2x downsamplings).
    ``folds``: one checkpoint per fold, each seeded with ``seed + position``.
    ``fit_to_phantom``: fit the final layer so bone in a synthetic phantom comes out labelled;
    False keeps the plain seeded initialisation (labels then vary arbitrarily).
    """
    if any(int(edge) % 4 for edge in patch_size):
        raise ValueError(f"patch edges must be divisible by 4, got {tuple(patch_size)}")
    if len(features_per_stage) != 3:
        raise ValueError("the tiny network has exactly three stages")
    model_dir = (
        Path(root)
        / f"Dataset{dataset_id:03d}_{dataset_name}"
        / f"{TRAINER}__{PLANS}__{CONFIGURATION}"
    )
    model_dir.mkdir(parents=True, exist_ok=True)
    dataset_json = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{name: value for value, name in enumerate(label_names, 1)}},
        "numTraining": 1,
        "file_ending": ".nii.gz",
        "name": f"Dataset{dataset_id:03d}_{dataset_name}",
        "description": "Tiny seeded nnU-Net v2 model for tests and demos; not a trained model.",
    }
    plans = _plans(
        dataset_name=dataset_json["name"],
        patch_size=[int(edge) for edge in patch_size],
        spacing=[float(s) for s in spacing],
        features_per_stage=[int(n) for n in features_per_stage],
    )
    _write_json(model_dir / "dataset.json", dataset_json)
    _write_json(model_dir / "plans.json", plans)

    fit = {}
    if fit_to_phantom:
        image, foreground = spine_phantom(shape=tuple(int(n) for n in patch_size[::-1]), seed=seed)
        fit = {
            "fit_image": image,
            "fit_foreground": foreground,
            "fit_spacing_mm": tuple(spacing[::-1]),
        }
    for position, fold in enumerate(folds):
        write_checkpoint(model_dir=model_dir, fold=fold, seed=seed + position, **fit)
    return model_dir


def spine_phantom(*, shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic CT of a trunk section: (image in HU as int16, bone mask), shape (I, J, K) in RAS+.

    Air around an elliptic body of soft tissue and fat; a column of vertebral bodies (cancellous
    ~250 HU inside a ~700 HU shell) along k, posterior of centre, separated by discs (~80 HU);
    Gaussian noise of 20 HU.
    """
    ni, nj, nk = shape
    i, j, k = np.meshgrid(
        np.arange(ni) - (ni - 1) / 2,
        np.arange(nj) - (nj - 1) / 2,
        np.arange(nk),
        indexing="ij",
    )
    image = np.full(shape, -1000.0, dtype=np.float32)
    body = (i / (0.42 * ni)) ** 2 + (j / (0.36 * nj)) ** 2 < 1
    image[body] = -90.0  # fat
    image[body & ((i / (0.34 * ni)) ** 2 + (j / (0.28 * nj)) ** 2 < 1)] = 40.0  # muscle, organs
    radius = 0.11 * min(ni, nj)
    column = (i / radius) ** 2 + ((j + 0.18 * nj) / radius) ** 2
    height = max(nk // 4, 4)  # vertebral body plus disc, in voxels
    within = k % height
    vertebra = (column < 1) & (within >= 1) & (within < height - 1)
    disc = (column < 1) & ~vertebra
    image[disc] = 80.0
    image[vertebra] = 700.0
    image[vertebra & (column < 0.6) & (within >= 2) & (within < height - 2)] = 250.0
    image += np.random.default_rng(seed).normal(0.0, 20.0, shape).astype(np.float32)
    return np.round(image).astype(np.int16), vertebra


def _plans(
    *, dataset_name: str, patch_size: list[int], spacing: list[float], features_per_stage: list[int]
) -> dict:
    """plans.json for one 3d_fullres configuration: what nnU-Net 2.8.1 reads at inference."""

    def resampling(*, is_seg: bool, order: int) -> dict:
        return {"is_seg": is_seg, "order": order, "order_z": 0, "force_separate_z": None}

    architecture = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": 3,
            "features_per_stage": features_per_stage,
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * 3,
            "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
            "n_conv_per_stage": [2, 2, 2],
            "n_conv_per_stage_decoder": [2, 2],
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    configuration = {
        "data_identifier": f"{PLANS}_{CONFIGURATION}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": patch_size,
        "median_image_size_in_voxels": patch_size,
        "spacing": spacing,
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": resampling(is_seg=False, order=3),
        "resampling_fn_seg_kwargs": resampling(is_seg=True, order=1),
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": resampling(is_seg=False, order=1),
        "architecture": architecture,
        "batch_dice": False,
    }
    return {
        "dataset_name": dataset_name,
        "plans_name": PLANS,
        "original_median_spacing_after_transp": spacing,
        "original_median_shape_after_transp": patch_size,
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {CONFIGURATION: configuration},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": CT_INTENSITY_PROPERTIES},
    }


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
