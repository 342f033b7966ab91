"""A small nnU-Net v1 trained-model folder made with nnU-Net v1's own classes, and v1's prediction.

Test-only: needs ``nnunet==1.7.1`` (requirements-dev.txt); the plans dict comes from
:mod:`tests.support.nnunet_v1_files`. The folder is what v1 training leaves
behind, ``3d_fullres/Task<id>_<name>/nnUNetTrainerV2__nnUNetPlansv2.1/{plans.pkl, all/...}``, for a
Generic_UNet with 8/16/32 features and a 64³ patch, built from that plans dict (no
training): ``nnUNetTrainerV2(...).initialize(training=False)`` then ``save_checkpoint``. The plans
have two stages like a real CT plan (3d_lowres, then 3d_fullres as the last stage) and 26 classes
named C1 ... L6. Weights are v1's own seeded initialisation, with the final 1x1x1 layer scaled so
the softmax is as confident as a trained network's and several labels appear.

Plans values (spacing, patch size) are in v1's (k, j, i) order after ``transpose_forward``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.support.nnunet_v1_files import (
    CHECKPOINT,
    DOWNLOAD_FILES,
    TASK,
    TRAINER_FOLDER,
    V1_PATHS,
    v1_plans,
)

# nnU-Net v1 reads its three path variables once, when it is imported; point them at an empty
# temporary folder so it neither warns nor touches a real installation.
for _name in ("nnUNet_raw_data_base", "nnUNet_preprocessed", "RESULTS_FOLDER"):
    os.environ[_name] = str(V1_PATHS / _name)

import torch  # noqa: E402
from batchgenerators.utilities.file_and_folder_operations import save_pickle  # noqa: E402
from nnunet.inference.predict import predict_cases  # noqa: E402
from nnunet.training.network_training.nnUNetTrainerV2 import nnUNetTrainerV2  # noqa: E402


def build_v1_trained_model(
    root: Path,
    *,
    seed: int = 0,
    plans: dict | None = None,
    stage: int = 1,
    logit_scale: float = 30.0,
) -> Path:
    """Write ``root/3d_fullres/<TASK>/nnUNetTrainerV2__nnUNetPlansv2.1/`` with ``plans.pkl`` and
    ``all/model_final_checkpoint.model{,.pkl}``, made by nnU-Net v1 itself; return that folder.

    ``logit_scale`` multiplies the final 1x1x1 layer's weights: v1's initialisation gives logits so
    small that every class is almost equally likely; a trained network is far more confident.
    """
    trainer_dir = Path(root) / "3d_fullres" / TASK / TRAINER_FOLDER
    trainer_dir.mkdir(parents=True, exist_ok=True)
    plans_file = trainer_dir / "plans.pkl"
    save_pickle(plans if plans is not None else v1_plans(), str(plans_file))
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        trainer = nnUNetTrainerV2(
            str(plans_file),
            "all",
            output_folder=str(trainer_dir / "all"),
            dataset_directory=str(V1_PATHS / "nnUNet_preprocessed" / TASK),
            batch_dice=False,
            stage=stage,
            unpack_data=False,
            deterministic=True,
            fp16=False,
        )
        trainer.initialize(training=False)
        with torch.no_grad():
            trainer.network.seg_outputs[-1].weight.mul_(logit_scale)
        trainer.save_checkpoint(str(trainer_dir / "all" / f"{CHECKPOINT}.model"))
    finally:
        torch.random.set_rng_state(generator_state)
    return trainer_dir


def flat_download(trainer_dir: Path, root: Path) -> Path:
    """Copy a v1 trainer folder's three files flat into ``root``, as the CTSpine1K download has
    them (``plans.pkl``, ``model_final_checkpoint.model``, ``model_final_checkpoint.model.pkl``)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(trainer_dir / "plans.pkl", root / "plans.pkl")
    for name in DOWNLOAD_FILES[1:]:
        shutil.copy(trainer_dir / "all" / name, root / name)
    return root


def predict_with_v1(
    trainer_dir: Path, images: dict[str, Path], output_dir: Path, *, mirroring: bool
) -> dict[str, Path]:
    """Run nnU-Net v1's ``predict_cases`` on the CPU over ``images`` (case name -> NIfTI file).

    Writes ``<name>.nii.gz`` (labels) and ``<name>.npz`` (softmax, float16, (C, k, j, i) on the
    original spacing, inside the crop box v1 records in ``<name>.pkl``) to ``output_dir``;
    returns case name -> labels path.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    outputs = {name: output_dir / f"{name}.nii.gz" for name in images}
    predict_cases(
        str(trainer_dir),
        [[str(path)] for path in images.values()],
        [str(path) for path in outputs.values()],
        ["all"],
        save_npz=True,
        num_threads_preprocessing=1,
        num_threads_nifti_save=1,
        do_tta=mirroring,
        mixed_precision=False,
        overwrite_existing=True,
        all_in_gpu=False,
        step_size=0.5,
        checkpoint_name=CHECKPOINT,
        disable_postprocessing=True,
    )
    return outputs
