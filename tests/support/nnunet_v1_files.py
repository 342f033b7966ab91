"""The files of an nnU-Net v1 trained model, written without nnU-Net v1 (tests and benchmarks).

:func:`v1_plans` is a v1 ``plans.pkl`` dict as v1's planner writes it; tests/support/nnunet_v1.py
hands it to v1's own trainer. :func:`write_v1_files` writes the three files of a v1 model from
the same plans with torch alone (weights of a seeded v2 PlainConvUNet, renamed to v1's
Generic_UNet names), for machines where nnU-Net v1 is not installed (bench/v1_import_cuda.py).

Plans values (spacing, patch size) are in v1's (k, j, i) order after ``transpose_forward``.
"""

from __future__ import annotations

import atexit
import pickle
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from ctspine.labels import LABELS
from inference.nnunet.model_folder import TYPICAL_VERTEBRA_CT_INTENSITY
from inference.nnunet.model_folder_torch import build_network
from inference.nnunet.v1_import import V1Model, generic_unet_key_map, v2_plans_json

TASK = "Task601_TinyV1"
TRAINER_FOLDER = "nnUNetTrainerV2__nnUNetPlansv2.1"
CHECKPOINT = "model_final_checkpoint"
DOWNLOAD_FILES = ("plans.pkl", f"{CHECKPOINT}.model", f"{CHECKPOINT}.model.pkl")
# nnU-Net v1's three path variables point here (tests/support/nnunet_v1.py sets them at import,
# before v1 is imported); the process that made the folder removes it when it exits.
V1_PATHS = Path(tempfile.mkdtemp(prefix="nnunet_v1_paths_"))
atexit.register(shutil.rmtree, V1_PATHS, ignore_errors=True)

# Foreground statistics of CT intensities (HU) as v1's planner stores them ("sd", not "std").
V1_INTENSITY_NAMES = {"max": "mx", "min": "mn", "std": "sd"}
CT_INTENSITY_PROPERTIES = {
    **{V1_INTENSITY_NAMES.get(key, key): v for key, v in TYPICAL_VERTEBRA_CT_INTENSITY.items()},
    "local_props": OrderedDict(),
}


def v1_plans(
    *,
    spacing: tuple[float, float, float] = (6.0, 6.0, 6.0),
    lowres_spacing: tuple[float, float, float] = (9.0, 9.0, 9.0),
    patch_size: tuple[int, int, int] = (64, 64, 64),
    base_num_features: int = 8,
    num_classes: int = len(LABELS),
) -> dict:
    """A v1 ``plans.pkl`` dict with two 3D stages (0 = 3d_lowres, 1 = 3d_fullres), numpy values
    where v1's planner writes numpy values."""

    def stage(current_spacing):
        return {
            "batch_size": 2,
            "num_pool_per_axis": [2, 2, 2],
            "patch_size": np.array(patch_size),
            "median_patient_size_in_voxels": np.array(patch_size),
            "current_spacing": np.array(current_spacing, dtype=np.float64),
            "original_spacing": np.array((3.0, 3.0, 3.0)),
            "do_dummy_2D_data_aug": False,
            "pool_op_kernel_sizes": [[2, 2, 2], [2, 2, 2]],
            "conv_kernel_sizes": [[3, 3, 3], [3, 3, 3], [3, 3, 3]],
        }

    all_classes = list(range(1, num_classes + 1))
    return {
        "num_stages": 2,
        "num_modalities": 1,
        "modalities": {0: "CT"},
        "normalization_schemes": OrderedDict([(0, "CT")]),
        "dataset_properties": {
            "all_classes": all_classes,
            "modalities": {0: "CT"},
            "intensityproperties": OrderedDict([(0, dict(CT_INTENSITY_PROPERTIES))]),
            "size_reductions": OrderedDict(),
            "all_spacings": [np.array((3.0, 3.0, 3.0))],
            "all_sizes": [(30, 101, 122)],
        },
        "list_of_npz_files": [],
        "original_spacings": [np.array((3.0, 3.0, 3.0))],
        "original_sizes": [(30, 101, 122)],
        "preprocessed_data_folder": str(V1_PATHS / "nnUNet_preprocessed" / TASK),
        "num_classes": num_classes,
        "all_classes": all_classes,
        "base_num_features": base_num_features,
        "use_mask_for_norm": OrderedDict([(0, False)]),
        "keep_only_largest_region": None,
        "min_region_size_per_class": None,
        "min_size_per_class": None,
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "data_identifier": "nnUNetData_plans_v2.1",
        "plans_per_stage": {0: stage(lowres_spacing), 1: stage(spacing)},
        "preprocessor_name": "GenericPreprocessor",
        "conv_per_stage": 2,
    }


def write_v1_files(
    trainer_dir: Path, *, plans: dict | None = None, seed: int = 0, logit_scale: float = 30.0
) -> Path:
    """Write ``trainer_dir/plans.pkl`` and ``trainer_dir/all/model_final_checkpoint.model{,.pkl}``
    as v1 would (stage 1 = 3d_fullres, fold all), without v1; returns ``trainer_dir``."""
    plans = plans if plans is not None else v1_plans()
    trainer_dir = Path(trainer_dir)
    (trainer_dir / "all").mkdir(parents=True, exist_ok=True)
    (trainer_dir / "plans.pkl").write_bytes(pickle.dumps(plans))
    preprocessed = str(V1_PATHS / "nnUNet_preprocessed" / TASK)
    init = (str(trainer_dir / "plans.pkl"), "all", str(trainer_dir / "all"), preprocessed, False,
            1, True, True, False)  # fmt: skip
    info = {"init": init, "name": "nnUNetTrainerV2", "class": "nnUNetTrainerV2", "plans": plans}
    (trainer_dir / "all" / f"{CHECKPOINT}.model.pkl").write_bytes(pickle.dumps(info))
    model = V1Model("nnUNetTrainerV2", "nnUNetPlansv2.1", 1, "all", plans, sources=())
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        network = build_network(
            v2_plans_json(model, dataset_name=TASK), n_classes=int(plans["num_classes"]) + 1
        )
    finally:
        torch.random.set_rng_state(generator_state)
    stage = plans["plans_per_stage"][1]
    names = generic_unet_key_map(
        num_pool=len(stage["pool_op_kernel_sizes"]), conv_per_stage=int(plans["conv_per_stage"])
    )
    state = OrderedDict(
        (v1_name, network.get_parameter(v2_name).detach().clone())
        for v1_name, v2_name in names.items()
    )
    state["seg_outputs.1.weight"] *= logit_scale
    checkpoint = {"epoch": 0, "state_dict": state, "optimizer_state_dict": None,
                  "lr_scheduler_state_dict": None, "plot_stuff": ([], [], [], []),
                  "best_stuff": (None, None, None)}  # fmt: skip
    torch.save(checkpoint, trainer_dir / "all" / f"{CHECKPOINT}.model")
    return trainer_dir
