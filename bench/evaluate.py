"""Evaluation speed: ``manage.py evaluate --workers 2`` on full-size phantom pairs, beside
nnU-Net's own folder evaluation (``nnUNetv2_evaluate_folder``: Dice/IoU only) on the same folder
in the same run.

Ground truth: full-size phantom test cases (512 x 512, about 440-540 slices). Predictions: the
ground truth moved by one voxel right and anterior (every vertebra imperfect, so every surface
distance is computed), with two neighbouring vertebrae swapped in one case.

Ours computes Dice, HD95, ASSD, NSD and the level errors per vertebra and stores every row;
nnU-Net computes Dice, IoU and TP/FP/FN/TN per label. Both use 2 worker processes (spawned,
their start-up included) and read the same files.

Run: .venv/bin/python bench/evaluate.py [--cases 6] [--workers 2]
"""

import argparse
import io
import json
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from _django import setup_django


def write_phantoms(root: Path, n_cases: int):
    from ctspine.phantom.plan import plan_cases
    from ctspine.phantom.writer import write_dataset

    specs = [s for s in plan_cases(24, seed=11, full_size=True) if s.split != "train"][:n_cases]
    start = time.perf_counter()
    write_dataset(root, specs)
    print(f"wrote {len(specs)} full-size phantom cases in {time.perf_counter() - start:.1f} s")
    return specs


def write_predictions(root: Path, specs, pred: Path, ref: Path) -> None:
    """Predictions beside a reference folder of ``<case>.nii.gz`` links (nnU-Net's layout)."""
    pred.mkdir(parents=True)
    ref.mkdir(parents=True)
    for index, spec in enumerate(specs):
        truth = nib.load(root / spec.label_relpath)
        label = np.asanyarray(truth.dataobj)
        moved = np.zeros_like(label)
        moved[1:, 1:, :] = label[:-1, :-1, :]
        if index == 0:
            present = [v for v in np.unique(label) if v]
            a, b = present[len(present) // 2 - 1], present[len(present) // 2]
            moved = np.where(moved == a, b, np.where(moved == b, a, moved)).astype(label.dtype)
        image = nib.Nifti1Image(moved, truth.affine, truth.header)
        nib.save(image, pred / f"{spec.case_id}.nii.gz")
        (ref / f"{spec.case_id}.nii.gz").symlink_to(root / spec.label_relpath)


def run_ours(pred: Path, out: Path, workers: int) -> tuple[float, object]:
    from django.core.management import call_command

    from evaluation.models import EvaluationRun

    start = time.perf_counter()
    call_command(
        "evaluate", str(pred), "--workers", str(workers), "--out", str(out),
        stdout=io.StringIO(), stderr=io.StringIO(),
    )  # fmt: skip
    return time.perf_counter() - start, EvaluationRun.objects.latest("id")


def run_nnunet(ref: Path, pred: Path, work: Path, workers: int) -> tuple[float, dict]:
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder2

    from evaluation.nnunet_export import dataset_json

    dataset = work / "dataset.json"
    dataset.write_text(json.dumps(dataset_json(num_training=0, name="bench")))
    plans = work / "plans.json"
    plans.write_text("{}")  # no label manager given: nnU-Net's default LabelManager
    output = work / "nnunet_summary.json"
    start = time.perf_counter()
    compute_metrics_on_folder2(
        str(ref), str(pred), str(dataset), str(plans), str(output), num_processes=workers
    )
    return time.perf_counter() - start, json.loads(output.read_text())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    workdir = setup_django()
    from django.conf import settings
    from django.core.management import call_command

    root = workdir / "phantom"
    specs = write_phantoms(root, args.cases)
    settings.CTSPINE_DATA_ROOT = root
    call_command("ingest", str(root), "--headers-only", verbosity=0)
    pred, ref = workdir / "predictions", workdir / "reference"
    write_predictions(root, specs, pred, ref)
    shapes = sorted({s.shape for s in specs})
    print(f"shapes: {shapes}")

    ours, run = run_ours(pred, workdir, args.workers)
    assert run.cases_evaluated == len(specs), (run.cases_evaluated, run.error)
    theirs, summary = run_nnunet(ref, pred, workdir, args.workers)
    assert len(summary["metric_per_case"]) == len(specs)

    n = len(specs)
    worker_s = [c.seconds for c in run.cases.evaluated()]
    print()
    print(
        f"| {n} full-size pairs, {args.workers} workers | wall s | cases/s | cases/s vs nnU-Net |"
    )
    print("|---|---|---|---|")
    print(
        f"| ours: manage.py evaluate (Dice, HD95, ASSD, NSD, level errors; stored) "
        f"| {ours:.1f} | {n / ours:.2f} | {theirs / ours:.1f}x |"
    )
    print(
        f"| baseline: nnU-Net compute_metrics_on_folder2 (Dice, IoU) "
        f"| {theirs:.1f} | {n / theirs:.2f} | 1.00x |"
    )
    print(f"ours, per case inside a worker: median {np.median(worker_s):.2f} s (read + compare)")
    # The two agree on Dice where both define it (nnU-Net: NaN when a label is in neither).
    ours_dice = {
        (r.case_result.case_id, r.label): r.dice for r in run.labels.select_related("case_result")
    }
    worst = 0.0
    for case in summary["metric_per_case"]:
        case_id = Path(case["prediction_file"]).name.removesuffix(".nii.gz")
        for label, metrics in case["metrics"].items():
            if (case_id, int(label)) in ours_dice:
                worst = max(worst, abs(metrics["Dice"] - ours_dice[(case_id, int(label))]))
    print(f"largest Dice difference between the two: {worst:.2e}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
