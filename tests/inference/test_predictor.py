"""The nnU-Net v2 adapter, run on a tiny real model folder built in tmp (no Django).

Reference results come from nnU-Net's own ``nnUNetPredictor`` fed the way nnU-Net reads files
(SimpleITK, (k, j, i) order), so the axis handling of the adapter is checked against nnU-Net itself.
All predictions run on the CPU so the two paths compute bit-identical results.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from inference import predictor as predictor_module
from inference.nnunet.config import (
    ENV_CHECKPOINT,
    ENV_DEVICE,
    ENV_FOLDS,
    ENV_LABEL_MAP,
    ENV_MODE,
    ENV_MODEL_DIR,
    ModelConfigError,
    ModelNotConfigured,
    PredictorConfig,
    check_model_folder,
    default_label_map,
    detect_folds,
    parse_folds,
)
from inference.predictor import VertebraPredictor, get_predictor
from tests.conftest import REPO
from tests.support.model_folder import build_tiny_model_folder, spine_phantom

SAMPLE_CT = "ts_example_ct_3mm.nii.gz"


@pytest.fixture(scope="module")
def model_dir(tiny_model) -> Path:
    """All 25 CTSpine1K labels, 64³ patch at 2 mm, fold "all" (tests/inference/conftest.py)."""
    return tiny_model


@pytest.fixture(scope="module")
def renamed_model_dir(tmp_path_factory) -> Path:
    """Labels named like TotalSegmentator's, plus one a vertebra map would not cover."""
    return build_tiny_model_folder(
        tmp_path_factory.mktemp("ts-model"),
        seed=3,
        label_names=("vertebrae_L1", "vertebrae_L2", "vertebrae_L3", "sacrum"),
        dataset_id=998,
        dataset_name="TSNames",
    )


@pytest.fixture(scope="module")
def fast_cpu(model_dir) -> VertebraPredictor:
    return VertebraPredictor(PredictorConfig(model_dir=model_dir, device="cpu", mirroring=False))


def asymmetric_ct(shape=(64, 56, 48)) -> np.ndarray:
    """Spine phantom (int16 HU, RAS+ (i, j, k)) with a bright ball off every axis' centre, so a
    flip or transposition of any axis moves bone."""
    image, _ = spine_phantom(shape=shape, seed=5)
    i, j, k = np.indices(shape)
    ball = (i - 14) ** 2 + (j - shape[1] + 14) ** 2 + (k - 12) ** 2 < 36
    image[ball] = 900
    return image


