"""The nnU-Net v2 model-folder description (pure dicts) and its writer."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
import torch

from inference.nnunet.model_folder import (
    TYPICAL_VERTEBRA_CT_INTENSITY,
    dataset_json,
    folder_name,
    plain_conv_unet,
    plans_json,
    resampling,
)
from inference.nnunet.model_folder_torch import write_model_folder
from tests.conftest import REPO


def small_plans(**overrides) -> dict:
    architecture = plain_conv_unet(
        features_per_stage=(4, 8),
        kernel_sizes=[[1, 3, 3], [3, 3, 3]],
        strides=[[1, 1, 1], [1, 2, 2]],
    )
    arguments = dict(
        dataset_name="Dataset123_Small",
        architecture=architecture,
        patch_size=(16, 32, 32),
        spacing=(3, 0.8, 0.8),
        intensity_properties=TYPICAL_VERTEBRA_CT_INTENSITY,
        image_reader_writer="SimpleITKIO",
    )
    return plans_json(**(arguments | overrides))


def test_plain_conv_unet_has_one_entry_per_stage():
    arch = plain_conv_unet(
        features_per_stage=(4, 8, 16),
        kernel_sizes=[[3, 3, 3]] * 3,
        strides=[[1, 1, 1], [2, 2, 2], [1, 2, 2]],
        n_conv_per_stage=3,
        leaky_relu_slope=0.01,
    )["arch_kwargs"]
    assert arch["n_stages"] == 3
    assert arch["strides"] == [[1, 1, 1], [2, 2, 2], [1, 2, 2]]
    assert arch["n_conv_per_stage"] == [3, 3, 3] and arch["n_conv_per_stage_decoder"] == [3, 3]
    assert arch["nonlin_kwargs"] == {"negative_slope": 0.01, "inplace": True}


def test_plain_conv_unet_refuses_lists_of_other_lengths():
    with pytest.raises(ValueError, match="3 stages of features but 2 kernel sizes and 3 strides"):
        plain_conv_unet(
            features_per_stage=(4, 8, 16),
            kernel_sizes=[[3, 3, 3]] * 2,
            strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        )


def test_plans_json_values_in_k_j_i_order_and_the_anisotropy_threshold():
    plans = small_plans(anisotropy_threshold=3, extra={"note": 1})
    configuration = plans["configurations"]["3d_fullres"]
    assert configuration["patch_size"] == [16, 32, 32]
    assert configuration["median_image_size_in_voxels"] == [16, 32, 32]
    assert configuration["spacing"] == [3.0, 0.8, 0.8]
    assert configuration["data_identifier"] == "nnUNetPlans_3d_fullres"
    assert configuration["resampling_fn_seg_kwargs"] == resampling(
        is_seg=True, order=1, anisotropy_threshold=3
    )
    assert (
        configuration["resampling_fn_probabilities_kwargs"]["separate_z_anisotropy_threshold"] == 3
    )
    assert list(plans)[-2:] == ["note", "foreground_intensity_properties_per_channel"]
    assert plans["foreground_intensity_properties_per_channel"]["0"]["std"] == 230.0
    without = small_plans()["configurations"]["3d_fullres"]["resampling_fn_data_kwargs"]
    assert without == {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}


def test_dataset_json_adds_background():
    dataset = dataset_json(name="D", labels={"L1": 1, "L2": 2}, n_training=4, description="x")
    assert dataset["labels"] == {"background": 0, "L1": 1, "L2": 2}
    assert dataset["numTraining"] == 4 and dataset["channel_names"] == {"0": "CT"}


def test_write_model_folder_writes_what_it_hashes(tmp_path):
    plans = small_plans()
    dataset = dataset_json(name="D", labels={"L1": 1}, n_training=1, description="x")
    folder = tmp_path / "Dataset123_Small" / folder_name()
    weights = {"w": torch.arange(6, dtype=torch.float32)}
    written = write_model_folder(
        folder,
        plans=plans,
        dataset_json=dataset,
        weights_per_fold={0: weights, "all": weights},
        mirroring_axes=[2],
    )
    assert list(written) == [
        "dataset.json",
        "plans.json",
        "fold_0/checkpoint_final.pth",
        "fold_all/checkpoint_final.pth",
    ]
    for name, digest in written.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    assert json.loads((folder / "plans.json").read_text()) == plans
    checkpoint = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=True)
    assert torch.equal(checkpoint["network_weights"]["w"], weights["w"])
    assert checkpoint["init_args"] == {"configuration": "3d_fullres", "fold": 0}
    assert checkpoint["trainer_name"] == "nnUNetTrainer"
    assert checkpoint["inference_allowed_mirroring_axes"] == (2,)
    assert sorted(p.name for p in folder.iterdir()) == [
        "dataset.json",
        "fold_0",
        "fold_all",
        "plans.json",
    ]  # no temporary file left behind


def test_the_description_imports_without_torch():
    code = (
        "import sys; import inference.nnunet.model_folder; "
        "heavy = {'torch', 'nnunetv2'} & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
