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

Volumes are numpy arrays or anything sliced the same way that returns arrays (the volume store's
:class:`~ctspine.volume_store.StoredVolume`). They are read in blocks of whole k-slices, so a
stored volume is decoded block by block, once, without a full-size temporary.
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


def whole(volume, *, plane: str) -> Slab:
    """The slab covering the whole volume along ``plane``'s normal."""
    return _whole_axis(volume, NORMAL_AXIS[check_plane(plane)])


def _whole_axis(volume, axis: int) -> Slab:
    return Slab(start=0, stop=volume.shape[axis])


def _check_slab(volume, axis: int, slab: Slab) -> None:
    if not 0 <= slab.start < slab.stop <= volume.shape[axis]:
        raise ValueError(f"slab {slab.start}-{slab.stop} outside 0-{volume.shape[axis]}")


def _blocks(volumes: tuple, axis: int, slab: Slab):
    """Read the slab of each volume in ranges of whole k-slices: yields (k range relative to the
    slab, one decoded block per volume). A volume with a ``k_step`` (a compressed store) is read
    that many slices at a time, so each of its blocks is decoded once."""
    bounds = [slice(0, n) for n in volumes[0].shape]
    bounds[axis] = slice(slab.start, slab.stop)
    k0, k1 = bounds[2].start, bounds[2].stop
    plane_voxels = (bounds[0].stop - bounds[0].start) * (bounds[1].stop - bounds[1].start)
    step = getattr(volumes[0], "k_step", None) or max(1, _CHUNK_VOXELS // plane_voxels)
    for k in range(k0, k1, step):
        ks = slice(k, min(k1, k + step))
        blocks = tuple(np.asarray(volume[bounds[0], bounds[1], ks]) for volume in volumes)
        yield slice(ks.start - k0, ks.stop - k0), blocks


def _reduce(block: np.ndarray, mode: str, axis: int) -> np.ndarray:
    if mode == "mip":
        return block.max(axis=axis)
    if mode == "minip":
        return block.min(axis=axis)
    return block.sum(axis=axis, dtype=np.float64)


def _section_shape(volume, axis: int, slab: Slab) -> list[int]:
    shape = list(volume.shape)
    shape[axis] = slab.count
    del shape[axis]
    return shape


def _project_section(volume, *, axis: int, mode: str, slab: Slab) -> np.ndarray:
    """Projection as a RAS section (the two remaining axes in order), not yet display-oriented."""
    result = None
    for ks, (block,) in _blocks((volume,), axis, slab):
        part = _reduce(block, mode, axis)
        if axis != 2:  # every ray lies inside the block: fill its columns
            if result is None:
                result = np.empty(_section_shape(volume, axis, slab), dtype=part.dtype)
            result[:, ks] = part
        elif result is None:
            result = part
        elif mode == "mip":
            np.maximum(result, part, out=result)
        elif mode == "minip":
            np.minimum(result, part, out=result)
        else:
            result += part
    if mode == "mean":
        return (result / slab.count).astype(np.float32)
    return result


def project(volume, *, plane: str, mode: str = "mip", slab: Slab | None = None) -> np.ndarray:
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


def _labelled_section(image, labels, *, axis: int, mode: str, slab: Slab):
    """(intensity section, label section) as RAS sections, not yet display-oriented; one pass
    over the volumes, block by block."""
    best = out_labels = None
    for ks, (block, label_block) in _blocks((image, labels), axis, slab):
        part = _reduce(block, mode, axis)
        if mode == "mean":
            # coronal is seen from the front: the highest j is nearest
            part_labels = _nearest_labelled(label_block, axis, highest=axis == 1)
        else:  # the largest label among the voxels that produced the projected value
            target = np.expand_dims(part, axis)
            part_labels = np.where(block == target, label_block, 0).max(axis=axis)
        if axis != 2:  # every ray lies inside the block: fill its columns
            if best is None:
                shape = _section_shape(image, axis, slab)
                best = np.empty(shape, dtype=part.dtype)
                out_labels = np.empty(shape, dtype=np.uint8)
            best[:, ks], out_labels[:, ks] = part, part_labels
        elif best is None:
            best, out_labels = part, part_labels.astype(np.uint8)
        elif mode == "mean":  # ascending k: a label found earlier is nearer the feet
            best += part
            np.copyto(out_labels, part_labels, where=out_labels == 0)
        else:  # rays continue across blocks: merge with what earlier blocks found
            better = part > best if mode == "mip" else part < best
            tied = part == best
            np.copyto(out_labels, np.maximum(out_labels, part_labels), where=tied)
            np.copyto(out_labels, part_labels, where=better)
            np.copyto(best, part, where=better)
    if mode == "mean":
        best = (best / slab.count).astype(np.float32)
    return best, out_labels


def project_with_labels(
    image,
    labels,
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
