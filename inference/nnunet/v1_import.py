"""nnU-Net v1 model -> nnU-Net v2 model folder: the pure part (file layout, plans, weight names).

An nnU-Net v1 3d_fullres model (``nnUNetTrainerV2``, a ``Generic_UNet``) is described by its plans
(``plans.pkl``, and the copy inside ``<checkpoint>.model.pkl`` that v1 itself predicts with) and its
weights (``<checkpoint>.model``). This module reads the pickles through
:mod:`inference.nnunet.safe_pickle`, refuses what it cannot convert faithfully, and produces the
v2 ``dataset.json``, ``plans.json`` and the map from v1 weight names to v2 ``PlainConvUNet`` names.
Loading and saving the weights (torch) is :mod:`inference.nnunet.v1_checkpoint`'s job.

Plans values (spacing in mm, patch size in voxels, kernel sizes) stay in nnU-Net's (k, j, i) order
after ``transpose_forward``, as both versions store them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from inference.nnunet.model_folder import (
    CTSPINE1K_LABELS,
    dataset_json,
    folder_name,
    plain_conv_unet,
    plans_json,
    resampling,
)
from inference.nnunet.safe_pickle import load_plans_pickle

DEFAULT_CHECKPOINT = "model_final_checkpoint"
# Generic_UNet's cap on feature maps for 3D networks (Generic_UNet.MAX_NUM_FILTERS_3D in v1).
V1_MAX_FEATURES_3D = 320
V1_INFERENCE_KEY = "nnunet_v1_inference"  # inference.nnunet.v1_inference reads it (with torch)
# v1 resamples separately along z when one spacing exceeds the others by more than this factor
# (RESAMPLING_SEPARATE_Z_ANISO_THRESHOLD); v2's default is the same, written out to keep it so.
V1_ANISOTROPY_THRESHOLD = 3
# Trainers whose network is Generic_UNet built as nnUNetTrainerV2 builds it (strided convolutions
# down, transposed convolutions up, no bias on the upsampling and output layers).
SUPPORTED_TRAINERS = ("nnUNetTrainerV2",)


class V1ImportError(ValueError):
    """The source is not an nnU-Net v1 model this importer can convert faithfully."""


@dataclass(frozen=True)
class SourceFile:
    """One file read during an import: absolute path, size in bytes and full SHA-256 (hex)."""

    role: str  # "plans", "checkpoint" or "checkpoint_info"
    path: Path
    size_bytes: int
    sha256: str

    def as_dict(self) -> dict:
        return {
            "role": self.role,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class V1Files:
    """The three files of a v1 model: ``plans.pkl``, ``<checkpoint>.model``, ``<checkpoint>.model.pkl``."""

    source: Path
    plans: Path
    checkpoint: Path
    checkpoint_info: Path
    layout: str  # "download" (the three files side by side) or "trainer_folder"


def locate_v1_files(
    source: Path, *, checkpoint: str = DEFAULT_CHECKPOINT, fold: str = "all"
) -> V1Files:
    """Find the three files in ``source``: a download root holding them side by side (the
    CTSpine1K release), or a v1 trainer folder ``<Trainer>__<Plans>/`` with ``plans.pkl`` and
    ``<fold folder>/<checkpoint>.model{,.pkl}`` (fold "all" -> ``all/``, fold 3 -> ``fold_3/``)."""
    source = Path(source).expanduser().resolve()
    if not source.is_dir():
        raise V1ImportError(f"{source} is not a folder")
    if "/" in checkpoint or checkpoint.startswith("."):
        raise V1ImportError(
            f"--checkpoint {checkpoint!r} must be a plain name such as {DEFAULT_CHECKPOINT}"
        )
    fold_folder = "all" if fold == "all" else f"fold_{fold}"
    if not (fold == "all" or fold.isdigit()):
        raise V1ImportError(f"--fold {fold!r} must be 'all' or a fold number")
    for layout, folder in (("download", source), ("trainer_folder", source / fold_folder)):
        model = folder / f"{checkpoint}.model"
        if (source / "plans.pkl").is_file() and model.is_file():
            info = folder / f"{checkpoint}.model.pkl"
            if not info.is_file():
                raise V1ImportError(f"{model} has no {info.name} beside it (v1 writes both)")
            return V1Files(source, source / "plans.pkl", model, info, layout)
    present = sorted(p.name for p in source.iterdir())[:12]
    raise V1ImportError(
        f"{source} holds neither plans.pkl with {checkpoint}.model (a download root) nor plans.pkl "
        f"with {fold_folder}/{checkpoint}.model (a v1 trainer folder); it has: "
        f"{', '.join(present) or 'nothing'}"
    )


def read_source(path: Path, *, role: str) -> tuple[SourceFile, bytes]:
    """The bytes of ``path`` and their SHA-256: what is parsed is exactly what was hashed."""
    data = Path(path).read_bytes()
    record = SourceFile(
        role=role,
        path=Path(path).resolve(),
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    return record, data


@dataclass(frozen=True)
class V1Model:
    """What the importer takes from a v1 model's pickles, checked."""

    trainer: str
    plans_identifier: str  # e.g. "nnUNetPlansv2.1", from the trainer folder name when known
    stage: int
    fold: str
    plans: dict  # the plans v1 predicts with: the copy in <checkpoint>.model.pkl, else plans.pkl
    sources: tuple[SourceFile, ...]  # the two pickles as read