def nnunet_reference(
    model_dir: Path, image_kji: np.ndarray, spacing_kji, *, tile_step_size=0.5, mirroring=False
) -> np.ndarray:
    """Model labels from a plain nnUNetPredictor, input and output in nnU-Net's (k, j, i) order."""
    predictor = nnUNetPredictor(
        tile_step_size=tile_step_size,
        use_mirroring=mirroring,
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(str(model_dir), use_folds=("all",))
    return predictor.predict_single_npy_array(image_kji, {"spacing": list(spacing_kji)})


# --- predictions ----------------------------------------------------------------------------------


def test_synthetic_ct_gives_labels_on_the_input_grid(fast_cpu):
    image = asymmetric_ct()
    labels = fast_cpu.predict_result(image=image, spacing_mm=(2.0, 2.0, 2.0)).labels
    assert labels.shape == image.shape
    assert labels.dtype == np.uint8
    assert labels.flags.c_contiguous
    values = set(np.unique(labels).tolist())
    assert values <= set(range(26))
    assert 0 in values and len(values) >= 3  # background plus several vertebra labels
    assert np.array_equal(
        labels, fast_cpu.predict_result(image=image, spacing_mm=(2.0, 2.0, 2.0)).labels
    )


def test_foreground_lies_on_the_bone_of_the_input(fast_cpu):
    """Orientation, semantically: labelled voxels sit on bright bone, which a flipped or transposed
    output would miss (the phantom's ball is off-centre on every axis)."""
    image = asymmetric_ct()
    labels = fast_cpu.predict_result(image=image, spacing_mm=(2.0, 2.0, 2.0)).labels
    bone = image > 200
    foreground = labels > 0
    precision = (foreground & bone).sum() / foreground.sum()
    assert precision > 4 * bone.mean()
    assert foreground[bone].mean() > 0.5


def test_result_reports_device_timings_and_progress(fast_cpu):
    seen: list[float] = []
    result = fast_cpu.predict_result(
        image=asymmetric_ct(), spacing_mm=(2.0, 2.0, 2.0), progress=seen.append
    )
    assert result.device == "cpu"
    assert result.tiles == 1
    assert seen == sorted(seen) and seen[0] >= 0 and seen[-1] == 1.0 and len(seen) >= 3
    timings = result.timings
    assert min(timings.preprocess_s, timings.network_s, timings.export_s) >= 0
    assert timings.total_s == pytest.approx(
        timings.preprocess_s + timings.network_s + timings.export_s, abs=1e-6
    )


@pytest.mark.slow
def test_flipping_the_input_flips_the_output(model_dir):
    """With test-time mirroring the network is flip-equivariant (up to fp16 ties), so flipping the
    input along every axis must flip the labels the same way, and not some other way."""
    mirrored = VertebraPredictor(PredictorConfig(model_dir=model_dir, device="cpu", mirroring=True))
    image = asymmetric_ct()
    labels = mirrored.predict_result(image=image, spacing_mm=(2.0, 1.5, 2.5)).labels
    flipped = mirrored.predict_result(
        image=image[::-1, ::-1, ::-1], spacing_mm=(2.0, 1.5, 2.5)
    ).labels
    assert (flipped[::-1, ::-1, ::-1] == labels).mean() > 0.995
    assert (flipped == labels).mean() < 0.97  # the check above has teeth


def test_anisotropic_nifti_matches_nnunet_reading_the_file(fast_cpu, model_dir, tmp_path):
    """Axis and spacing order against nnU-Net's own reader, on a non-RAS file with three different
    shapes and spacings: (i, j, k) data and spacing in, the same grid out."""
    image = asymmetric_ct(shape=(60, 50, 24))
    affine = np.diag([-1.5, -2.0, 4.0, 1.0])  # LPS storage, anisotropic
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), path)
    stored = nib.load(path)
    ours = fast_cpu.predict_result(
        image=np.asarray(stored.dataobj), spacing_mm=stored.header.get_zooms()
    ).labels

    data_kji, properties = SimpleITKIO().read_images([str(path)])
    assert list(properties["spacing"]) == [4.0, 2.0, 1.5]
    reference = nnunet_reference(model_dir, data_kji, properties["spacing"])
    assert np.array_equal(ours, reference.transpose(2, 1, 0))  # identity label map here
    assert len(np.unique(ours)) >= 3


@pytest.mark.slow
def test_real_ct_matches_nnunet_reading_the_file(model_dir, samples):
    """The real 3 mm sample (RAS storage), read the project's way (RAS+ canonical) and nnU-Net's
    way (SimpleITK), gives identical labels; it is resampled to the model's 2 mm and back."""
    path = samples / SAMPLE_CT
    canonical = nib.as_closest_canonical(nib.load(path))
    assert nib.aff2axcodes(canonical.affine) == nib.aff2axcodes(nib.load(path).affine)
    image = np.asarray(canonical.dataobj)
    predictor = VertebraPredictor(
        PredictorConfig(model_dir=model_dir, device="cpu", mirroring=False, tile_step_size=1.0)
    )
    result = predictor.predict_result(image=image, spacing_mm=canonical.header.get_zooms())
    labels = result.labels
    assert labels.shape == image.shape == (122, 101, 30)
    assert labels.dtype == np.uint8
    assert set(np.unique(labels).tolist()) <= set(range(26))
    assert result.tiles > 1

    data_kji, properties = SimpleITKIO().read_images([str(path)])
    reference = nnunet_reference(model_dir, data_kji, properties["spacing"], tile_step_size=1.0)
    assert np.array_equal(labels, reference.transpose(2, 1, 0))
    bone = image > 250
    foreground = labels > 0
    assert (foreground & bone).sum() / foreground.sum() > 4 * bone.mean()


