"""manage.py import_nnunet_v1: the converted model predicts what nnU-Net v1 itself predicts.

A small v1 model is made by nnU-Net v1 1.7.1's own trainer (tests/support/nnunet_v1.py), v1's
``predict_cases`` segments three real CTs, and the imported v2 folder runs through our predictor
on the same files: near-isotropic, anisotropic (every fourth slice, so v1 resamples z separately)
and stored LPS. Probabilities are compared with v1's float16 softmax export (so differences below
about 1e-3 are v1's own rounding), label maps voxel by voxel.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import shutil
from collections import OrderedDict
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from django.core.management import CommandError, call_command
from django.utils import timezone

from inference.models import SegmentationJob
from inference.nnunet.config import PredictorConfig, check_model_folder
from inference.nnunet.model_folder import TYPICAL_VERTEBRA_CT_INTENSITY
from inference.nnunet.safe_pickle import UnsafePickleError, load_plans_pickle
from inference.predictor import VertebraPredictor
from tests.support.nnunet_v1 import build_v1_trained_model, flat_download, predict_with_v1
from tests.support.nnunet_v1_files import CHECKPOINT, v1_plans, write_v1_files

logger = logging.getLogger(__name__)
MODEL_FOLDER = "nnUNetTrainer__nnUNetPlansv2.1__3d_fullres"
MIN_AGREEMENT = 0.999
# v1 exports its softmax as float16: 2**-11 near 1, and both sides round once.
MAX_PROBABILITY_DIFFERENCE = 2e-3


def run_import(*args: str | Path) -> str:
    out = io.StringIO()
    call_command("import_nnunet_v1", *map(str, args), stdout=out)
    return out.getvalue()


@pytest.fixture(scope="module")
def v1_trainer(tmp_path_factory) -> Path:
    return build_v1_trained_model(tmp_path_factory.mktemp("v1-model"), seed=0)


@pytest.fixture(scope="module")
def imported(v1_trainer, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("v2-model")
    run_import(v1_trainer, out)
    return out / MODEL_FOLDER


@pytest.fixture(scope="module")
def ct_cases(samples, tmp_path_factory) -> dict[str, Path]:
    """The three inputs, named as v1 wants them (<case>_0000.nii.gz)."""
    folder = tmp_path_factory.mktemp("v1-inputs")
    source = nib.load(samples / "ts_example_ct_3mm.nii.gz")  # 122 x 101 x 30, 3 mm, RAS
    data = np.asanyarray(source.dataobj)
    affine = source.affine.copy()
    affine[:, 2] *= 4  # 3 x 3 x 12 mm: anisotropy 4 > 3, so v1 resamples z on its own
    every_fourth = nib.Nifti1Image(np.ascontiguousarray(data[:, :, ::4]), affine)
    every_fourth.set_qform(affine, code=1)
    every_fourth.set_sform(affine, code=1)
    images = {
        "isotropic": source,
        "anisotropic": every_fourth,
        "lps": source.as_reoriented(nib.orientations.axcodes2ornt("LPS")),
    }
    paths = {}
    for name, image in images.items():
        paths[name] = folder / f"{name}_0000.nii.gz"
        nib.save(image, paths[name])
    assert nib.aff2axcodes(nib.load(paths["lps"]).affine) == ("L", "P", "S")
    return paths


@pytest.fixture(
    scope="module",
    params=[False, True],
    ids=["no-mirroring", "mirroring"],
)
def mirroring(request) -> bool:
    """Test-time mirroring: 8 network passes per tile, in v1 and here (slow on a CPU)."""
    return request.param


@pytest.fixture(scope="module")
def v1_outputs(v1_trainer, ct_cases, mirroring, tmp_path_factory) -> dict[str, Path]:
    cases = {path.name.removesuffix("_0000.nii.gz"): path for path in ct_cases.values()}
    return predict_with_v1(
        v1_trainer, cases, tmp_path_factory.mktemp("v1-predictions"), mirroring=mirroring
    )


@pytest.fixture(scope="module")
def predictor(imported, mirroring) -> VertebraPredictor:
    return VertebraPredictor(
        PredictorConfig(model_dir=imported, folds=("all",), device="cpu", mirroring=mirroring)
    )


@pytest.mark.slow
@pytest.mark.parametrize("case", ["isotropic", "anisotropic", "lps"])
def test_imported_model_predicts_what_v1_predicts(case, ct_cases, v1_outputs, predictor, mirroring):
    image = nib.load(ct_cases[case])
    # As nnU-Net (both versions) reads a file: SimpleITK's array of the stored voxels, (k, j, i).
    stored = np.asanyarray(image.dataobj).astype(np.float32)
    spacing = [float(s) for s in image.header.get_zooms()]
    labels = predictor.predict_result(image=stored, spacing_mm=spacing).labels

    v1_labels = np.asanyarray(nib.load(v1_outputs[case]).dataobj)
    agreement = float((labels == v1_labels).mean())
    # The probabilities the predictor's nnU-Net computed, in v1's crop box and (k, j, i) order.
    _, probabilities = predictor._nnunet.predict_single_npy_array(
        stored.transpose(2, 1, 0)[None], {"spacing": spacing[::-1]}, None, None, True
    )
    stem = str(v1_outputs[case]).removesuffix(".nii.gz")
    v1_probabilities = np.load(f"{stem}.npz")["softmax"].astype(np.float32)
    with open(f"{stem}.pkl", "rb") as handle:  # v1's own properties file, written by this test
        box = pickle.load(handle)["crop_bbox"]
    ours = probabilities[:, slice(*box[0]), slice(*box[1]), slice(*box[2])]
    difference = float(np.abs(ours - v1_probabilities).max())
    logger.info(
        "%s mirroring=%s: voxel agreement %.5f (%d of %d differ), max |p - p_v1| %.2g",
        case,
        mirroring,
        agreement,
        int((labels != v1_labels).sum()),
        labels.size,
        difference,
    )
    assert len(np.unique(v1_labels)) >= 5, "the test model must predict several labels"
    assert set(np.unique(labels)) == set(np.unique(v1_labels))
    assert agreement >= MIN_AGREEMENT
    assert difference <= MAX_PROBABILITY_DIFFERENCE
    # Where the labels differ, v1's two most likely classes are tied within its float16 rounding.
    differ = labels != v1_labels
    in_box = differ[slice(*box[2]), slice(*box[1]), slice(*box[0])]
    assert in_box.sum() == differ.sum(), "outside v1's crop box both say background"
    top_two = np.sort(v1_probabilities, axis=0)[-2:]
    margin = (top_two[1] - top_two[0]).transpose(2, 1, 0)  # (i, j, k) like the labels
    assert margin[in_box].max(initial=0.0) <= MAX_PROBABILITY_DIFFERENCE


# --- the command: layouts, what it writes, what it refuses ----------------------------------------


def test_download_root_import_writes_a_v2_folder_the_settings_accept(v1_trainer, tmp_path):
    download = flat_download(v1_trainer, tmp_path / "CTSpine1K")
    printed = run_import(download, tmp_path / "models")
    model_dir = tmp_path / "models" / MODEL_FOLDER

    dataset = json.loads((model_dir / "dataset.json").read_text())
    assert list(dataset["labels"]) == ["background", "C1", "C2", "C3", "C4", "C5", "C6", "C7",
                                       *(f"T{n}" for n in range(1, 13)),
                                       *(f"L{n}" for n in range(1, 7))]  # fmt: skip
    assert dataset["labels"]["L6"] == 25
    plans = json.loads((model_dir / "plans.json").read_text())
    configuration = plans["configurations"]["3d_fullres"]
    assert configuration["spacing"] == [6.0, 6.0, 6.0]  # stage 1 (3d_fullres), not 3d_lowres's 9 mm
    assert configuration["patch_size"] == [64, 64, 64]
    arch = configuration["architecture"]["arch_kwargs"]
    assert arch["features_per_stage"] == [8, 16, 32]
    assert arch["strides"] == [[1, 1, 1], [2, 2, 2], [2, 2, 2]]
    assert arch["kernel_sizes"] == [[3, 3, 3]] * 3
    assert arch["n_conv_per_stage"] == [2, 2, 2] and arch["n_conv_per_stage_decoder"] == [2, 2]
    assert plans["transpose_forward"] == [0, 1, 2] and plans["transpose_backward"] == [0, 1, 2]
    # The v1 plans hold these values as "mx", "mn", "sd" ...; all distinct, so a swap would show.
    intensity = plans["foreground_intensity_properties_per_channel"]["0"]
    assert intensity == TYPICAL_VERTEBRA_CT_INTENSITY
    assert len(set(intensity.values())) == len(intensity)
    assert configuration["resampling_fn_data_kwargs"] == {
        "is_seg": False,
        "order": 3,
        "order_z": 0,
        "force_separate_z": None,
        "separate_z_anisotropy_threshold": 3,
    }
    checkpoint = torch.load(model_dir / "fold_all" / "checkpoint_final.pth", weights_only=True)
    assert checkpoint["inference_allowed_mirroring_axes"] == (0, 1, 2)
    v1_state = torch.load(v1_trainer / "all" / f"{CHECKPOINT}.model", weights_only=False)
    assert torch.equal(
        checkpoint["network_weights"]["decoder.seg_layers.1.weight"],
        v1_state["state_dict"]["seg_outputs.1.weight"],
    )
    assert not checkpoint["network_weights"]["decoder.transpconvs.0.bias"].any()

    record = json.loads((model_dir / "import_record.json").read_text())
    assert record["source"] == str(download.resolve())
    assert record["v1_trainer"] == "nnUNetTrainerV2" and record["v1_stage"] == 1
    for entry in record["files_read"]:
        digest = hashlib.sha256(Path(entry["path"]).read_bytes()).hexdigest()
        assert entry["sha256"] == digest
        assert f"read {entry['path']} sha256 {digest}" in printed
    assert {Path(e["path"]).name for e in record["files_read"]} == {
        "plans.pkl",
        f"{CHECKPOINT}.model",
        f"{CHECKPOINT}.model.pkl",
    }

    config = PredictorConfig.from_env_values(model_dir=str(model_dir))
    info = check_model_folder(config)
    assert info.folds == ("all",) and info.spacing_mm == (6.0, 6.0, 6.0)
    assert info.import_record["files_read"] == record["files_read"]
    assert info.as_dict()["import_record"]["v1_trainer"] == "nnUNetTrainerV2"


def test_v1_files_written_without_v1_are_what_v1_loads(tmp_path):
    """The benchmark's v1 folder (bench/v1_import_cuda.py, no nnU-Net v1 there) is a real one."""
    from nnunet.training.model_restore import load_model_and_checkpoint_files

    trainer_dir = write_v1_files(tmp_path / "v1" / "nnUNetTrainerV2__nnUNetPlansv2.1", seed=2)
    trainer, params = load_model_and_checkpoint_files(
        str(trainer_dir), ["all"], mixed_precision=False, checkpoint_name=CHECKPOINT
    )
    trainer.load_checkpoint_ram(params[0], False)  # strict: every Generic_UNet weight present
    run_import(trainer_dir, tmp_path / "v2")
    converted = torch.load(
        tmp_path / "v2" / MODEL_FOLDER / "fold_all" / "checkpoint_final.pth", weights_only=True
    )["network_weights"]
    assert torch.equal(
        converted["encoder.stages.2.0.convs.1.conv.weight"],
        trainer.network.state_dict()["conv_blocks_context.2.1.blocks.0.conv.weight"].cpu(),
    )


