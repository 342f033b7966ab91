"""Per-vertebra statistics of a label volume, and what the labels imply about anomalies.

Input arrays are in RAS+ voxel order (i: right, j: anterior, k: superior) with their canonical
affine; positions are returned in mm in RAS+ world coordinates, volumes in cm³.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ctspine.labels import L6, LUMBAR_LABELS, MAX_LABEL

L4, L5 = 23, 24
# A missing L5 only hints at sacralization when the image goes on at least this far below L4:
# otherwise the field of view may simply end there.
SACRALIZATION_MARGIN_MM = 40.0


@dataclass(frozen=True)
class VertebraSummary:
    label: int
    voxel_count: int
    volume_cm3: float
    centroid_mm: tuple[float, float, float]  # RAS+ world
    z_min_mm: float  # inferior extent, world S coordinate of the lowest voxel centre
    z_max_mm: float


@dataclass(frozen=True)
class LabelSummary:
    vertebrae: list[VertebraSummary]
    lumbar_count: int
    last_vertebra: int | None  # the most caudal label value present
    anomaly: str  # "lumbarization", "sacralization" or "" (a hint from the labels, see below)

    @property
    def values(self) -> list[int]:
        return [v.label for v in self.vertebrae]


class LabelValueError(ValueError):
    pass


def summarize_labels(labels: np.ndarray, affine: np.ndarray) -> LabelSummary:
    """Voxel counts, volumes, centroids and S-extents per label 1-25 of a RAS+ label volume.

    The anomaly hint: ``lumbarization`` when label 25 (L6) is present; ``sacralization`` when L4
    is labelled, L5 is not, and the volume extends at least ``SACRALIZATION_MARGIN_MM`` below
    L4 (so a cut field of view is not mistaken for a fused L5). Raises LabelValueError for
    values outside 0-25.
    """
    if labels.ndim != 3:
        raise LabelValueError(f"label volume must be 3D, got shape {labels.shape}")
    if labels.dtype.kind == "f":
        if not np.array_equal(labels, np.round(labels)):
            raise LabelValueError("label volume holds non-integer values")
        labels = labels.astype(np.int16)
    # max() and find_objects are single passes in C; a bincount would first widen every voxel
    # to intp (8x the memory traffic).
    labels = _as_index_array(labels)
    # One reduction gives both the value check and the slices holding labels (for the boxes).
    per_slice = labels.max(axis=(0, 1)) if labels.size else np.zeros(0, labels.dtype)
    highest = int(per_slice.max()) if per_slice.size else 0
    if highest > MAX_LABEL:
        bad = sorted(set(np.unique(labels[labels > MAX_LABEL])[:5].tolist()))
        raise LabelValueError(f"label values outside 0-25 found: {', '.join(map(str, bad))}")
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    voxel_cm3 = float(np.prod(spacing)) / 1000.0
    vertebrae = []
    for value, box in enumerate(_label_boxes(labels, per_slice), start=1):
        if box is None:
            continue
        ii, jj, kk = np.nonzero(labels[box] == value)
        offset = np.array([s.start for s in box], dtype=float)
        centre_vox = np.array([ii.mean(), jj.mean(), kk.mean()]) + offset
        centroid = affine[:3, :3] @ centre_vox + affine[:3, 3]
        # canonical affines are diagonal up to small obliquity: S extent from the k bounds
        z_ends = [
            affine[2, :3] @ (centre_vox[0], centre_vox[1], k) + affine[2, 3]
            for k in (box[2].start, box[2].stop - 1)
        ]
        vertebrae.append(
            VertebraSummary(
                label=value,
                voxel_count=int(ii.size),
                volume_cm3=round(ii.size * voxel_cm3, 4),
                centroid_mm=tuple(round(float(c), 3) for c in centroid),
                z_min_mm=round(float(min(z_ends)), 3),
                z_max_mm=round(float(max(z_ends)), 3),
            )
        )
    present = {v.label for v in vertebrae}
    volume_z_min = float(affine[2, 3] + min(0.0, affine[2, 2] * (labels.shape[2] - 1)))
    return LabelSummary(
        vertebrae=vertebrae,
        lumbar_count=sum(1 for v in LUMBAR_LABELS if v in present),
        last_vertebra=max(present) if present else None,
        anomaly=_anomaly_hint(vertebrae, present, volume_z_min),
    )


def _label_boxes(
    labels: np.ndarray, per_slice: np.ndarray
) -> list[tuple[slice, slice, slice] | None]:
    """Bounding box of each label 1-25 (None if absent), in voxel slices of ``labels``.

    The spine fills a small part of a CT, so the foreground box is found first with two max
    reductions and find_objects runs on that crop only, not over the whole volume. ``per_slice``
    is the maximum label of each k slice.
    """
    ks = np.flatnonzero(per_slice)
    if ks.size == 0:
        return [None] * MAX_LABEL
    k0, k1 = int(ks[0]), int(ks[-1]) + 1
    footprint = labels[:, :, k0:k1].max(axis=2)
    ii, jj = np.nonzero(footprint)
    i0, i1, j0, j1 = int(ii.min()), int(ii.max()) + 1, int(jj.min()), int(jj.max()) + 1
    crop = labels[i0:i1, j0:j1, k0:k1]
    # Canonical arrays are usually views of NIfTI's Fortran-order data: copying the transposed
    # crop walks memory in order, unlike a C-order copy of the strided view.
    transposed = crop.T if not crop.flags["C_CONTIGUOUS"] else None
    if transposed is not None:
        boxes = [
            None if b is None else b[::-1]
            for b in ndimage.find_objects(np.ascontiguousarray(transposed), max_label=MAX_LABEL)
        ]
    else:
        boxes = ndimage.find_objects(crop, max_label=MAX_LABEL)
    return [
        None
        if box is None
        else (
            slice(box[0].start + i0, box[0].stop + i0),
            slice(box[1].start + j0, box[1].stop + j0),
            slice(box[2].start + k0, box[2].stop + k0),
        )
        for box in boxes
    ]


def _anomaly_hint(vertebrae, present: set[int], volume_z_min: float) -> str:
    if L6 in present:
        return "lumbarization"
    if L4 in present and L5 not in present:
        l4 = next(v for v in vertebrae if v.label == L4)
        if l4.z_min_mm - volume_z_min >= SACRALIZATION_MARGIN_MM:
            return "sacralization"
    return ""


def _as_index_array(labels: np.ndarray) -> np.ndarray:
    """Labels as an unsigned integer array, refusing negative values."""
    if labels.dtype.kind == "u":
        return labels
    if labels.size and labels.min() < 0:
        raise LabelValueError(f"label values outside 0-25 found: {int(labels.min())}")
    return labels.astype(np.uint16 if labels.max() < 65536 else np.int64, copy=False)
