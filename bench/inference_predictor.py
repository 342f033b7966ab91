"""Benchmark the adapter's overhead: VertebraPredictor.predict_result versus nnU-Net called directly.

Builds the tiny model folder (tests/support/model_folder.py) in a temp dir and a spine phantom
of 96³ voxels (int16 HU, 1.6 mm, so nnU-Net resamples it to the model's 2 mm and back), then, on
the same array with the same model in the same process, after one warm-up each:
- ours: ``VertebraPredictor.predict_result`` (transpose in, label map, transpose back, copy);
- baseline: ``nnUNetPredictor.predict_single_npy_array`` on the (k, j, i) array nnU-Net wants.
The two label volumes are checked identical (the tiny model's map is the identity).

Run: ``.venv/bin/python bench/inference_predictor.py [--repeats 5] [--mirroring]`` from the
project root (CPU; ``--device cuda`` on a GPU machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._timing import timed_alternately  # noqa: E402
from inference.nnunet.config import PredictorConfig  # noqa: E402
from inference.predictor import VertebraPredictor  # noqa: E402
from tests.support.model_folder import build_tiny_model_folder, spine_phantom  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96, help="phantom edge, voxels")
    parser.add_argument("--spacing", type=float, default=1.6, help="phantom voxel size, mm")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mirroring", action="store_true", help="test-time mirroring (8x)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ctspine-bench-") as tmp:
        model_dir = build_tiny_model_folder(Path(tmp))
        config = PredictorConfig(model_dir=model_dir, device=args.device, mirroring=args.mirroring)
        ours = VertebraPredictor(config)  # sets torch's CPU threads for both paths below
        direct = nnUNetPredictor(
            tile_step_size=config.tile_step_size,
            use_mirroring=config.mirroring,
            perform_everything_on_device=ours.device.type == "cuda",
            device=ours.device,
            allow_tqdm=False,
        )
        direct.initialize_from_trained_model_folder(str(model_dir), use_folds=config.folds)

        shape = (args.size,) * 3
        image, _ = spine_phantom(shape=shape, seed=1)
        spacing = (args.spacing,) * 3

        def run_ours():
            return ours.predict_result(image=image, spacing_mm=spacing).labels

        def run_direct():
            data = image.transpose(2, 1, 0)[None]
            return direct.predict_single_npy_array(data, {"spacing": list(spacing[::-1])})

        seconds, labels = timed_alternately({"ours": run_ours, "direct": run_direct}, args.repeats)
        tiles = ours.predict_result(image=image, spacing_mm=spacing).tiles

    identical = np.array_equal(labels["ours"], labels["direct"].transpose(2, 1, 0))
    ours_s, direct_s = seconds["ours"], seconds["direct"]
    ours_med, direct_med = statistics.median(ours_s), statistics.median(direct_s)
    print(
        f"{shape} int16 at {args.spacing} mm, model 2 mm, {tiles} tile(s) of 64³, "
        f"mirroring {'on' if args.mirroring else 'off'}, {ours.device_name}, "
        f"torch threads {torch.get_num_threads()}"
    )
    for name, values in (
        ("nnUNetPredictor.predict_single_npy_array", direct_s),
        ("VertebraPredictor.predict_result", ours_s),
    ):
        print(f"{name:42s} median {statistics.median(values):.3f} s  min {min(values):.3f} s")
    print(
        f"overhead ratio ours/direct: median {ours_med / direct_med:.3f}, "
        f"min {min(ours_s) / min(direct_s):.3f}   labels identical: {identical}"
    )
    if not identical:
        sys.exit("labels differ")


if __name__ == "__main__":
    main()