def read_v1_model(files: V1Files) -> V1Model:
    """Read both pickles safely and check the model is a 3d_fullres Generic_UNet without regions.

    v1 predicts with the plans stored in ``<checkpoint>.model.pkl`` (``restore_model``), so those
    are used; ``plans.pkl`` must agree with them on every value the conversion takes.
    """
    plans_source, plans_bytes = read_source(files.plans, role="plans")
    info_source, info_bytes = read_source(files.checkpoint_info, role="checkpoint_info")
    plans_pkl = load_plans_pickle(plans_bytes, source=str(files.plans))
    info = load_plans_pickle(info_bytes, source=str(files.checkpoint_info))
    if not isinstance(plans_pkl, dict) or "plans_per_stage" not in plans_pkl:
        raise V1ImportError(f"{files.plans} is not a v1 plans file (no plans_per_stage)")
    if not isinstance(info, dict) or "init" not in info or "name" not in info:
        raise V1ImportError(f"{files.checkpoint_info} is not a v1 model info file (no init/name)")
    trainer = str(info["name"])
    plans = info.get("plans") if isinstance(info.get("plans"), dict) else plans_pkl
    init = tuple(info["init"])
    stage = init[5] if len(init) > 5 and init[5] is not None else max(plans["plans_per_stage"])
    fold = str(init[1]) if len(init) > 1 else "all"
    trainer_folder = files.source.name if files.layout == "trainer_folder" else ""
    plans_identifier = (
        trainer_folder.split("__", 1)[1] if "__" in trainer_folder else "nnUNetPlansv2.1"
    )
    model = V1Model(
        trainer=trainer,
        plans_identifier=plans_identifier,
        stage=int(stage),
        fold=fold,
        plans=plans,
        sources=(plans_source, info_source),
    )
    check_convertible(model, source=files.source)
    for key in ("num_classes", "transpose_forward", "normalization_schemes", "base_num_features"):
        if _plain(plans_pkl.get(key)) != _plain(plans.get(key)):
            raise V1ImportError(
                f"{files.plans} and {files.checkpoint_info.name} disagree on {key} "
                f"({_plain(plans_pkl.get(key))!r} vs {_plain(plans.get(key))!r}): not one model"
            )
    return model


