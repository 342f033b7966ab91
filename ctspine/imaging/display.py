"""The display convention: how a RAS+ volume becomes 2D tiles, and how tile pixels map back.

For a RAS+ array ``v[i, j, k]`` of shape (X, Y, Z) (i toward patient Right, j Anterior,
k Superior), following radiological convention:

- axial tile (index k), seen from the feet, patient's right on the viewer's left, anterior up:
  ``tile[r, c] = v[X-1-c, Y-1-r, k]``
- coronal tile (index j), seen from the front, patient's right on the left, superior up:
  ``tile[r, c] = v[X-1-c, j, Z-1-r]``
- sagittal tile (index i), seen from the patient's left, anterior on the left, superior up:
  ``tile[r, c] = v[i, Y-1-c, Z-1-r]``

In all three, the 2D section ``s`` (the two remaining RAS axes in order) is shown as
``s[::-1, ::-1].T``: :func:`to_display`. Rows are ``r`` (y, down), columns ``c`` (x, right).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PLANES = ("axial", "coronal", "sagittal")
#: The RAS axis each plane's slice index runs along (its normal).
NORMAL_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}


@dataclass(frozen=True)
class TilePosition:
    """A voxel as seen on one plane: slice ``index`` and tile pixel (``col`` = x, ``row`` = y)."""

    plane: str
    index: int
    col: int
    row: int


@dataclass(frozen=True)
class PixelSpacing:
    """Physical size of one tile pixel in mm: ``col_mm`` across (x), ``row_mm`` down (y)."""

    col_mm: float
    row_mm: float


def check_plane(plane: str) -> str:
    """Return ``plane`` if it is "axial", "coronal" or "sagittal"; ValueError otherwise."""
    if plane not in NORMAL_AXIS:
        raise ValueError(f"unknown plane {plane!r}: use one of {', '.join(PLANES)}")
    return plane


def slice_count(shape: tuple[int, ...], *, plane: str) -> int:
    """Number of slices of a RAS+ volume of ``shape`` (X, Y, Z) along ``plane``'s normal."""
    return int(shape[NORMAL_AXIS[check_plane(plane)]])


def check_index(shape: tuple[int, ...], *, plane: str, index: int) -> int:
    """Return ``index`` as int if it is a valid slice index for ``plane``; ValueError otherwise."""
    count = slice_count(shape, plane=plane)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise ValueError(f"slice index must be an integer, not {index!r}")
    if not 0 <= index < count:
        raise ValueError(f"{plane} slice index {index} out of range 0-{count - 1}")
    return int(index)


def tile_shape(shape: tuple[int, ...], *, plane: str) -> tuple[int, int]:
    """(rows, cols) of a ``plane`` tile of a RAS+ volume of ``shape`` (X, Y, Z)."""
    x, y, z = shape[:3]
    return {"axial": (y, x), "coronal": (z, x), "sagittal": (z, y)}[check_plane(plane)]


def pixel_spacing(spacing: tuple[float, float, float], *, plane: str) -> PixelSpacing:
    """Tile pixel size in mm for RAS voxel ``spacing`` (i, j, k) mm: (column mm, row mm)."""
    sx, sy, sz = (float(s) for s in spacing)
    col, row = {"axial": (sx, sy), "coronal": (sx, sz), "sagittal": (sy, sz)}[check_plane(plane)]
    return PixelSpacing(col_mm=col, row_mm=row)


def to_display(section: np.ndarray) -> np.ndarray:
    """Display orientation of a 2D section (or projection) whose axes are the two remaining RAS
    axes in increasing order (e.g. (i, k) for coronal); a view, no copy."""
    return section[::-1, ::-1].T


def section(volume: np.ndarray, *, plane: str, index: int) -> np.ndarray:
    """The 2D RAS section of a RAS+ volume at ``index`` along ``plane``'s normal (a view)."""
    index = check_index(volume.shape, plane=plane, index=index)
    axis = NORMAL_AXIS[plane]
    return volume[(slice(None),) * axis + (index,)]


def slice_tile(volume: np.ndarray, *, plane: str, index: int) -> np.ndarray:
    """The ``plane`` tile at slice ``index`` of a RAS+ volume, in display orientation (a view)."""
    return to_display(section(volume, plane=plane, index=index))


def tile_to_voxel(
    *, shape: tuple[int, ...], plane: str, index: int, col: int, row: int
) -> tuple[int, int, int]:
    """RAS voxel (i, j, k) shown at tile pixel (``col`` = x, ``row`` = y) of ``plane`` slice
    ``index``; ValueError when outside the volume."""
    index = check_index(shape, plane=plane, index=index)
    rows, cols = tile_shape(shape, plane=plane)
    if not (0 <= col < cols and 0 <= row < rows):
        raise ValueError(f"pixel ({col}, {row}) outside the {plane} tile of {cols} x {rows}")
    x, y, z = shape[:3]
    if plane == "axial":
        return (x - 1 - col, y - 1 - row, index)
    if plane == "coronal":
        return (x - 1 - col, index, z - 1 - row)
    return (index, y - 1 - col, z - 1 - row)


def voxel_to_tiles(
    *, shape: tuple[int, ...], voxel: tuple[int, int, int]
) -> dict[str, TilePosition]:
    """Where RAS voxel (i, j, k) appears on each plane: {plane: TilePosition}, for the crosshair."""
    x, y, z = shape[:3]
    i, j, k = (int(v) for v in voxel)
    if not (0 <= i < x and 0 <= j < y and 0 <= k < z):
        raise ValueError(f"voxel {voxel} outside the volume of shape {tuple(shape[:3])}")
    return {
        "axial": TilePosition(plane="axial", index=k, col=x - 1 - i, row=y - 1 - j),
        "coronal": TilePosition(plane="coronal", index=j, col=x - 1 - i, row=z - 1 - k),
        "sagittal": TilePosition(plane="sagittal", index=i, col=y - 1 - j, row=z - 1 - k),
    }


def voxel_to_world(
    *, affine: np.ndarray, voxel: tuple[float, float, float]
) -> tuple[float, float, float]:
    """World (scanner RAS) position in mm of RAS voxel (i, j, k) under the RAS+ ``affine``."""
    point = np.asarray(affine, dtype=np.float64) @ np.array([*voxel, 1.0])
    return (float(point[0]), float(point[1]), float(point[2]))