def test_existing_output_is_kept_unless_overwrite(v1_trainer, tmp_path):
    run_import(v1_trainer, tmp_path)
    model_dir = tmp_path / MODEL_FOLDER
    (model_dir / "notes.txt").write_text("kept")
    with pytest.raises(CommandError, match="already exists and is not empty; pass --overwrite"):
        run_import(v1_trainer, tmp_path)
    assert (model_dir / "notes.txt").read_text() == "kept"
    run_import(v1_trainer, model_dir, "--overwrite")  # OUT may name the model folder itself
    assert not (model_dir / "notes.txt").exists()
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "dataset.json",
        "fold_all",
        "import_record.json",
        "plans.json",
    ]
    assert not list(tmp_path.glob(".*importing"))


def _rewrite_info(download: Path, change) -> None:
    path = download / f"{CHECKPOINT}.model.pkl"
    info = pickle.loads(path.read_bytes())
    change(info)
    path.write_bytes(pickle.dumps(info))


def _anisotropic_kernels(info):
    info["plans"]["plans_per_stage"][1]["conv_kernel_sizes"] = [[1, 3, 3], [3, 3, 3], [3, 3, 3]]


def _two_d(info):
    info["plans"]["plans_per_stage"][1]["patch_size"] = np.array([64, 64])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda i: i.update(name="nnUNetTrainerV2CascadeFullRes"), "is a cascade model"),
        (lambda i: i.update(name="nnUNetTrainerV2BraTSRegions"), "is region-based"),
        (lambda i: i["plans"].update(regions={"whole": (1, 2)}), "is region-based"),
        (_two_d, r"is a 2d model \(patch size \[64, 64\]\)"),
        (lambda i: i.update(init=(*i["init"][:5], 0, *i["init"][6:])), r"3d_lowres model \(stage 0 of 2\)"),
        (lambda i: i.update(name="nnUNetTrainer"), "was trained with nnUNetTrainer; only nnUNetTrainerV2"),
        (lambda i: i["plans"].update(normalization_schemes={0: "nonCT"}), r"normalises its input with \['nonCT'\]"),
        (lambda i: i["plans"].update(num_classes=24), "disagree on num_classes"),
        (_anisotropic_kernels, r"decoder stage 1 uses kernel \[3, 3, 3\] where v2's PlainConvUNet uses \[1, 3, 3\]"),
    ],
    ids=["cascade", "regions-trainer", "regions-plans", "2d", "lowres", "trainer", "not-ct", "mismatch", "kernels"],
)  # fmt: skip
def test_unsupported_models_are_refused_naming_what_was_found(
    change, message, v1_trainer, tmp_path
):
    download = flat_download(v1_trainer, tmp_path / "download")
    _rewrite_info(download, change)
    with pytest.raises(CommandError, match=message):
        run_import(download, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_network_other_than_generic_unet_is_refused(v1_trainer, tmp_path):
    download = flat_download(v1_trainer, tmp_path / "download")
    path = download / f"{CHECKPOINT}.model"
    checkpoint = torch.load(path, weights_only=False)
    state = checkpoint["state_dict"]
    state["encoder.stem.weight"] = state.pop("tu.0.weight")
    torch.save(checkpoint, path)
    with pytest.raises(CommandError, match=r"not the Generic_UNet its plans describe: unexpected "
                       r"weights \['encoder.stem.weight'\], missing weights \['tu.0.weight'\]"):  # fmt: skip
        run_import(download, tmp_path / "out")


def test_missing_files_are_named(v1_trainer, tmp_path):
    download = flat_download(v1_trainer, tmp_path / "download")
    (download / f"{CHECKPOINT}.model.pkl").unlink()
    with pytest.raises(CommandError, match=r"has no model_final_checkpoint.model.pkl beside it"):
        run_import(download, tmp_path / "out")
    with pytest.raises(CommandError, match="holds neither plans.pkl with other.model"):
        run_import(download, tmp_path / "out", "--checkpoint", "other")
    with pytest.raises(CommandError, match=r"with fold_3/model_final_checkpoint.model"):
        run_import(v1_trainer, tmp_path / "out", "--fold", "3")


# --- safety: pickles are data, checkpoints are weights --------------------------------------------


class _Exploit:
    """Unpickling this would create ``marker`` through os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_plans_pickle_that_calls_code_is_refused_without_running_it(v1_trainer, tmp_path):
    download = flat_download(v1_trainer, tmp_path / "download")
    marker = tmp_path / "executed"
    plans = v1_plans()
    plans["preprocessed_data_folder"] = _Exploit(marker)
    (download / "plans.pkl").write_bytes(pickle.dumps(plans))
    with pytest.raises(
        CommandError, match=r"plans.pkl references posix.system, which is not plain data"
    ):
        run_import(download, tmp_path / "out")
    assert not marker.exists()


def test_a_checkpoint_holding_objects_is_refused(v1_trainer, tmp_path):
    download = flat_download(v1_trainer, tmp_path / "download")
    path = download / f"{CHECKPOINT}.model"
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["best_stuff"] = (logging.getLogger("x"),)
    torch.save(checkpoint, path)
    with pytest.raises(
        CommandError, match=r"holds more than weights and plain data, so it was not loaded"
    ):
        run_import(download, tmp_path / "out")


def test_a_checkpoint_with_numpy_training_curves_loads(v1_trainer, tmp_path):
    """Real v1 checkpoints keep numpy float64 metrics in plot_stuff: admitted by the allow-list."""
    download = flat_download(v1_trainer, tmp_path / "download")
    path = download / f"{CHECKPOINT}.model"
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["plot_stuff"] = ([0.5, 0.4], [0.6], [np.float64(0.81), np.float32(0.8)], [])
    checkpoint["best_stuff"] = (3, np.float64(0.12), np.float64(0.81))
    torch.save(checkpoint, path)
    run_import(download, tmp_path / "out")
    assert (tmp_path / "out" / MODEL_FOLDER / "fold_all" / "checkpoint_final.pth").is_file()


def test_plans_unpickler_keeps_numpy_and_containers_and_refuses_the_rest():
    plans = v1_plans()
    loaded = load_plans_pickle(pickle.dumps(plans, protocol=2), source="p2.pkl")
    assert loaded["plans_per_stage"][1]["current_spacing"].tolist() == [6.0, 6.0, 6.0]
    assert isinstance(loaded["normalization_schemes"], OrderedDict)
    assert load_plans_pickle(pickle.dumps({"x": np.float64(2.5)}), source="s")["x"] == 2.5
    with pytest.raises(UnsafePickleError, match=r"s references builtins.eval"):
        load_plans_pickle(pickle.dumps({"f": eval}), source="s")
    with pytest.raises(UnsafePickleError, match="s is not a readable pickle"):
        load_plans_pickle(b"not a pickle", source="s")


# --- the model page and the job's model record ------------------------------------------------------


@pytest.fixture
def imported_settings(settings, media, imported) -> Path:
    settings.CTSPINE_NNUNET_MODEL_DIR = str(imported)
    settings.CTSPINE_NNUNET_FOLDS = "all"
    settings.CTSPINE_NNUNET_CHECKPOINT = "checkpoint_final.pth"
    settings.CTSPINE_NNUNET_LABEL_MAP = None
    settings.CTSPINE_DEVICE = "auto"
    settings.CTSPINE_NNUNET_MODE = "fast"
    return imported


@pytest.mark.django_db
def test_model_page_shows_origin_hashes_geometry_labels_and_last_device(
    alice, client, user, imported_settings
):
    record = json.loads((imported_settings / "import_record.json").read_text())
    page = alice.get("/models/").content.decode()
    assert "Imported from nnU-Net v1 (nnUNetTrainerV2__nnUNetPlansv2.1, stage 1, fold all)" in page
    for entry in record["files_read"]:
        assert f"<code>{entry['sha256']}</code>" in page and f"<code>{entry['path']}</code>" in page
    assert "6.0 × 6.0 × 6.0 mm" in page and "64 × 64 × 64 voxels" in page
    assert "<dd>all · checkpoint_final.pth" in page
    assert "fast (one pass per tile)" in page
    assert "<td>25</td><td>L6</td><td>L6</td>" in page
    assert "no worker has run this model yet" in page

    SegmentationJob.objects.create(
        owner=user,
        title="scan.nii.gz",
        status=SegmentationJob.Status.SUCCEEDED,
        started_at=timezone.now(),
        device="cuda:1",
        worker="gpu-box:4242",
        model={"model_dir": str(imported_settings)},
    )
    SegmentationJob.objects.create(  # another model's run does not count
        owner=user,
        title="old.nii.gz",
        status=SegmentationJob.Status.SUCCEEDED,
        started_at=timezone.now(),
        device="cpu",
        model={"model_dir": "/models/other"},
    )
    page = alice.get("/models/").content.decode()
    assert "the workers last used <strong>cuda:1</strong> (gpu-box:4242" in page
    assert client.logout() is None and client.get("/models/").status_code == 302


@pytest.mark.django_db
def test_model_page_of_a_v2_model_and_of_no_model(alice, settings, model):
    page = alice.get("/models/").content.decode()
    assert "Trained with nnU-Net v2 (the folder has no import record)" in page
    settings.CTSPINE_NNUNET_MODEL_DIR = None
    page = alice.get("/models/").content.decode()
    assert "Segmentation is unavailable: CTSPINE_NNUNET_MODEL_DIR: no nnU-Net model folder" in page


@pytest.mark.django_db
def test_a_jobs_model_record_carries_the_import_hashes(alice, user, imported_settings):
    info = check_model_folder(PredictorConfig.from_env_values(model_dir=str(imported_settings)))
    job = SegmentationJob.objects.create(
        owner=user,
        title="scan.nii.gz",
        status=SegmentationJob.Status.RUNNING,
        started_at=timezone.now(),
        device="cpu",
        model={**info.as_dict(), "mode": "fast", "mirroring": False},
    )
    page = alice.get(f"/jobs/{job.pk}/").content.decode()
    for entry in info.import_record["files_read"]:
        assert f"<code>{entry['sha256']}</code>" in page


def test_a_trainer_folder_under_3d_cascade_fullres_is_refused(v1_trainer, tmp_path):
    cascade = tmp_path / "3d_cascade_fullres" / "Task601_TinyV1" / v1_trainer.name
    shutil.copytree(v1_trainer, cascade)
    with pytest.raises(CommandError, match=r"is a cascade model \(trainer nnUNetTrainerV2\)"):
        run_import(cascade, tmp_path / "out")
