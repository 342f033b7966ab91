"""An nnU-Net v2 model folder's description: ``plans.json``, ``dataset.json`` and checkpoint dicts.

One ``3d_fullres`` configuration of a ``PlainConvUNet``, as nnU-Net 2.8.1 reads it at inference
(NOTES.md lists the keys it needs). Every producer of a model folder builds its files here: the
demo-model trainer, the nnU-Net v1 importer and the tiny test models. Pure functions over plain
values, no torch, so settings-level code may use them; :mod:`inference.nnunet.model_folder_torch`
writes a folder to disk (with torch).

Spacing (mm), patch size (voxels), kernel sizes and strides are in nnU-Net's ``(k, j, i)`` order,
as plans.json stores them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ctspine.labels import LABELS

TRAINER = "nnUNetTrainer"
PLANS = "nnUNetPlans"
CONFIGURATION = "3d_fullres"
PLAIN_CONV_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
#: dataset.json labels of a CTSpine1K model, background excluded: C1 1 ... L6 25.
CTSPINE1K_LABELS: dict[str, int] = {label.name: label.value for label in LABELS}
# nnU-Net's CT normalisation clips to these percentiles of the foreground intensities (HU), then
# subtracts the mean and divides by the std: values typical of labelled vertebrae in real
# CTSpine1K scans, where partial volume reaches into soft tissue.
TYPICAL_VERTEBRA_CT_INTENSITY: dict[str, float] = {
    "max": 3071.0,
    "mean": 320.0,
    "median": 260.0,
    "min": -1024.0,
    "percentile_00_5": -150.0,
    "percentile_99_5": 1350.0,
    "std": 230.0,
}


def folder_name(*, plans_name: str = PLANS) -> str:
    """``<Trainer>__<Plans>__3d_fullres``: v2's generic trainer builds the network from plans.json."""
    return f"{TRAINER}__{plans_name}__{CONFIGURATION}"


