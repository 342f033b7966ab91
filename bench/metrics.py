"""Benchmark ctspine.metrics.compare_labels against medpy, the CTSpine1K evaluation script's way.

Builds a 512 x 512 x 500 label pair (0.78 x 0.78 x 1.0 mm) with 12 vertebrae T6-L5 stacked
along the third axis: vertebral body, arch, spinous and transverse processes, rough surfaces.
The prediction perturbs it: each vertebra shifted by up to 2 voxels, dilated or eroded by about
a voxel, with a differently rough surface, a few false-positive specks, and L5 labelled L6.

Timed in the same run:
- ours: ``compare_labels`` for all labels (Dice, HD95, ASSD, NSD, whole spine, confusion);
- baseline "medpy, full volume": ``medpy.metric.binary.dc`` and ``hd95`` on the full-volume
  binary masks of one label at a time, as the dataset's evaluation script does. It takes over a
  minute per label, so it is run on a few labels (``--full-volume-labels``, default 2) and
  extrapolated linearly to every label present in both volumes;
- baseline "medpy, crops": the same calls on each label's bounding box (+1 voxel), all labels.
Values are checked to agree within 1e-6.

Run: ``.venv/bin/python bench/metrics.py`` from the project root.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from medpy.metric import binary as medpy_binary
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctspine.labels import label_name  # noqa: E402
from ctspine.metrics import compare_labels  # noqa: E402

SHAPE = (512, 512, 500)
SPACING = (0.78, 0.78, 1.0)
LABELS = tuple(range(13, 25))  # T6 .. L5
MISLABELLED = (24, 25)  # L5 predicted as L6
BOX = (150, 150, 36)  # local box of one vertebra, voxels
TOLERANCE = 1e-6


def vertebra_field(grid: tuple[np.ndarray, ...], height: float, scale: float) -> np.ndarray:
    """Approximate signed distance (voxels, negative inside) of a schematic vertebra."""
    x, y, z = grid
    cx, cy, cz = BOX[0] / 2, 52.0, BOX[2] / 2
    a, b = 30 * scale, 24 * scale
    body = np.hypot((x - cx) / a, (y - cy) / b) * min(a, b) - min(a, b)
    ring = np.abs(np.hypot(x - cx, y - (cy + 42 * scale)) - 15 * scale) - 4.5
    spinous = np.maximum(np.abs(x - cx) - 3.5, np.abs(y - (cy + 75 * scale)) - 16 * scale)
    transverse = np.maximum(np.abs(x - cx) - 50 * scale, np.abs(y - (cy + 38 * scale)) - 4.0)
    half = height / 2
    processes = np.maximum(np.minimum(spinous, transverse), np.abs(z - cz) - half * 0.45)
    shape = np.minimum(np.minimum(body, ring), processes)
    return np.maximum(shape, np.abs(z - cz) - half)


def build_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    reference = np.zeros(SHAPE, dtype=np.uint8)
    prediction = np.zeros(SHAPE, dtype=np.uint8)
    grid = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in BOX), indexing="ij")
    x0, y0, z = 256 - BOX[0] // 2, 200, 40
    for k, value in enumerate(LABELS):
        height = 22 + k * 0.6  # vertebrae grow caudally
        field = vertebra_field(grid, height, scale=0.9 + 0.02 * k)
        rough = ndimage.gaussian_filter(rng.standard_normal(BOX).astype(np.float32), 2.5)
        rough *= 1.2 / rough.std()
        other = ndimage.gaussian_filter(rng.standard_normal(BOX).astype(np.float32), 1.5)
        other *= 0.8 / other.std()
        grow = (-1.2, 0.0, 1.2)[k % 3]  # eroded / unchanged / dilated by about a voxel
        ref_mask = field + rough < 0
        pred_mask = field + rough + other - grow < 0
        pred_mask = np.roll(pred_mask, tuple(rng.integers(-2, 3, size=3)), axis=(0, 1, 2))
        box = (slice(x0, x0 + BOX[0]), slice(y0, y0 + BOX[1]), slice(z, z + BOX[2]))
        reference[box][ref_mask] = value
        predicted = MISLABELLED[1] if value == MISLABELLED[0] else value
        prediction[box][pred_mask] = predicted
        z += int(height) + 6
    for _ in range(4):  # false-positive specks, a few cm from the spine
        centre = rng.integers((100, 100, 60), (400, 400, 440))
        speck = tuple(slice(c, c + 4) for c in centre)
        prediction[speck] = rng.choice(LABELS[:-1])
    return reference, prediction


def timed(function, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def medpy_label(reference, prediction, value):
    """dc and hd95 of one label on full-volume masks, as the CTSpine1K evaluation script does."""
    ref, pred = reference == value, prediction == value
    return medpy_binary.dc(pred, ref), medpy_binary.hd95(pred, ref, voxelspacing=SPACING)


def medpy_on_crops(reference, prediction, values):
    """dc and hd95 per label on its bounding box (+1 voxel of zeros: same surfaces)."""
    ref_boxes = ndimage.find_objects(reference, max_label=25)
    pred_boxes = ndimage.find_objects(prediction, max_label=25)
    out = {}
    for value in values:
        a, b = ref_boxes[value - 1], pred_boxes[value - 1]
        box = tuple(
            slice(min(p.start, q.start), max(p.stop, q.stop)) for p, q in zip(a, b, strict=True)
        )
        ref = np.pad(reference[box] == value, 1)
        pred = np.pad(prediction[box] == value, 1)
        out[value] = (
            medpy_binary.dc(pred, ref),
            medpy_binary.hd95(pred, ref, voxelspacing=SPACING),
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-volume-labels", type=int, default=2, help="0 skips that baseline")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    start = time.perf_counter()
    reference, prediction = build_pair()
    print(
        f"phantom {SHAPE} uint8, spacing {SPACING} mm, built in {time.perf_counter() - start:.1f} s"
    )

    ours_s, result = timed(
        lambda: compare_labels(reference=reference, prediction=prediction, spacing_mm=SPACING),
        args.repeat,
    )
    ref16, pred16 = reference.astype(np.int16), prediction.astype(np.int16)
    ours16_s, result16 = timed(
        lambda: compare_labels(reference=ref16, prediction=pred16, spacing_mm=SPACING),
        args.repeat,
    )
    assert result16 == result
    both = [row.label for row in result.per_label if row.hd95_mm is not None]
    rows = {row.label: row for row in result.per_label}

    print(f"\nlabels counted {len(result.per_label)}, with distances {len(both)}")
    print(f"{'label':6} {'dice':>7} {'hd95 mm':>8} {'assd mm':>8} {'nsd':>6}")
    for row in [*result.per_label, result.spine]:
        hd = "-" if row.hd95_mm is None else f"{row.hd95_mm:8.3f}"
        mean = "-" if row.assd_mm is None else f"{row.assd_mm:8.3f}"
        print(f"{row.name:6} {row.dice:7.4f} {hd:>8} {mean:>8} {row.nsd:6.3f}")
    mean = result.mean_of_vertebrae
    print(f"Mean of Vertebrae: Dice {mean.dice:.4f}, HD95 {mean.hd95_mm:.3f} mm")
    print(f"Mean of Spine: Dice {result.spine.dice:.4f}, HD95 {result.spine.hd95_mm:.3f} mm")
    print("level errors:", [error.message for error in result.level_errors])
    print("call-outs:", list(result.counts.callouts))

    crops_s, crops = timed(lambda: medpy_on_crops(reference, prediction, both), 1)
    worst = 0.0
    for value, (dc, hd) in crops.items():
        worst = max(worst, abs(dc - rows[value].dice), abs(hd - rows[value].hd95_mm))

    full_per_label_s = None
    subset = both[: args.full_volume_labels]
    if subset:
        full_times = []
        for value in subset:
            seconds, (dc, hd) = timed(lambda v=value: medpy_label(reference, prediction, v), 1)
            full_times.append(seconds)
            worst = max(worst, abs(dc - rows[value].dice), abs(hd - rows[value].hd95_mm))
            print(
                f"medpy full volume, {label_name(value)}: {seconds:.1f} s (dc {dc:.6f}, hd95 {hd:.6f})"
            )
        full_per_label_s = statistics.mean(full_times)

    print(f"\nmax |ours - medpy| over Dice and HD95: {worst:.2e} (limit {TOLERANCE:g})")
    print(f"\n{'what':58} {'seconds':>9} {'ours is':>10}")
    print(f"{'ours: compare_labels, all labels + spine + confusion, uint8':58} {ours_s:9.2f}")
    print(f"{'ours: same, int16 volumes':58} {ours16_s:9.2f}")
    print(
        f"{f'medpy dc+hd95 on label crops (+1 voxel), {len(both)} labels':58} {crops_s:9.2f}"
        f" {crops_s / ours_s:9.1f}x"
    )
    if full_per_label_s is not None:
        total = full_per_label_s * len(both)
        label = f"medpy dc+hd95 full volume, {len(both)} labels (extrapolated)"
        print(f"{label:58} {total:9.1f} {total / ours_s:9.1f}x")
        print(
            f"  (measured on {len(subset)} label(s): {full_per_label_s:.1f} s each, times "
            f"{len(both)} labels with distances; the spine row is not added to the baseline)"
        )
    print()
    print(f"target under 3 s: {'PASS' if ours_s < 3 else 'FAIL'} ({ours_s:.2f} s)")
    if full_per_label_s is not None:
        ratio = full_per_label_s * len(both) / ours_s
        print(f"target >= 5x medpy per label: {'PASS' if ratio >= 5 else 'FAIL'} ({ratio:.0f}x)")
    print(f"values within {TOLERANCE:g}: {'PASS' if worst <= TOLERANCE else 'FAIL'}")


if __name__ == "__main__":
    main()
