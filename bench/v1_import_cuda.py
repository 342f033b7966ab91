"""Time an imported nnU-Net v1 model through our predictor on CUDA, against baselines run alongside.

Writes a small nnU-Net v1 model folder as v1 leaves one (plans.pkl, all/model_final_checkpoint.model
and .model.pkl; tests/support/nnunet_v1_files.py, no nnU-Net v1 needed), imports it with
``import_nnunet_v1``, and times ``VertebraPredictor.predict_result`` on one real CT (default
../shared/samples/ts_example_ct_3mm.nii.gz), after one warm-up each, calls interleaved:

- v1 mode: the imported folder as is (v1's preprocessing order and probability averaging), --device;
- baseline: the same folder without the ``nnunet_v1_inference`` key (plain nnU-Net v2), --device;
- cpu: v1 mode on the CPU (left out with --no-cpu);
- nnU-Net v1's own ``predict_cases`` (v1 uses CUDA when it sees it), only if ``nnunet`` imports;
  its time includes v1's worker start-up and file reading and writing.

Prints median seconds, ratios against the baseline, and the voxel agreement of the label maps.
Needs only the project's own dependencies (torch, nnunetv2, nibabel, Django).

Run from the project root: ``python bench/v1_import_cuda.py --device cuda [--mirroring]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._timing import timed_alternately  # noqa: E402
from inference.management.commands.import_nnunet_v1 import import_v1_model  # noqa: E402
from inference.nnunet.config import PredictorConfig  # noqa: E402
from inference.nnunet.v1_import import V1_INFERENCE_KEY  # noqa: E402
from inference.predictor import VertebraPredictor  # noqa: E402
from tests.support.nnunet_v1_files import TRAINER_FOLDER, V1_PATHS, write_v1_files  # noqa: E402

DEFAULT_CT = Path(os.environ.get("CTSPINE_SHARED_DIR", REPO.parent / "shared"))
DEFAULT_CT = DEFAULT_CT / "samples" / "ts_example_ct_3mm.nii.gz"


def plain_v2_copy(model_dir: Path, root: Path) -> Path:
    """The imported folder without the v1 key: what nnU-Net v2 alone would run."""
    copy = root / model_dir.name
    copy.mkdir(parents=True)
    for name in ("dataset.json", "fold_all"):
        (copy / name).symlink_to(model_dir / name)
    plans = json.loads((model_dir / "plans.json").read_text())
    plans.pop(V1_INFERENCE_KEY)
    (copy / "plans.json").write_text(json.dumps(plans))
    return copy


def v1_predict_cases(trainer_dir: Path, ct: Path, out: Path, *, mirroring: bool):
    """A callable running nnU-Net v1's predict_cases, or None where nnunet is not installed."""
    if importlib.util.find_spec("nnunet") is None:
        return None
    for name in ("nnUNet_raw_data_base", "nnUNet_preprocessed", "RESULTS_FOLDER"):
        os.environ[name] = str(V1_PATHS / name)
    # Optional dependency, imported only when present (and after its path variables are set).
    from nnunet.inference.predict import predict_cases

    out.mkdir(parents=True, exist_ok=True)

    def run():
        predict_cases(str(trainer_dir), [[str(ct)]], [str(out / "case.nii.gz")], ["all"],
                      save_npz=False, num_threads_preprocessing=1, num_threads_nifti_save=1,
                      do_tta=mirroring, mixed_precision=False, overwrite_existing=True,
                      disable_postprocessing=True)  # fmt: skip
        return np.asanyarray(nib.load(out / "case.nii.gz").dataobj)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=Path, default=DEFAULT_CT)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mirroring", action="store_true", help="test-time mirroring (8x)")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU comparison")
    parser.add_argument("--no-v1", action="store_true", help="skip nnU-Net v1 even if installed")
    args = parser.parse_args()

    image = nib.load(args.ct)
    stored = np.asanyarray(image.dataobj).astype(np.float32)  # as SimpleITK reads the file
    spacing = [float(s) for s in image.header.get_zooms()[:3]]
    print(f"CT {args.ct.name}: {stored.shape} voxels, {spacing} mm; mirroring {args.mirroring}")
    with tempfile.TemporaryDirectory(prefix="ctspine-bench-v1-") as tmp:
        root = Path(tmp)
        trainer_dir = write_v1_files(root / "v1" / TRAINER_FOLDER)
        started = time.perf_counter()
        model_dir = import_v1_model(trainer_dir, root / "v2")
        print(f"import: {time.perf_counter() - started:.2f} s")

        def predictor(folder: Path, device: str) -> VertebraPredictor:
            return VertebraPredictor(
                PredictorConfig(model_dir=folder, device=device, mirroring=args.mirroring)
            )

        runs = {
            "v1 mode": predictor(model_dir, args.device),
            "baseline (plain v2)": predictor(plain_v2_copy(model_dir, root / "plain"), args.device),
        }
        if not args.no_cpu:
            runs["v1 mode, cpu"] = predictor(model_dir, "cpu")
        functions = {
            name: (lambda p=p: p.predict_result(image=stored, spacing_mm=spacing).labels)
            for name, p in runs.items()
        }
        devices = {name: p.device_name for name, p in runs.items()}
        v1_run = None if args.no_v1 else v1_predict_cases(
            trainer_dir, args.ct, root / "v1-out", mirroring=args.mirroring
        )  # fmt: skip
        if v1_run is not None:
            functions["nnU-Net v1 predict_cases"] = v1_run
            devices["nnU-Net v1 predict_cases"] = "cuda" if torch.cuda.is_available() else "cpu"
        seconds, labels = timed_alternately(functions, args.repeats)

    baseline = statistics.median(seconds["baseline (plain v2)"])
    reference = labels["v1 mode"]
    print(f"{'run':28} {'device':8} {'median s':>9} {'x baseline':>10} {'agree v1 mode':>14}")
    for name, values in seconds.items():
        median = statistics.median(values)
        agreement = float((labels[name] == reference).mean())
        print(
            f"{name:28} {devices[name]:8} {median:9.3f} {median / baseline:10.2f} {agreement:14.5f}"
        )


if __name__ == "__main__":
    main()