def check_convertible(model: V1Model, *, source: Path) -> None:
    """Refuse, naming what was found, anything but a 3D full-resolution ``nnUNetTrainerV2``
    (Generic_UNet) with one CT channel and plain (not region-based) labels."""
    plans, trainer = model.plans, model.trainer
    if "cascade" in trainer.lower() or "3d_cascade_fullres" in Path(source).parts:
        raise V1ImportError(
            f"{source} is a cascade model (trainer {trainer}): its network also reads the "
            "low-resolution prediction; only 3d_fullres models can be imported"
        )
    if "region" in trainer.lower() or plans.get("regions") or plans.get("regions_class_order"):
        raise V1ImportError(
            f"{source} is region-based (trainer {trainer}); only models with one output per label "
            "can be imported"
        )
    stages = plans["plans_per_stage"]
    if model.stage not in stages:
        raise V1ImportError(
            f"{source}: the model was trained on stage {model.stage}, which the plans lack"
        )
    stage_plans = stages[model.stage]
    if len(stage_plans["patch_size"]) != 3:
        raise V1ImportError(
            f"{source} is a 2d model (patch size {list(map(int, stage_plans['patch_size']))}); only "
            "3d_fullres models can be imported"
        )
    if model.stage != max(stages):
        raise V1ImportError(
            f"{source} is a 3d_lowres model (stage {model.stage} of {len(stages)}); only 3d_fullres "
            "(the last stage) can be imported"
        )
    if trainer not in SUPPORTED_TRAINERS:
        raise V1ImportError(
            f"{source} was trained with {trainer}; only {', '.join(SUPPORTED_TRAINERS)} (a Generic_UNet "
            "with strided and transposed convolutions) can be mapped onto a PlainConvUNet"
        )
    if int(plans.get("num_modalities", 1)) != 1:
        raise V1ImportError(
            f"{source} reads {plans['num_modalities']} channels; CT models read one"
        )
    schemes = [str(s) for s in dict(plans["normalization_schemes"]).values()]
    if schemes != ["CT"]:
        raise V1ImportError(
            f"{source} normalises its input with {schemes}; only v1's 'CT' scheme (clip to the "
            "foreground percentiles, subtract the mean, divide by the sd) is imported"
        )
    if any(bool(v) for v in dict(plans.get("use_mask_for_norm") or {}).values()):
        raise V1ImportError(
            f"{source} normalises inside a nonzero mask, which v2's CT scheme does not"
        )
    if plans.get("preprocessor_name", "GenericPreprocessor") != "GenericPreprocessor":
        raise V1ImportError(
            f"{source} was preprocessed with {plans['preprocessor_name']}; only GenericPreprocessor "
            "(cubic in-plane, nearest along a separate z) matches v2's default resampling"
        )
    kernels = [list(map(int, k)) for k in stage_plans["conv_kernel_sizes"]]
    if any(size not in (1, 3) for kernel in kernels for size in kernel):
        raise V1ImportError(
            f"{source} uses convolution kernels {kernels}; v1 pads only 1 and 3 as v2 does"
        )
    # v1's decoder stage u convolves with the kernel of encoder stage -(u+1), v2's with -(u+2).
    num_pool = len(stage_plans["pool_op_kernel_sizes"])
    for u in range(num_pool):
        if kernels[-(u + 1)] != kernels[-(u + 2)]:
            raise V1ImportError(
                f"{source}: v1's decoder stage {u} uses kernel {kernels[-(u + 1)]} where v2's "
                f"PlainConvUNet uses {kernels[-(u + 2)]}; this network cannot be represented"
            )


def label_names(plans: Mapping) -> dict[str, int]:
    """dataset.json ``labels`` but background: C1 ... L6 for the 25 CTSpine1K classes, else
    ``label_<n>`` (set ``CTSPINE_NNUNET_LABEL_MAP`` for such a model)."""
    classes = [int(c) for c in plans["all_classes"]]
    if classes == list(CTSPINE1K_LABELS.values()) and int(plans["num_classes"]) == len(classes):
        return dict(CTSPINE1K_LABELS)
    if classes != list(range(1, len(classes) + 1)):
        raise V1ImportError(f"v1 classes {classes} are not consecutive from 1")
    return {f"label_{c}": c for c in classes}