def plain_conv_unet(
    *,
    features_per_stage: Sequence[int],
    kernel_sizes: Sequence[Sequence[int]],
    strides: Sequence[Sequence[int]],
    n_conv_per_stage: int = 2,
    leaky_relu_slope: float | None = None,
) -> dict:
    """plans.json ``architecture``: a 3D ``PlainConvUNet`` with instance norm and leaky ReLU.

    One entry of ``features_per_stage``, ``kernel_sizes`` and ``strides`` per resolution stage
    (the first stride is (1, 1, 1)); ``n_conv_per_stage`` convolutions in every encoder and decoder
    stage. ``leaky_relu_slope`` None leaves PyTorch's default slope (0.01) implicit.
    """
    n_stages = len(features_per_stage)
    if not len(kernel_sizes) == len(strides) == n_stages:
        raise ValueError(
            f"{n_stages} stages of features but {len(kernel_sizes)} kernel sizes and "
            f"{len(strides)} strides"
        )
    nonlin_kwargs = {"inplace": True}
    if leaky_relu_slope is not None:
        nonlin_kwargs = {"negative_slope": leaky_relu_slope, **nonlin_kwargs}
    return {
        "network_class_name": PLAIN_CONV_UNET,
        "arch_kwargs": {
            "n_stages": n_stages,
            "features_per_stage": [int(n) for n in features_per_stage],
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[int(n) for n in kernel] for kernel in kernel_sizes],
            "strides": [[int(n) for n in stride] for stride in strides],
            "n_conv_per_stage": [int(n_conv_per_stage)] * n_stages,
            "n_conv_per_stage_decoder": [int(n_conv_per_stage)] * (n_stages - 1),
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": nonlin_kwargs,
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def resampling(
    *,
    is_seg: bool,
    order: int,
    order_z: int = 0,
    force_separate_z: bool | None = None,
    anisotropy_threshold: float | None = None,
) -> dict:
    """kwargs of ``resample_data_or_seg_to_shape``: spline ``order`` in plane, ``order_z`` along
    a separate z, decided per case when ``force_separate_z`` is None (z is separate when one
    spacing exceeds the others ``anisotropy_threshold`` times; None keeps v2's default, 3)."""
    kwargs = {
        "is_seg": is_seg,
        "order": order,
        "order_z": order_z,
        "force_separate_z": force_separate_z,
    }
    if anisotropy_threshold is not None:
        kwargs["separate_z_anisotropy_threshold"] = anisotropy_threshold
    return kwargs


def plans_json(
    *,
    dataset_name: str,
    architecture: dict,
    patch_size: Sequence[int],
    spacing: Sequence[float],
    intensity_properties: Mapping[str, float],
    image_reader_writer: str,
    plans_name: str = PLANS,
    median_image_size: Sequence[int] | None = None,
    batch_size: int = 2,
    anisotropy_threshold: float | None = None,
    probabilities_resampling: dict | None = None,
    transpose_forward: Sequence[int] = (0, 1, 2),
    transpose_backward: Sequence[int] = (0, 1, 2),
    experiment_planner: str = "ExperimentPlanner",
    extra: Mapping[str, object] | None = None,
) -> dict:
    """plans.json with one ``3d_fullres`` configuration normalised with ``CTNormalization``.

    ``patch_size`` and ``median_image_size`` (default: the patch size) in voxels, ``spacing`` in
    mm, all ``(k, j, i)``. ``intensity_properties``: the foreground HU statistics CTNormalization
    reads (``mean``, ``std``, ``percentile_00_5``, ``percentile_99_5``, ...).
    ``image_reader_writer``: the nnU-Net reader the model was trained through (for example
    ``SimpleITKIO``, or ``NibabelIOWithReorient`` for a model trained on RAS+ arrays). Images are
    resampled cubic, labels linear, probabilities as ``probabilities_resampling`` says (default
    linear). ``extra``: further top-level keys, written before the intensity properties.
    """
    patch = [int(n) for n in patch_size]
    median = [int(n) for n in median_image_size] if median_image_size is not None else patch
    spacing = [float(s) for s in spacing]
    threshold = {"anisotropy_threshold": anisotropy_threshold}
    configuration = {
        "data_identifier": f"{plans_name}_{CONFIGURATION}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": int(batch_size),
        "patch_size": patch,
        "median_image_size_in_voxels": median,
        "spacing": spacing,
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": resampling(is_seg=False, order=3, **threshold),
        "resampling_fn_seg_kwargs": resampling(is_seg=True, order=1, **threshold),
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": probabilities_resampling
        or resampling(is_seg=False, order=1, **threshold),
        "architecture": architecture,
        "batch_dice": False,
    }
    return {
        "dataset_name": dataset_name,
        "plans_name": plans_name,
        "original_median_spacing_after_transp": spacing,
        "original_median_shape_after_transp": median,
        "image_reader_writer": image_reader_writer,
        "transpose_forward": [int(a) for a in transpose_forward],
        "transpose_backward": [int(a) for a in transpose_backward],
        "configurations": {CONFIGURATION: configuration},
        "experiment_planner_used": experiment_planner,
        "label_manager": "LabelManager",
        **(extra or {}),
        "foreground_intensity_properties_per_channel": {"0": dict(intensity_properties)},
    }


def dataset_json(
    *, name: str, labels: Mapping[str, int], n_training: int, description: str
) -> dict:
    """dataset.json of a one-channel CT model: ``labels`` maps foreground names to values
    1, 2, ... (background 0 is added)."""
    return {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **labels},
        "numTraining": int(n_training),
        "file_ending": ".nii.gz",
        "name": name,
        "description": description,
    }


def checkpoint_dict(weights: Mapping, *, fold: int | str, mirroring_axes: Sequence[int]) -> dict:
    """``fold_<fold>/checkpoint_final.pth`` as nnU-Net v2 reads it at inference: the network's
    state dict and the axes test-time mirroring may flip (array axes, ``(k, j, i)``)."""
    return {
        "network_weights": weights,
        "init_args": {"configuration": CONFIGURATION, "fold": fold},
        "trainer_name": TRAINER,
        "inference_allowed_mirroring_axes": tuple(mirroring_axes),
    }
