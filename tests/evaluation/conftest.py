"""Fixtures of the benchmark tests: a prediction folder made by perturbing the phantom's ground
truth in known ways, and the expected per-case numbers computed here with plain numpy."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from django.core.management import call_command

from ctspine.imaging.volume_io import read_volume
from ctspine.phantom.plan import plan_cases

# The 24-case phantom of tests/conftest.py: its test cases and what each prediction does.
PERFECT = "perfect copy"
PLAN = {
    # test_public
    "CTC-1018399231": PERFECT,
    "1.3.6.1.4.1.9328.50.4.0699": "L6 labelled L5 (lumbarization missed), named _0000",
    "HN_P023": "C3 and C4 swapped",
    "volume-covid19-A-0320_ct": "T5 missing",
    "liver_110": "L1 shifted 2 slices up",
    "1.3.6.1.4.1.9328.50.4.0663": "no prediction",
    # test_private
    "liver_165": "extra L6: L5 labelled L6",
    "volume-covid19-A-0251_ct": "perfect copy, uncompressed .nii",
    "1.3.6.1.4.1.9328.50.4.0505": PERFECT,
    "1.3.6.1.4.1.9328.50.4.0506": PERFECT,
    "1.3.6.1.4.1.9328.50.4.0555": "grid mismatch: top slice cropped",
    "HN_P029": "unreadable: label value 30",
}
# nnU-Net's own naming is <case>.nii.gz; these use the other accepted names.
FILE_NAMES = {
    "1.3.6.1.4.1.9328.50.4.0699": "{}_0000.nii.gz",
    "volume-covid19-A-0251_ct": "{}.nii",
}
EVALUATED = [
    case_id for case_id, what in PLAN.items() if not what.startswith(("no ", "grid", "unread"))
]
# Without --skip-missing, the case without a prediction is scored as an empty prediction.
MISSING_CASE = "1.3.6.1.4.1.9328.50.4.0663"
SCORED = [*EVALUATED, MISSING_CASE]
SHIFT_SLICES = 2


@dataclass
class Expected:
    """Per evaluated case, computed independently of ctspine.metrics: Dice per label counted,
    the labels whose HD95 is defined, mean Dice, spine Dice; and level-error expectations."""

    dice: dict[str, dict[int, float]] = field(default_factory=dict)
    hd95_defined: dict[str, set[int]] = field(default_factory=dict)
    mean_dice: dict[str, float] = field(default_factory=dict)
    spine_dice: dict[str, float] = field(default_factory=dict)
    spacing: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    split: dict[str, str] = field(default_factory=dict)


@dataclass
class PredictionFolder:
    path: Path
    expected: Expected


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _perturb(case_id: str, label: np.ndarray) -> np.ndarray:
    """The prediction of ``case_id`` (RAS array) from its ground truth."""
    pred = label.copy()
    if case_id == "1.3.6.1.4.1.9328.50.4.0699":
        pred[label == 25] = 24
    elif case_id == "HN_P023":
        pred[label == 3], pred[label == 4] = 4, 3
    elif case_id == "volume-covid19-A-0320_ct":
        pred[label == 12] = 0
    elif case_id == "liver_110":
        moved = np.zeros_like(label, dtype=bool)
        moved[:, :, SHIFT_SLICES:] = (label == 20)[:, :, :-SHIFT_SLICES]
        pred[label == 20] = 0
        pred[moved] = 20
    elif case_id == "liver_165":
        pred[label == 24] = 25
    elif case_id == "HN_P029":
        pred[label == 1] = 30
    return pred


def _save(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    image = nib.Nifti1Image(array.astype(np.uint8), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, path)


def make_predictions(phantom_root: Path, folder: Path) -> PredictionFolder:
    """Write the predictions of PLAN into ``folder`` (in RAS order whatever the ground truth's
    stored orientation) plus files that must not be used."""
    folder.mkdir(parents=True, exist_ok=True)
    specs = {spec.case_id: spec for spec in plan_cases(24, seed=7, full_size=False)}
    expected = Expected()
    for case_id, what in PLAN.items():
        spec = specs[case_id]
        truth = read_volume(phantom_root / spec.label_relpath, kind="label")
        label = np.asarray(truth.data)
        pred = _perturb(case_id, label)
        affine = truth.affine
        if what.startswith("no "):
            # Scored as an empty prediction: Dice 0 for each vertebra, no HD95 anywhere.
            labels = sorted(set(np.unique(label)) - {0})
            expected.dice[case_id] = {int(v): 0.0 for v in labels}
            expected.hd95_defined[case_id] = set()
            expected.mean_dice[case_id] = 0.0
            expected.spine_dice[case_id] = 0.0
            expected.spacing[case_id] = truth.spacing
            expected.split[case_id] = spec.split
            continue
        name = FILE_NAMES.get(case_id, "{}.nii.gz").format(case_id)
        if what.startswith("grid"):
            pred = pred[:, :, :-1]
        _save(folder / name, pred, affine)
        if case_id not in EVALUATED:
            continue
        labels = sorted((set(np.unique(label)) | set(np.unique(pred))) - {0})
        dice = {int(v): _dice(label == v, pred == v) for v in labels}
        expected.dice[case_id] = dice
        expected.hd95_defined[case_id] = {
            int(v) for v in labels if np.any(label == v) and np.any(pred == v)
        }
        expected.mean_dice[case_id] = float(np.mean(list(dice.values())))
        expected.spine_dice[case_id] = _dice(label > 0, pred > 0)
        expected.spacing[case_id] = truth.spacing
        expected.split[case_id] = spec.split
    # Files that predict no evaluated case: a training case, no case at all, not NIfTI.
    train = specs["liver_0"]
    truth = read_volume(phantom_root / train.label_relpath, kind="label")
    _save(folder / "liver_0.nii.gz", np.asarray(truth.data), truth.affine)
    _save(folder / "not-a-case.nii.gz", np.zeros((4, 4, 4), np.uint8), np.eye(4))
    (folder / "summary.json").write_text("{}")
    return PredictionFolder(folder, expected)


@pytest.fixture(scope="session")
def prediction_folder(phantom_root, tmp_path_factory) -> PredictionFolder:
    return make_predictions(phantom_root, tmp_path_factory.mktemp("predictions") / "fold_all")


@dataclass
class CommandRun:
    run: object
    stdout: str
    stderr: str


def run_evaluate(folder: Path, out: Path, *args: str) -> CommandRun:
    from evaluation.models import EvaluationRun

    stdout, stderr = io.StringIO(), io.StringIO()
    call_command("evaluate", str(folder), "--out", str(out), *args, stdout=stdout, stderr=stderr)
    return CommandRun(EvaluationRun.objects.latest("id"), stdout.getvalue(), stderr.getvalue())


@pytest.fixture
def evaluated_run(ingested_phantom, prediction_folder, tmp_path) -> CommandRun:
    """The prediction folder evaluated on both test splits, in this process."""
    return run_evaluate(prediction_folder.path, tmp_path, "--name", "perturbed", "--verbosity", "1")
