"""The committed demo model end to end: geometry from the uploaded file to the per-vertebra result.

A held-out phantom case (the model trained on seeds 1-4; seed 0 is the demo dataset, seed 7 the
test dataset) goes through the real API or the "Segment" button and the database worker, and
every vertebra must come back at Dice >= 0.8 on the file's own grid: a flipped axis, a wrong
transposition or an off resampling anywhere would move the labels off their vertebrae. The same
anatomy stored with its axes permuted and flipped must give the same per-vertebra result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from django.core.management import CommandError, call_command

from ctspine.phantom.anatomy import make_phantom
from ctspine.phantom.plan import plan_cases
from inference import demo_model, jobs
from inference.models import SegmentationJob
from tests.inference.conftest import run_db_worker
from tests.support.demo_model import anisotropic_lps, use_demo_model
from viewer.models import Case

MIN_DICE = 0.8
SAME_WITHIN = 0.02


@pytest.fixture
def demo(settings, media) -> Path:
    use_demo_model(settings)
    return demo_model.MODEL_DIR


@dataclass(frozen=True)
class Stored:
    image: Path
    label: Path
    labels_present: list[int]


def write_case(folder: Path, image: nib.Nifti1Image, label: nib.Nifti1Image) -> Stored:
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(image, folder / "ct.nii.gz")
    nib.save(label, folder / "ct_seg.nii.gz")
    present = sorted(int(v) for v in np.unique(np.asarray(label.dataobj)) if v)
    return Stored(folder / "ct.nii.gz", folder / "ct_seg.nii.gz", present)


def per_vertebra_dice(api, job_id: int) -> dict[int, float]:
    body = api.get(f"/api/jobs/{job_id}/").json()
    assert body["status"] == "succeeded", body["error"]
    assert body["model_notice"] == demo_model.NOTICE
    metrics = body["metrics"]
    assert metrics["level_errors"] == []
    return {row["label"]: row["dice"] for row in metrics["per_label"]}


def upload_and_segment(api, stored: Stored) -> int:
    with open(stored.image, "rb") as image, open(stored.label, "rb") as label:
        response = api.post(
            "/api/uploads/", {"image": image, "label": label, "mode": "fast"}, format="multipart"
        )
    assert response.status_code == 201, response.content
    run_db_worker()
    return response.json()["job"]["id"]


def test_notice_names_only_the_demo_model():
    assert demo_model.model_notice({"dataset_name": demo_model.DATASET_NAME}) == demo_model.NOTICE
    assert demo_model.model_notice({"dataset_name": "Dataset999_Tiny"}) == ""
    assert demo_model.model_notice(None) == ""


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_held_out_lps_case_lands_on_its_vertebrae_in_any_storage_order(api, demo, tmp_path):
    spec = anisotropic_lps(plan_cases(24, seed=0))
    image, label, affine = make_phantom(spec)
    assert nib.aff2axcodes(affine) == ("L", "P", "S")
    original = write_case(
        tmp_path / "lps", nib.Nifti1Image(image, affine), nib.Nifti1Image(label, affine)
    )
    # Same anatomy, other storage: every axis moves, two of them reversed (L P S -> P I R).
    reorder = np.array([[2, -1], [0, 1], [1, -1]])
    permuted = write_case(
        tmp_path / "permuted",
        nib.Nifti1Image(image, affine).as_reoriented(reorder),
        nib.Nifti1Image(label, affine).as_reoriented(reorder),
    )
    assert nib.aff2axcodes(nib.load(permuted.image).affine) == ("P", "I", "R")

    first = per_vertebra_dice(api, upload_and_segment(api, original))
    assert sorted(first) == original.labels_present
    assert min(first.values()) >= MIN_DICE, first

    job_id = upload_and_segment(api, permuted)
    second = per_vertebra_dice(api, job_id)
    assert sorted(second) == sorted(first)
    assert max(abs(second[v] - first[v]) for v in first) <= SAME_WITHIN, (first, second)
    # The prediction is stored like the uploaded file: its grid, its axis order.
    stored = nib.load(jobs.media_path(SegmentationJob.objects.get(pk=job_id).prediction_path))
    uploaded = nib.load(permuted.image)
    assert stored.shape == uploaded.shape and np.allclose(stored.affine, uploaded.affine)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_segment_button_on_a_held_out_dataset_case(alice, api, demo, ingested_phantom):
    spec = anisotropic_lps(plan_cases(24, seed=7))  # the ingested phantom's plan
    case = Case.objects.get(case_id=spec.case_id)
    response = alice.post(f"/cases/{case.case_id}/segment", {"mode": "fast"})
    job = SegmentationJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    run_db_worker()
    dice = per_vertebra_dice(api, job.pk)
    assert sorted(dice) == list(spec.expected_labels)
    assert min(dice.values()) >= MIN_DICE, dice
    page = alice.get(f"/jobs/{job.pk}/").content.decode()
    assert f"Result of the {demo_model.NOTICE}." in page


@pytest.mark.slow
def test_train_demo_model_writes_a_folder_the_predictor_accepts(tmp_path):
    from inference.nnunet.config import PredictorConfig, check_model_folder

    call_command(
        "train_demo_model", str(tmp_path), "--minutes", "0.01", "--cases", "2", "--held-out", "1"
    )
    folder = tmp_path / demo_model.DATASET_NAME / demo_model.MODEL_DIR.name
    info = check_model_folder(PredictorConfig(model_dir=folder, device="cpu"))
    assert info.dataset_name == demo_model.DATASET_NAME and info.folds == ("all",)
    assert tuple(sorted(v for v in info.label_map.values() if v)) == tuple(range(1, 26))
    assert "held-out phantom cases" in (folder / "training_log.txt").read_text()


@pytest.mark.parametrize("minutes", ["0", "-1", "nan"])
def test_train_demo_model_refuses_a_bad_time_budget(tmp_path, minutes):
    with pytest.raises(CommandError, match="--minutes must be positive"):
        call_command("train_demo_model", str(tmp_path), "--minutes", minutes)


@pytest.mark.slow
def test_fine_tuning_writes_a_folder_from_a_model_folder(tmp_path):
    call_command(
        "train_demo_model",
        str(tmp_path / "tuned"),
        "--init",
        str(demo_model.MODEL_DIR),
        "--steps",
        "2",
        "--cases",
        "12",
        "--held-out",
        "1",
    )
    folder = tmp_path / "tuned" / demo_model.DATASET_NAME / demo_model.MODEL_DIR.name
    plans = [json.loads((f / "plans.json").read_text()) for f in (folder, demo_model.MODEL_DIR)]
    assert plans[0] == plans[1]
    log = (folder / "fine_tuning_log.txt").read_text()
    assert "fine-tuned 2 steps" in log and "held-out phantom cases" in log
    tuned = torch.load(folder / "fold_all" / "checkpoint_final.pth", weights_only=True)
    given = torch.load(
        demo_model.MODEL_DIR / "fold_all" / "checkpoint_final.pth", weights_only=True
    )
    changed = {
        key
        for key, value in tuned["network_weights"].items()
        if not torch.equal(value, given["network_weights"][key])
    }
    assert changed and not any("encoder." in key for key in changed)  # the decoder only


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--init", "nowhere", "--steps", "5"], "is not a model folder"),
        (["--init", str(demo_model.MODEL_DIR), "--steps", "0"], "--steps must be at least 1"),
    ],
)
def test_fine_tuning_refuses_bad_arguments(tmp_path, arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("train_demo_model", str(tmp_path), *arguments)