def features_per_stage(plans: Mapping, *, num_stages: int) -> list[int]:
    """Generic_UNet's feature maps per resolution: base, doubled per stage, capped at 320."""
    features, current = [], int(plans["base_num_features"])
    for _ in range(num_stages):
        features.append(current)
        current = min(int(round(current * 2)), V1_MAX_FEATURES_3D)
    return features


def v2_dataset_json(model: V1Model, *, dataset_name: str) -> dict:
    return dataset_json(
        name=dataset_name,
        labels=label_names(model.plans),
        n_training=len(model.plans.get("list_of_npz_files") or []),
        description=f"Imported from the nnU-Net v1 model {model.trainer}__{model.plans_identifier} "
        f"(stage {model.stage}, fold {model.fold}) by manage.py import_nnunet_v1.",
    )


def v2_plans_json(model: V1Model, *, dataset_name: str) -> dict:
    """v2 plans.json with one ``3d_fullres`` configuration equivalent to the v1 stage."""
    plans = model.plans
    stage = plans["plans_per_stage"][model.stage]
    pools = [list(map(int, p)) for p in stage["pool_op_kernel_sizes"]]
    num_stages = len(pools) + 1
    intensity = dict(plans["dataset_properties"]["intensityproperties"])[0]
    export = plans.get("segmentation_export_params") or {}
    architecture = plain_conv_unet(
        features_per_stage=features_per_stage(plans, num_stages=num_stages),
        kernel_sizes=stage["conv_kernel_sizes"],
        strides=[[1, 1, 1], *pools],
        n_conv_per_stage=int(plans.get("conv_per_stage", 2)),
        leaky_relu_slope=0.01,
    )
    return plans_json(
        dataset_name=dataset_name,
        plans_name=model.plans_identifier,
        architecture=architecture,
        patch_size=stage["patch_size"],
        median_image_size=stage["median_patient_size_in_voxels"],
        spacing=stage["current_spacing"],
        batch_size=int(stage["batch_size"]),
        # GenericPreprocessor: data cubic (order 3), labels linear (order 1), nearest along a
        # separate z; the decision is made per case (force_separate_z None).
        anisotropy_threshold=V1_ANISOTROPY_THRESHOLD,
        probabilities_resampling=resampling(
            is_seg=False,
            order=int(export.get("interpolation_order", 1)),
            order_z=int(export.get("interpolation_order_z", 0)),
            force_separate_z=export.get("force_separate_z"),
            anisotropy_threshold=V1_ANISOTROPY_THRESHOLD,
        ),
        # v1 read every file with SimpleITK in its stored orientation.
        image_reader_writer="SimpleITKIO",
        transpose_forward=plans.get("transpose_forward") or (0, 1, 2),
        transpose_backward=plans.get("transpose_backward") or (0, 1, 2),
        experiment_planner=f"nnU-Net v1 {plans.get('preprocessor_name', 'GenericPreprocessor')} (imported)",
        # Read by inference.nnunet.v1_inference: preprocess and average as v1 did. nnU-Net v2
        # ignores the key (and then differs from v1 near air/tissue edges and tile overlaps).
        extra={V1_INFERENCE_KEY: {"normalize_after_resampling": True, "average": "probabilities"}},
        intensity_properties={
            "max": float(intensity.get("mx", 0.0)),
            "mean": float(intensity["mean"]),
            "median": float(intensity.get("median", intensity["mean"])),
            "min": float(intensity.get("mn", 0.0)),
            "percentile_00_5": float(intensity["percentile_00_5"]),
            "percentile_99_5": float(intensity["percentile_99_5"]),
            "std": float(intensity["sd"]),
        },
    )