def test_input_must_be_a_3d_volume_with_positive_spacing(fast_cpu):
    with pytest.raises(ValueError, match="3D"):
        fast_cpu.predict_result(image=np.zeros((64, 64)), spacing_mm=(1.0, 1.0))
    with pytest.raises(ValueError, match="voxel sizes"):
        fast_cpu.predict_result(image=np.zeros((8, 8, 8)), spacing_mm=(1.0, 0.0, 1.0))


# --- label maps -----------------------------------------------------------------------------------


def test_explicit_label_map_applies_and_drops_unmapped_labels(renamed_model_dir):
    config = PredictorConfig.from_env_values(
        model_dir=str(renamed_model_dir),
        device="cpu",
        mode="fast",
        label_map="vertebrae_L1:L1, 2:21, vertebrae_L3:22",
    )
    assert config.label_map == {1: 20, 2: 21, 3: 22}
    predictor = VertebraPredictor(config)
    assert set(predictor.info.label_map.values()) - {0} == {20, 21, 22}
    image = asymmetric_ct()
    labels = predictor.predict_result(image=image, spacing_mm=(2.0, 2.0, 2.0)).labels

    raw = nnunet_reference(renamed_model_dir, image.transpose(2, 1, 0)[None], (2.0, 2.0, 2.0))
    raw = raw.transpose(2, 1, 0)
    assert 4 in raw  # the model does predict "sacrum" somewhere ...
    assert np.all(labels[raw == 4] == 0)  # ... which is outside the map, so background
    expected = np.array([0, 20, 21, 22, 0], dtype=np.uint8)[raw]
    assert np.array_equal(labels, expected)


def test_label_map_from_a_json_file(renamed_model_dir, tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"1": 20, "vertebrae_L2": "L2", "4": 0}))
    config = PredictorConfig.from_env_values(model_dir=str(renamed_model_dir), label_map=str(path))
    assert config.label_map == {1: 20, 2: 21, 4: 0}


def test_model_with_foreign_label_names_needs_a_map(renamed_model_dir):
    with pytest.raises(ModelConfigError, match=ENV_LABEL_MAP) as error:
        PredictorConfig.from_env_values(model_dir=str(renamed_model_dir))
    assert "vertebrae_L1" in str(error.value)


def test_default_label_map_matches_ctspine_names():
    assert default_label_map({0: "background", 1: "L1", 2: "l2", 3: "sacrum", 4: "C1"}) == {
        1: 20,
        2: 21,
        4: 1,
    }


@pytest.mark.parametrize(
    "value, message",
    [
        ("1=20", "model_label:ctspine_label"),
        ("9:20", "not a label of the model"),
        ("1:S1", "unknown vertebra label"),
        ("background:20", "background"),
        ("/nonexistent/map.json", "cannot read"),
    ],
)
def test_bad_label_map_is_named(renamed_model_dir, value, message):
    with pytest.raises(ModelConfigError, match=message) as error:
        PredictorConfig.from_env_values(model_dir=str(renamed_model_dir), label_map=value)
    assert error.value.variable == ENV_LABEL_MAP
    assert ENV_LABEL_MAP in str(error.value)


# --- configuration --------------------------------------------------------------------------------


def test_config_from_env_values(model_dir):
    config = PredictorConfig.from_env_values(
        model_dir=f"  {model_dir}  ", folds="all", checkpoint="", device="CPU", mode="fast"
    )
    assert config == PredictorConfig(
        model_dir=model_dir, folds=("all",), device="cpu", mirroring=False
    )
    assert PredictorConfig.from_env_values(model_dir=str(model_dir)).mirroring is True


def test_model_info_identifies_the_model(model_dir):
    info = check_model_folder(PredictorConfig(model_dir=model_dir))
    assert info.dataset_name == "Dataset999_Tiny"
    assert (info.trainer, info.plans, info.configuration) == (
        "nnUNetTrainer",
        "nnUNetPlans",
        "3d_fullres",
    )
    assert info.folds == ("all",)
    assert len(info.checkpoint_sha256["fold_all"]) == 16
    assert info.model_labels[20] == "L1" and info.label_map[20] == 20
    assert sorted(set(info.label_map.values()) - {0}) == list(range(1, 26))
    assert info.patch_size == (64, 64, 64) and info.spacing_mm == (2.0, 2.0, 2.0)
    assert json.loads(json.dumps(info.as_dict()))["label_map"]["25"] == 25


