"""Intensity projections (MIP, MinIP, mean) along a plane's normal, and the labels to overlay on them.

Inputs are RAS+ volumes (X, Y, Z); outputs are 2D tiles in the same display orientation as slices
(see :mod:`.display`). A projection covers the whole volume or a slab of voxel indices
``[start, stop)`` along the normal, usually made from a centre index and a thickness in mm with
:func:`slab_range`.

Label rule (documented choice): for ``mip`` and ``minip`` each tile pixel gets the label of the
voxel that produced its intensity (the arg-max / arg-min along the ray; when several voxels tie,
the largest label among them), so a label is drawn exactly where the shown bright bone belongs to
a vertebra. For
``mean``, which has no single source voxel, it gets the labelled voxel nearest to the viewer along
the ray (axial seen from the feet: lowest k; coronal seen from the front: highest j; sagittal
seen from the patient's left: lowest i).

The volume is read in chunks of whole k-slices, so memmapped volumes stored slice by slice (the
volume cache's layout) stream through memory once without a full-size temporary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .display import NORMAL_AXIS, check_plane, to_display

MODES = ("mip", "minip", "mean")
_CHUNK_VOXELS = 1 << 22  # ~8 MB of int16 per chunk: large enough to amortise numpy call overhead


@dataclass(frozen=True)
class Slab:
    """Voxel index range ``[start, stop)`` along a plane's normal axis."""

    start: int
    stop: int

    @property
    def count(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class LabelledProjection:
    """A projection tile and the label tile to overlay on it (both in display orientation)."""

    tile: np.ndarray
    labels: np.ndarray
    slab: Slab


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is "mip", "minip" or "mean"; ValueError otherwise."""
    if mode not in MODES:
        raise ValueError(f"unknown projection {mode!r}: use one of {', '.join(MODES)}")
    return mode


def slab_range(*, count: int, spacing_mm: float, center: int, thickness_mm: float) -> Slab:
    """Slices covering ``thickness_mm`` around slice ``center`` along an axis of ``count`` slices
    spaced ``spacing_mm`` apart, clipped to the volume. At least one slice; an even number of
    slices extends one further toward higher indices."""
    if not 0 <= center < count:
        raise ValueError(f"slab centre {center} out of range 0-{count - 1}")
    if not thickness_mm > 0:
        raise ValueError(f"slab thickness must be > 0 mm, not {thickness_mm:g}")
    n = max(1, int(round(thickness_mm / spacing_mm)))
    start = center - (n - 1) // 2
    return Slab(start=max(0, start), stop=min(count, start + n))


def whole(volume: np.ndarray, *, plane: str) -> Slab:
    """The slab covering the whole volume along ``plane``'s normal."""
    return _whole_axis(volume, NORMAL_AXIS[check_plane(plane)])


def _whole_axis(volume: np.ndarray, axis: int) -> Slab:
    return Slab(start=0, stop=volume.shape[axis])


def _check_slab(volume: np.ndarray, axis: int, slab: Slab) -> None:
    if not 0 <= slab.start < slab.stop <= volume.shape[axis]:
        raise ValueError(f"slab {slab.start}-{slab.stop} outside 0-{volume.shape[axis]}")


def _k_chunks(shape: tuple[int, int, int]):
    step = max(1, _CHUNK_VOXELS // (shape[0] * shape[1]))
    for k0 in range(0, shape[2], step):
        yield slice(k0, min(shape[2], k0 + step))


def _restrict(volume: np.ndarray, axis: int, slab: Slab) -> np.ndarray:
    return volume[(slice(None),) * axis + (slice(slab.start, slab.stop),)]


def _reduce(block: np.ndarray, mode: str, axis: int) -> np.ndarray:
    if mode == "mip":
        return block.max(axis=axis)
    if mode == "minip":
        return block.min(axis=axis)
    return block.sum(axis=axis, dtype=np.float64)


def _project_section(volume: np.ndarray, *, axis: int, mode: str, slab: Slab) -> np.ndarray:
    """Projection as a RAS section (the two remaining axes in order), not yet display-oriented."""
    sub = _restrict(volume, axis, slab)
    if axis == 2:
        result = None
        for ks in _k_chunks(sub.shape):
            part = _reduce(sub[:, :, ks], mode, 2)
            if result is None:
                result = part
            elif mode == "mip":
                np.maximum(result, part, out=result)
            elif mode == "minip":
                np.minimum(result, part, out=result)
            else:
                result += part
    else:
        shape = tuple(n for a, n in enumerate(sub.shape) if a != axis)
        dtype = np.float64 if mode == "mean" else sub.dtype
        result = np.empty(shape, dtype=dtype)
        for ks in _k_chunks(sub.shape):
            result[:, ks] = _reduce(sub[:, :, ks], mode, axis)
    if mode == "mean":
        return (result / slab.count).astype(np.float32)
    return result


def project(
    volume: np.ndarray, *, plane: str, mode: str = "mip", slab: Slab | None = None
) -> np.ndarray:
    """Project a RAS+ ``volume`` along ``plane``'s normal over ``slab`` (default: whole volume).

    Returns a display-oriented tile (like :func:`.display.slice_tile`); MIP/MinIP keep the input
    dtype (HU for CT), mean is float32.
    """
    axis = NORMAL_AXIS[check_plane(plane)]
    check_mode(mode)
    slab = slab or whole(volume, plane=plane)
    _check_slab(volume, axis, slab)
    return np.ascontiguousarray(
        to_display(_project_section(volume, axis=axis, mode=mode, slab=slab))
    )


def _nearest_labelled(labels: np.ndarray, axis: int, highest: bool) -> np.ndarray:
    """Label of the non-zero voxel with the lowest (or ``highest``) index along ``axis``; 0 where
    the ray has none. Vectorised: positions of labelled voxels reduced with min/max."""
    count = labels.shape[axis]
    shape = [1, 1, 1]
    shape[axis] = count
    positions = np.arange(count, dtype=np.int32).reshape(shape)
    missing = -1 if highest else count
    where = np.where(labels != 0, positions, np.int32(missing))
    nearest = (
        where.max(axis=axis, keepdims=True) if highest else where.min(axis=axis, keepdims=True)
    )
    found = nearest != missing
    picked = np.take_along_axis(labels, np.where(found, nearest, 0), axis=axis)
    return np.where(found, picked, 0).squeeze(axis).astype(np.uint8)


def _labelled_section(
    image: np.ndarray, labels: np.ndarray, *, axis: int, mode: str, slab: Slab
) -> tuple[np.ndarray, np.ndarray]:
    """(intensity section, label section) as RAS sections, not yet display-oriented."""
    image = _restrict(image, axis, slab)
    labels = _restrict(labels, axis, slab)
    best = _project_section(image, axis=axis, mode=mode, slab=_whole_axis(image, axis))
    out_labels = np.zeros(best.shape, dtype=np.uint8)
    if mode == "mean":
        highest = axis == 1  # coronal is seen from the front: the highest j is nearest
        for ks in _k_chunks(image.shape):  # ascending k: for axial the first found is nearest
            part = _nearest_labelled(labels[:, :, ks], axis, highest=highest)
            if axis == 2:
                np.copyto(out_labels, part, where=out_labels == 0)
            else:
                out_labels[:, ks] = part
        return best, out_labels
    # Two streaming passes instead of an arg-max (numpy's arg-max along an outer axis copies):
    # the projection first, then the largest label among voxels equal to it. The comparison
    # target keeps the block's memory order: a mismatched one walks memory out of order.
    fortran = image.strides[0] < image.strides[2]
    whole_target = np.asarray(best, order="F" if fortran else "C")[:, :, None]
    reduce = np.max if mode == "mip" else np.min
    for ks in _k_chunks(image.shape):
        block = image[:, :, ks]
        target = whole_target if axis == 2 else reduce(block, axis=axis, keepdims=True)
        source = np.where(block == target, labels[:, :, ks], 0).max(axis=axis)
        if axis == 2:
            np.maximum(out_labels, source, out=out_labels)
        else:
            out_labels[:, ks] = source
    return best, out_labels


def project_with_labels(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    plane: str,
    mode: str = "mip",
    slab: Slab | None = None,
) -> LabelledProjection:
    """Project a RAS+ image and its label map (same shape) along ``plane``'s normal.

    The label tile follows the module's label rule (source voxel for MIP/MinIP, nearest labelled
    voxel for mean). Both tiles are display-oriented and C-contiguous.
    """
    axis = NORMAL_AXIS[check_plane(plane)]
    check_mode(mode)
    if image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} differ in shape")
    slab = slab or whole(image, plane=plane)
    _check_slab(image, axis, slab)
    tile, label_tile = _labelled_section(image, labels, axis=axis, mode=mode, slab=slab)
    return LabelledProjection(
        tile=np.ascontiguousarray(to_display(tile)),
        labels=np.ascontiguousarray(to_display(label_tile)),
        slab=slab,
    )