def generic_unet_key_map(*, num_pool: int, conv_per_stage: int) -> dict[str, str]:
    """v1 ``Generic_UNet`` state-dict name -> v2 ``PlainConvUNet`` parameter name, by structure.

    Encoder stage d < num_pool: ``conv_blocks_context.d.blocks.b``; the bottleneck:
    ``conv_blocks_context.<num_pool>.0.blocks.b`` then ``.1.blocks.0``; decoder stage u:
    ``tu.u`` (transposed convolution), ``conv_blocks_localization.u.0.blocks.b`` then
    ``.1.blocks.0``, ``seg_outputs.u``. v1's ``instnorm`` is v2's ``norm``.
    """
    mapping: dict[str, str] = {}

    def conv_block(v1_prefix: str, v2_prefix: str) -> None:
        for v1_part, v2_part in (("conv", "conv"), ("instnorm", "norm")):
            for tensor in ("weight", "bias"):
                mapping[f"{v1_prefix}.{v1_part}.{tensor}"] = f"{v2_prefix}.{v2_part}.{tensor}"

    def split_stage(v1_prefix: str, v2_prefix: str) -> None:
        for b in range(conv_per_stage - 1):
            conv_block(f"{v1_prefix}.0.blocks.{b}", f"{v2_prefix}.convs.{b}")
        conv_block(f"{v1_prefix}.1.blocks.0", f"{v2_prefix}.convs.{conv_per_stage - 1}")

    for d in range(num_pool):
        for b in range(conv_per_stage):
            conv_block(f"conv_blocks_context.{d}.blocks.{b}", f"encoder.stages.{d}.0.convs.{b}")
    split_stage(f"conv_blocks_context.{num_pool}", f"encoder.stages.{num_pool}.0")
    for u in range(num_pool):
        mapping[f"tu.{u}.weight"] = f"decoder.transpconvs.{u}.weight"
        split_stage(f"conv_blocks_localization.{u}", f"decoder.stages.{u}")
        mapping[f"seg_outputs.{u}.weight"] = f"decoder.seg_layers.{u}.weight"
    return mapping


def v2_parameters_without_v1_source(*, num_pool: int) -> list[str]:
    """v2 parameters Generic_UNet lacks (it builds these layers without bias): set to zero."""
    return [
        *(f"decoder.transpconvs.{u}.bias" for u in range(num_pool)),
        *(f"decoder.seg_layers.{u}.bias" for u in range(num_pool)),
    ]


def map_state_dict_names(model: V1Model, v1_names: Sequence[str]) -> dict[str, str]:
    """The name map for ``model``'s plans, checked against the names in its checkpoint: a network
    with other names is not the Generic_UNet these plans describe, and is refused naming them."""
    stage = model.plans["plans_per_stage"][model.stage]
    mapping = generic_unet_key_map(
        num_pool=len(stage["pool_op_kernel_sizes"]),
        conv_per_stage=int(model.plans.get("conv_per_stage", 2)),
    )
    unexpected = sorted(set(v1_names) - set(mapping))
    missing = sorted(set(mapping) - set(v1_names))
    if unexpected or missing:
        raise V1ImportError(
            f"the checkpoint is not the Generic_UNet its plans describe: unexpected weights "
            f"{unexpected[:5] or 'none'}{' ...' if len(unexpected) > 5 else ''}, missing weights "
            f"{missing[:5] or 'none'}{' ...' if len(missing) > 5 else ''}"
        )
    return mapping


def v2_folder_name(model: V1Model) -> str:
    """``<Trainer>__<Plans>__3d_fullres``: v2's generic trainer builds the network from plans.json."""
    return folder_name(plans_name=model.plans_identifier)


def _plain(value):
    """Compare plans values across numpy/list/tuple/OrderedDict spellings."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