@pytest.mark.parametrize("value", [None, "", "   "])
def test_unset_model_dir_is_not_configured(value):
    with pytest.raises(ModelNotConfigured, match=ENV_MODEL_DIR) as error:
        PredictorConfig.from_env_values(model_dir=value)
    assert error.value.variable == ENV_MODEL_DIR


def test_missing_model_folder_is_named(tmp_path):
    with pytest.raises(ModelConfigError, match="is not a folder") as error:
        PredictorConfig.from_env_values(model_dir=str(tmp_path / "absent"))
    assert error.value.variable == ENV_MODEL_DIR


def fake_model_folder(source: Path, tmp_path: Path, *, folds=("all",)) -> Path:
    """dataset.json and plans.json of ``source`` with empty checkpoint files (layout checks only)."""
    target = tmp_path / "Dataset001_Fake" / source.name
    target.mkdir(parents=True)
    for name in ("dataset.json", "plans.json"):
        shutil.copy(source / name, target / name)
    for fold in folds:
        (target / f"fold_{fold}").mkdir()
        (target / f"fold_{fold}" / "checkpoint_final.pth").touch()
    return target


def test_dataset_folder_instead_of_model_folder_gets_a_hint(model_dir, tmp_path):
    fake = fake_model_folder(model_dir, tmp_path)
    with pytest.raises(
        ModelConfigError, match="no dataset.json.*nnUNetTrainer__nnUNetPlans__3d_fullres"
    ):
        PredictorConfig.from_env_values(model_dir=str(fake.parent))


def test_missing_plans_is_named(model_dir, tmp_path):
    fake = fake_model_folder(model_dir, tmp_path)
    (fake / "plans.json").unlink()
    with pytest.raises(ModelConfigError, match="no plans.json") as error:
        PredictorConfig.from_env_values(model_dir=str(fake))
    assert error.value.variable == ENV_MODEL_DIR


def test_missing_checkpoint_is_named(model_dir, tmp_path):
    fake = fake_model_folder(model_dir, tmp_path)
    with pytest.raises(ModelConfigError, match="no checkpoint_best.pth") as error:
        PredictorConfig.from_env_values(model_dir=str(fake), checkpoint="checkpoint_best.pth")
    assert error.value.variable == ENV_CHECKPOINT
    with pytest.raises(ModelConfigError, match=ENV_CHECKPOINT):
        PredictorConfig.from_env_values(model_dir=str(fake), checkpoint="../elsewhere.pth")


def test_missing_fold_is_named(model_dir, tmp_path):
    fake = fake_model_folder(model_dir, tmp_path, folds=(0, 1))
    with pytest.raises(ModelConfigError, match="no fold_3/") as error:
        PredictorConfig.from_env_values(model_dir=str(fake), folds="0,3")
    assert error.value.variable == ENV_FOLDS


@pytest.mark.parametrize("value", ["0,x", "1,1", "-1", "all,0", "0;1"])
def test_bad_folds_string_is_named(value):
    with pytest.raises(ModelConfigError, match=ENV_FOLDS):
        parse_folds(value)


def test_folds_are_parsed_or_detected(model_dir, tmp_path):
    assert parse_folds("all") == ("all",)
    assert parse_folds(" 0, 1,2 ") == (0, 1, 2)
    fake = fake_model_folder(model_dir, tmp_path, folds=(0, 1, 4, "all"))
    assert detect_folds(fake) == (0, 1, 4)
    assert PredictorConfig.from_env_values(model_dir=str(fake)).folds == (0, 1, 4)
    assert detect_folds(model_dir) == ("all",)


