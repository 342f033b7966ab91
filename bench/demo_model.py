"""The committed demo model on held-out phantom cases, through the real predictor, on each case's
own grid: per-vertebra Dice (mean over cases), level errors, and seconds per case in the modes
``fast`` (no mirroring) and ``accurate`` (left-right mirroring).

Held out: ``plan_cases(N, seed=0)``, the demo dataset ``make run`` writes (the model trained on
seeds 1-4). Each case is stored as planned (RAS or LPS, anisotropic voxels), read back RAS+ as the
app reads files (``nibabel.as_closest_canonical``), and compared with ``ctspine.metrics``.

Run: ``.venv/bin/python bench/demo_model.py [--cases 24] [--accurate-cases 2]`` from the project
root (CPU).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctspine.labels import label_name  # noqa: E402
from ctspine.metrics import compare_labels  # noqa: E402
from ctspine.phantom.anatomy import make_phantom  # noqa: E402
from ctspine.phantom.plan import plan_cases  # noqa: E402
from inference.demo_model import MODEL_DIR  # noqa: E402
from inference.predictor import PredictorConfig, VertebraPredictor  # noqa: E402


def canonical_case(spec) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    image, label, affine = make_phantom(spec)
    image_ras = nib.as_closest_canonical(nib.Nifti1Image(image, affine))
    label_ras = nib.as_closest_canonical(nib.Nifti1Image(label, affine))
    spacing = tuple(float(s) for s in image_ras.header.get_zooms()[:3])
    return np.asarray(image_ras.dataobj), np.asarray(label_ras.dataobj), spacing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--accurate-cases", type=int, default=2)
    args = parser.parse_args()
    predictors = {
        mode: VertebraPredictor(
            PredictorConfig(model_dir=MODEL_DIR, device="cpu", mirroring=mode == "accurate")
        )
        for mode in ("fast", "accurate")
    }
    dice: dict[int, list[float]] = {}
    seconds: dict[str, list[float]] = {"fast": [], "accurate": []}
    level_errors = []
    for index, spec in enumerate(plan_cases(args.cases, seed=0)):
        image, label, spacing = canonical_case(spec)
        modes = ("fast", "accurate") if index < args.accurate_cases else ("fast",)
        for mode in modes:
            started = time.perf_counter()
            result = predictors[mode].predict_result(image=image, spacing_mm=spacing)
            seconds[mode].append(time.perf_counter() - started)
            if mode == "fast":
                comparison = compare_labels(
                    reference=label, prediction=result.labels, spacing_mm=spacing
                )
        rows = {row.label: row.dice for row in comparison.per_label if row.dice is not None}
        present = [v for v in np.unique(label) if v]
        for value in present:
            dice.setdefault(int(value), []).append(rows.get(int(value), 0.0))
        level_errors += [(spec.case_id, e) for e in comparison.level_errors]
        worst = min(rows.get(int(v), 0.0) for v in present)
        print(
            f"{spec.case_id:28s} {spec.section:13s} {spec.orientation} "
            f"{'x'.join(f'{s:.2f}' for s in spacing)} mm  min Dice {worst:.3f}  "
            f"fast {seconds['fast'][-1]:.1f} s",
            flush=True,
        )
    print("\nvertebra  cases  mean Dice (each case's own grid, fast mode)")
    for value in sorted(dice):
        print(f"{label_name(value):8s} {len(dice[value]):5d}  {np.mean(dice[value]):.3f}")
    every = [d for values in dice.values() for d in values]
    print(f"mean per-vertebra Dice {np.mean(every):.3f} over {len(every)} vertebrae")
    print(f"level errors: {len(level_errors)}")
    for case_id, error in level_errors:
        print(f"  {case_id}: {error}")
    for mode, values in seconds.items():
        print(f"{mode}: median {np.median(values):.1f} s per case over {len(values)} cases")
    ratio = np.median(seconds["accurate"]) / np.median(seconds["fast"][: len(seconds["accurate"])])
    print(f"accurate / fast on the same cases: {ratio:.2f}")


if __name__ == "__main__":
    main()
