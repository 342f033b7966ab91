"""An anisotropic case (0.8 x 0.8 x 4 mm voxels) whose prediction is its ground truth with two
vertebrae moved by one voxel, one along k (4 mm) and one along i (0.8 mm), and the metric values
worked out by hand below (medpy's definitions, as ``ctspine.metrics`` states them).

Both vertebrae are columns 2 x 2 voxels wide in (i, j) and 6 slices tall in k, so one erosion by
the face-connected cross removes every voxel: every voxel is a surface voxel, and a surface
distance is the distance to the nearest voxel of the other mask.

- L1 moved one slice up (k + 1, 4 mm). Ground truth k = 2..7, prediction k = 3..8; 24 voxels
  each, 20 shared. The 4 truth voxels of k = 2 are 4 mm from the prediction (straight up; anything
  sideways is farther), and the 4 predicted voxels of k = 8 are 4 mm from the truth; the other
  40 are 0 mm. Pooled: 40 x 0 and 8 x 4 mm.
  HD95 = 95th percentile of 48 values = value at rank 0.95 x 47 = 44.65 of the sorted list, both
  neighbours (44, 45) are 4 mm -> 4.0 mm. ASSD = 8 x 4 / 48 = 2/3 mm. NSD at 2 mm = 40/48 = 5/6.
  Dice = 2 x 20 / 48 = 5/6.
- L2 moved one column right (i + 1, 0.8 mm). Truth i = 7..8, prediction i = 8..9; 24 voxels
  each, 12 shared. 12 voxels of each side are 0.8 mm from the other mask, 12 are 0 mm. Pooled:
  24 x 0 and 24 x 0.8 mm. HD95 = 0.8 mm (rank 44.65 lies among the 0.8s). ASSD = 0.4 mm.
  NSD at 2 mm = 1. Dice = 2 x 12 / 48 = 0.5.

Computed in voxels instead (spacing 1 x 1 x 1), L1 would read HD95 1, ASSD 1/6, NSD 1; and with
the spacing's axes reversed (4 x 0.8 x 0.8), L2 would read HD95 4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPACING_MM = (0.8, 0.8, 4.0)  # (i, j, k)
SHAPE = (12, 8, 12)  # (i, j, k) voxels
L1, L2 = 20, 21
TOLERANCE_MM = 2.0  # the NSD tolerance: evaluate's and the job pipeline's default


@dataclass(frozen=True)
class Expected:
    dice: float
    hd95_mm: float
    assd_mm: float
    nsd: float
    ref_voxels: int
    pred_voxels: int


EXPECTED = {
    L1: Expected(dice=5 / 6, hd95_mm=4.0, assd_mm=2 / 3, nsd=5 / 6, ref_voxels=24, pred_voxels=24),
    L2: Expected(dice=0.5, hd95_mm=0.8, assd_mm=0.4, nsd=1.0, ref_voxels=24, pred_voxels=24),
}


def ground_truth() -> np.ndarray:
    """uint8 labels, RAS (i, j, k): L1 and L2 as 2 x 2 x 6-voxel columns side by side."""
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[2:4, 3:5, 2:8] = L1
    labels[7:9, 3:5, 2:8] = L2
    return labels


def prediction() -> np.ndarray:
    """The ground truth with L1 one slice up (k + 1) and L2 one column right (i + 1)."""
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[2:4, 3:5, 3:9] = L1
    labels[8:10, 3:5, 2:8] = L2
    return labels


def image() -> np.ndarray:
    """int16 HU: air, a soft-tissue body, bone where the ground truth has vertebrae."""
    hu = np.full(SHAPE, -1000, dtype=np.int16)
    hu[1:-1, 1:-1, :] = 40
    hu[ground_truth() > 0] = 1200
    return hu