@pytest.mark.parametrize(
    "field, value, variable",
    [("device", "gpu", ENV_DEVICE), ("device", "cuda:x", ENV_DEVICE), ("mode", "slow", ENV_MODE)],
)
def test_bad_device_or_mode_is_named(model_dir, field, value, variable):
    with pytest.raises(ModelConfigError, match=variable):
        PredictorConfig.from_env_values(model_dir=str(model_dir), **{field: value})


def test_folder_not_named_like_nnunet_output_is_named(model_dir, tmp_path):
    fake = fake_model_folder(model_dir, tmp_path)
    renamed = fake.rename(fake.with_name("my-model"))
    with pytest.raises(ModelConfigError, match="<Trainer>__<Plans>__<configuration>"):
        PredictorConfig.from_env_values(model_dir=str(renamed))


def test_corrupt_dataset_json_is_named(model_dir, tmp_path):
    fake = fake_model_folder(model_dir, tmp_path)
    (fake / "dataset.json").write_text("{ not json")
    with pytest.raises(ModelConfigError, match="cannot read .*dataset.json") as error:
        PredictorConfig.from_env_values(model_dir=str(fake))
    assert error.value.variable == ENV_MODEL_DIR


def test_configuration_inheriting_from_another_is_resolved(model_dir, tmp_path):
    fake = fake_model_folder(model_dir, tmp_path)
    plans = json.loads((fake / "plans.json").read_text())
    plans["configurations"]["3d_bigpatch"] = {
        "inherits_from": "3d_fullres",
        "patch_size": [96, 96, 96],
    }
    (fake / "plans.json").write_text(json.dumps(plans))
    child = fake.rename(fake.with_name("nnUNetTrainer__nnUNetPlans__3d_bigpatch"))
    info = check_model_folder(PredictorConfig(model_dir=child))
    assert info.configuration == "3d_bigpatch"
    assert info.patch_size == (96, 96, 96) and info.spacing_mm == (2.0, 2.0, 2.0)
    missing = child.rename(child.with_name("nnUNetTrainer__nnUNetPlans__2d"))
    with pytest.raises(ModelConfigError, match="no configuration '2d'"):
        PredictorConfig.from_env_values(model_dir=str(missing))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_named(model_dir):
    config = PredictorConfig.from_env_values(model_dir=str(model_dir), device="cuda")
    with pytest.raises(ModelConfigError, match=ENV_DEVICE):
        VertebraPredictor(config)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_prediction_agrees_with_cpu(model_dir, fast_cpu):
    gpu = VertebraPredictor(PredictorConfig(model_dir=model_dir, device="cuda", mirroring=False))
    image = asymmetric_ct()
    result = gpu.predict_result(image=image, spacing_mm=(2.0, 2.0, 2.0))
    assert result.device.startswith("cuda")
    cpu_labels = fast_cpu.predict_result(image=image, spacing_mm=(2.0, 2.0, 2.0)).labels
    assert (result.labels == cpu_labels).mean() > 0.98  # autocast fp16 on the GPU


def test_settings_are_checked_without_torch(model_dir):
    """The web process validates the model settings through inference.nnunet.config, which
    must not import torch or nnU-Net (~6 s and ~470 MB)."""
    code = (
        "import sys; from inference.nnunet.config import PredictorConfig; "
        f"PredictorConfig.from_env_values(model_dir={str(model_dir)!r}); "
        "heavy = {'torch', 'nnunetv2'} & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# --- one predictor per configuration per process ---------------------------------------------------


def test_get_predictor_loads_once_per_config(model_dir, monkeypatch):
    monkeypatch.setattr(predictor_module, "_predictors", {})  # this test's own cache
    first = get_predictor(PredictorConfig(model_dir=model_dir, device="cpu", mirroring=False))
    again = get_predictor(PredictorConfig(model_dir=model_dir, device="cpu", mirroring=False))
    other = get_predictor(PredictorConfig(model_dir=model_dir, device="cpu", mirroring=True))
    assert first is again
    assert other is not first
    mapped = get_predictor(
        PredictorConfig(model_dir=model_dir, device="cpu", mirroring=False, label_map={20: 20})
    )
    assert mapped is not first and set(mapped.info.label_map.values()) - {0} == {20}
