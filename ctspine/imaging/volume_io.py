"""Reading NIfTI images and label maps as RAS+ arrays, and cheap header-only checks.

Every array returned here is in RAS+ voxel order (``nibabel.as_closest_canonical``): index i grows
toward the patient's Right, j toward Anterior, k toward Superior. Spacing is in mm, in that same
(i, j, k) order. Affines map RAS voxel indices to world (scanner RAS) coordinates in mm.

Gzip is decoded with ISA-L (``isal.igzip.decompress`` of the whole file, then ``np.frombuffer``
after the header), so the voxel data is never copied: faster than nibabel's stdlib-gzip load
(``bench/volume_store.py``) and than ``nibabel.Nifti1Image.from_bytes`` on the same decompressed
bytes (``bench/hand_written.py``).
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations
from nibabel.spatialimages import HeaderDataError

from ctspine.atomic import atomic_write
from ctspine.labels import MAX_LABEL

try:  # ISA-L is a declared dependency; the stdlib fallback only keeps a broken install readable.
    from isal import igzip as _gzip
    from isal.igzip_lib import IsalError as _DecodeError
except ImportError:  # pragma: no cover
    _gzip = gzip
    _DecodeError = zlib.error

GZIP_MAGIC = b"\x1f\x8b"
_NIFTI1_HEADER_BYTES = 348
_NIFTI2_HEADER_BYTES = 540
GRID_TOLERANCE_MM = 1e-3
# Header plus extensions: real files hold at most a few kB of extensions. A larger vox_offset is a
# hostile or broken header, and every reader would otherwise read (or inflate) up to it.
MAX_VOX_OFFSET_BYTES = 4 << 20
KINDS = ("image", "label")


class VolumeError(Exception):
    """A file that cannot be used as a volume; the message says why, in words a user understands."""


@dataclass(frozen=True)
class Volume:
    """A volume in RAS+ order.

    ``data`` has shape (X, Y, Z) in RAS+ voxel order (read-only view of the decoded bytes);
    ``affine`` maps RAS voxel indices to world mm; ``spacing`` is (i, j, k) voxel size in mm;
    ``original_axcodes`` is the file's own orientation, e.g. "LPS".
    """

    data: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    original_axcodes: str
    original_shape: tuple[int, int, int]


@dataclass(frozen=True)
class HeaderInfo:
    """What the header says, read without decoding the voxel data.

    ``shape``/``axcodes`` are as stored in the file; ``shape_ras``/``spacing_ras`` (mm) are after
    reorientation to RAS+. ``data_bytes`` is the uncompressed voxel payload the header implies.
    """

    path: Path
    shape: tuple[int, int, int]
    shape_ras: tuple[int, int, int]
    spacing_ras: tuple[float, float, float]
    axcodes: str
    dtype: str
    file_size: int
    compressed: bool
    vox_offset: int
    data_bytes: int
    affine_ras: np.ndarray  # RAS voxel indices -> world mm, as read_volume's would be


def _decompress(raw: bytes, *, path: Path) -> bytes:
    try:
        return _gzip.decompress(raw)
    except (EOFError, OSError, ValueError, zlib.error, _DecodeError) as exc:
        raise VolumeError(f"{path.name}: corrupt or truncated gzip data ({exc})") from exc


def _inflate_head(raw: bytes, *, path: Path) -> bytes:
    """The first bytes (a NIfTI-2 header's worth) of gzip data, inflating no more than that."""
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw, _NIFTI2_HEADER_BYTES)
    except zlib.error as exc:
        raise VolumeError(f"{path.name}: corrupt or truncated gzip data ({exc})") from exc


def _parse_header(block: bytes, *, path: Path) -> nib.Nifti1Header:
    """Parse a NIfTI-1 or NIfTI-2 single-file header from the first bytes of the file.

    Every reader goes through here, so the refusals that bound what reading costs live here: a
    ``vox_offset`` beyond :data:`MAX_VOX_OFFSET_BYTES`, and a voxel size of 0 that no qform or
    sform defines (nibabel would silently read it as 1 mm)."""
    if len(block) < 4:
        raise VolumeError(f"{path.name}: not a NIfTI file (only {len(block)} bytes)")
    sizes = {int.from_bytes(block[:4], "little"), int.from_bytes(block[:4], "big")}
    if _NIFTI1_HEADER_BYTES in sizes:
        header_class, nbytes = nib.Nifti1Header, _NIFTI1_HEADER_BYTES
    elif _NIFTI2_HEADER_BYTES in sizes:
        header_class, nbytes = nib.Nifti2Header, _NIFTI2_HEADER_BYTES
    else:
        raise VolumeError(f"{path.name}: not a NIfTI file (no NIfTI header size at the start)")
    if len(block) < nbytes:
        raise VolumeError(f"{path.name}: truncated NIfTI header ({len(block)} of {nbytes} bytes)")
    try:
        raw = header_class(binaryblock=block[:nbytes], check=False)
        _check_voxel_size(raw, path=path)
        header = header_class(binaryblock=block[:nbytes], check=True)
    except HeaderDataError as exc:
        raise VolumeError(f"{path.name}: not a valid NIfTI header ({exc})") from exc
    offset = int(header["vox_offset"])
    if offset > MAX_VOX_OFFSET_BYTES:
        raise VolumeError(
            f"{path.name}: the header puts the voxel data {offset} bytes into the file"
            f" (vox_offset); at most {MAX_VOX_OFFSET_BYTES} bytes of header and extensions are"
            " accepted"
        )
    magic = bytes(header["magic"])
    if magic.startswith(b"ni"):
        raise VolumeError(
            f"{path.name}: a .hdr/.img pair header; only single-file .nii(.gz) is supported"
        )
    if not magic.startswith(b"n+"):
        raise VolumeError(f"{path.name}: not a NIfTI file (magic {magic!r})")
    return header


def _check_voxel_size(header: nib.Nifti1Header, *, path: Path) -> None:
    """Refuse a zero voxel size (pixdim 1-3) when neither qform nor sform gives the geometry."""
    if int(header["qform_code"]) > 0 or int(header["sform_code"]) > 0:
        return
    pixdim = [float(v) for v in header["pixdim"][1:4]]
    if any(v == 0 or not np.isfinite(v) for v in pixdim):
        raise VolumeError(
            f"{path.name}: the voxel size is unknown: pixdim is"
            f" {' x '.join(f'{v:g}' for v in pixdim)} and neither a qform nor an sform is set;"
            " fix the header's voxel size (mm)"
        )


def _spatial_shape(header: nib.Nifti1Header, *, path: Path) -> tuple[int, int, int]:
    """The 3D shape; trailing singleton dimensions (X, Y, Z, 1) are dropped. Rejects 2D and 4D."""
    shape = tuple(int(n) for n in header.get_data_shape())
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise VolumeError(
            f"{path.name}: {len(shape)}D image of shape {shape}; a single 3D volume is required"
        )
    if len(shape) < 3 or min(shape) <= 1:
        raise VolumeError(f"{path.name}: 2D image of shape {shape}; a 3D volume is required")
    return shape


def _affine(header: nib.Nifti1Header, *, path: Path) -> np.ndarray:
    affine = np.asarray(header.get_best_affine(), dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise VolumeError(f"{path.name}: the header's voxel-to-world affine is degenerate")
    return affine


def _ras_geometry(
    shape: tuple[int, int, int], affine: np.ndarray
) -> tuple[tuple[int, int, int], tuple[float, float, float], str]:
    """Shape and spacing (mm) after reorientation to RAS+, and the original axis codes."""
    ornt = nib.orientations.io_orientation(affine)
    sizes = nib.affines.voxel_sizes(affine)
    shape_ras = [0, 0, 0]
    spacing_ras = [0.0, 0.0, 0.0]
    for axis, (target, _flip) in enumerate(ornt):
        shape_ras[int(target)] = shape[axis]
        spacing_ras[int(target)] = float(sizes[axis])
    axcodes = "".join(nib.orientations.ornt2axcodes(ornt))
    return tuple(shape_ras), tuple(spacing_ras), axcodes


def _read_head(path: Path, *, compressed: bool) -> bytes:
    opener = _gzip.open if compressed else open
    try:
        with opener(path, "rb") as handle:
            return handle.read(_NIFTI2_HEADER_BYTES)
    except (EOFError, OSError, zlib.error, _DecodeError) as exc:
        raise VolumeError(f"{path.name}: corrupt or truncated gzip data ({exc})") from exc


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def read_header_info(path: str | os.PathLike, *, check_truncation: bool = True) -> HeaderInfo:
    """Header facts of a ``.nii``/``.nii.gz`` without decoding the voxel data.

    Decompresses only the first few hundred bytes. With ``check_truncation`` (default) also runs
    :func:`check_truncation_of`. Raises :class:`VolumeError` for unreadable, non-NIfTI, 2D or 4D files.
    """
    path = Path(path)
    try:
        file_size = path.stat().st_size
        compressed = _is_gzip(path)
    except OSError as exc:
        raise VolumeError(f"{path.name}: cannot read file ({exc.strerror})") from exc
    header = _parse_header(_read_head(path, compressed=compressed), path=path)
    shape = _spatial_shape(header, path=path)
    affine = _affine(header, path=path)
    shape_ras, spacing_ras, axcodes = _ras_geometry(shape, affine)
    dtype = header.get_data_dtype()
    info = HeaderInfo(
        path=path,
        shape=shape,
        shape_ras=shape_ras,
        spacing_ras=spacing_ras,
        axcodes=axcodes,
        dtype=dtype.newbyteorder("=").name,
        file_size=file_size,
        compressed=compressed,
        vox_offset=int(header["vox_offset"]),
        data_bytes=int(np.prod(shape)) * dtype.itemsize,
        affine_ras=affine
        @ nib.orientations.inv_ornt_aff(nib.orientations.io_orientation(affine), shape),
    )
    if check_truncation:
        check_truncation_of(info)
    return info


def check_truncation_of(info: HeaderInfo) -> None:
    """Raise :class:`VolumeError` if the file is shorter than its header implies.

    For gzip, compares the trailer's ISIZE (last 4 bytes: uncompressed size mod 2**32) with
    ``vox_offset + voxels * itemsize`` mod 2**32, reading only the last 4 bytes. Multi-member
    (BGZF) files store only the last member's size there and are not checked this way; the full
    decode in :func:`read_volume` still detects their truncation.
    """
    expected = info.vox_offset + info.data_bytes
    with open(info.path, "rb") as handle:
        if not info.compressed:
            if info.file_size < expected:
                raise VolumeError(
                    f"{info.path.name}: truncated file: {info.file_size} bytes, the header implies"
                    f" {expected}"
                )
            return
        flags = handle.read(4)[3]
        if flags & 0x04:  # FEXTRA: possibly BGZF (multi-member); ISIZE is the last member's only
            return
        handle.seek(-4, os.SEEK_END)
        isize = int.from_bytes(handle.read(4), "little")
    if isize != expected % 2**32:
        raise VolumeError(
            f"{info.path.name}: truncated or damaged gzip file: its trailer says {isize} bytes"
            f" uncompressed, the header implies {expected}"
        )


def _scaled(data: np.ndarray, header: nib.Nifti1Header) -> np.ndarray:
    """Apply scl_slope/scl_inter, keeping integers when the result is integral and fits int16/32."""
    slope, inter = header.get_slope_inter()
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    if slope == 1.0 and inter == 0.0:
        return data if data.dtype.isnative else data.astype(data.dtype.newbyteorder("="))
    if data.dtype.kind in "iu" and slope.is_integer() and inter.is_integer():
        lo, hi = int(data.min()), int(data.max())
        ends = (lo * slope + inter, hi * slope + inter)
        for dtype in (np.int16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= min(ends) and max(ends) <= info.max:
                out = data.astype(dtype)
                if slope != 1.0:
                    out *= dtype(slope)
                out += dtype(inter)
                return out
    return (data.astype(np.float32) * np.float32(slope) + np.float32(inter)).astype(np.float32)


def decode_nifti(raw: bytes, *, path: Path) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    """Decode the bytes of a ``.nii`` or ``.nii.gz`` into (array in file order, affine, header).

    The array has the file's own axis order (not yet RAS) and is scaled by scl_slope/scl_inter.
    The header is checked before the rest of a gzip file is inflated.
    """
    if raw[:2] == GZIP_MAGIC:
        _parse_header(_inflate_head(raw, path=path), path=path)
        raw = _decompress(raw, path=path)
    header = _parse_header(raw[:_NIFTI2_HEADER_BYTES], path=path)
    shape = _spatial_shape(header, path=path)
    affine = _affine(header, path=path)
    dtype = header.get_data_dtype()
    if dtype.kind not in "iuf" or dtype.fields is not None:
        raise VolumeError(
            f"{path.name}: unsupported voxel data type {dtype} (need integer or float)"
        )
    offset = int(header["vox_offset"])
    count = int(np.prod(shape))
    if len(raw) < offset + count * dtype.itemsize:
        raise VolumeError(
            f"{path.name}: truncated voxel data: {len(raw) - offset} bytes after the header,"
            f" {count * dtype.itemsize} expected for shape {shape} {dtype}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape, order="F")
    return _scaled(data, header), affine, header


def to_ras(
    data: np.ndarray, *, affine: np.ndarray, header: nib.Nifti1Header | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Reorient (array, affine) to RAS+ with ``nibabel.as_closest_canonical`` (flips and
    transposes are views: no copy)."""
    header_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    image = header_class(data, affine, header=header)
    canonical = nib.as_closest_canonical(image)
    return np.asanyarray(canonical.dataobj), np.asarray(canonical.affine, dtype=np.float64)


def _ras_to_stored(volume: Volume) -> np.ndarray:
    """nibabel orientation transform from the RAS+ array axes to ``volume``'s stored axes."""
    return orientations.ornt_transform(
        orientations.axcodes2ornt(("R", "A", "S")),
        orientations.axcodes2ornt(tuple(volume.original_axcodes)),
    )


def to_stored_order(data: np.ndarray, *, like: Volume) -> np.ndarray:
    """A RAS+ array on ``like``'s grid in the voxel order the file stores (flips and
    transposes: a view, no copy)."""
    return orientations.apply_orientation(data, _ras_to_stored(like))


def from_stored_order(data: np.ndarray, *, like: Volume) -> np.ndarray:
    """Inverse of :func:`to_stored_order`: an array in ``like``'s stored voxel order, in RAS+."""
    back = orientations.ornt_transform(
        orientations.axcodes2ornt(tuple(like.original_axcodes)),
        orientations.axcodes2ornt(("R", "A", "S")),
    )
    return orientations.apply_orientation(data, back)


def stored_spacing(volume: Volume) -> tuple[float, float, float]:
    """Voxel size in mm along the file's stored axes (``volume.spacing`` is along RAS+ axes)."""
    spacing = [0.0, 0.0, 0.0]
    for ras_axis, (stored_axis, _flip) in enumerate(_ras_to_stored(volume)):
        spacing[int(stored_axis)] = volume.spacing[ras_axis]
    return tuple(spacing)


def stored_affine(volume: Volume) -> np.ndarray:
    """The affine of ``volume``'s grid for arrays in the file's stored voxel order."""
    return volume.affine @ orientations.inv_ornt_aff(_ras_to_stored(volume), volume.data.shape)


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each array axis of ``affine`` (column norms)."""
    return tuple(float(s) for s in nib.affines.voxel_sizes(affine))


def validate_labels(data: np.ndarray, *, path: Path) -> np.ndarray:
    """Return label values as uint8, raising :class:`VolumeError` unless all are integers 0-25."""
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or not np.array_equal(data, np.trunc(data)):
            raise VolumeError(f"{path.name}: label map has non-integer values")
    elif data.dtype.kind not in "iub":
        raise VolumeError(f"{path.name}: label map has unsupported data type {data.dtype}")
    # Unsigned maps cannot go below 0: skip that full pass (labels are read on every ingestion).
    hi = data.max()
    lo = 0 if data.dtype.kind in "ub" else data.min()
    if lo < 0 or hi > MAX_LABEL:
        raise VolumeError(
            f"{path.name}: label values must be 0-{MAX_LABEL} (0 background, 1-25 C1-L6);"
            f" found {lo:g} to {hi:g}"
        )
    return data if data.dtype == np.uint8 else data.astype(np.uint8)


def decode_file(path: Path) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    """:func:`decode_nifti` of the file at ``path``. The file is read into memory first, not
    memory-mapped: a source rewritten in place meanwhile (``cp`` over it) then reads as truncated
    instead of killing the process with SIGBUS."""
    return decode_nifti(read_bytes(path), path=path)


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise VolumeError(f"{path.name}: cannot read file ({exc.strerror})") from exc


def read_volume(path: str | os.PathLike, *, kind: str = "image") -> Volume:
    """Read a ``.nii``/``.nii.gz`` image (``kind="image"``) or label map (``kind="label"``) as RAS+.

    Images keep their stored integer type (HU for CT; scaled by scl_slope/scl_inter when set);
    label maps are validated (integers 0-25) and returned as uint8. Raises :class:`VolumeError`
    for corrupt or truncated files, non-NIfTI files, 2D or 4D images and invalid labels.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    path = Path(path)
    data, affine, header = decode_file(path)
    original_shape = data.shape
    _, _, axcodes = _ras_geometry(original_shape, affine)
    if kind == "label":
        data = validate_labels(data, path=path)
    data, affine = to_ras(data, affine=affine, header=header)
    return Volume(
        data=data,
        affine=affine,
        spacing=spacing_of(affine),
        original_axcodes=axcodes,
        original_shape=original_shape,
    )


def check_same_grid(
    *,
    image_shape: tuple[int, ...],
    image_affine: np.ndarray,
    label_shape: tuple[int, ...],
    label_affine: np.ndarray,
    tolerance_mm: float = GRID_TOLERANCE_MM,
) -> None:
    """Raise :class:`VolumeError` unless image and label share a voxel grid.

    Both are given in RAS+ (canonical) form. The grids match when shapes are equal and the world
    positions (mm) of the eight corner voxels differ by at most ``tolerance_mm``.
    """
    if tuple(image_shape) != tuple(label_shape):
        raise VolumeError(
            f"label grid {tuple(label_shape)} differs from image grid {tuple(image_shape)}"
        )
    corners = np.array(
        [
            [i, j, k, 1]
            for i in (0, image_shape[0] - 1)
            for j in (0, image_shape[1] - 1)
            for k in (0, image_shape[2] - 1)
        ],
        dtype=np.float64,
    )
    distance = np.abs(corners @ np.asarray(image_affine).T - corners @ np.asarray(label_affine).T)
    worst = float(distance[:, :3].max())
    if worst > tolerance_mm:
        raise VolumeError(
            f"label affine differs from the image affine by up to {worst:.4g} mm"
            f" (tolerance {tolerance_mm:g} mm)"
        )


def write_nifti(
    path: str | os.PathLike, data: np.ndarray, affine: np.ndarray, *, description: bytes = b""
) -> Path:
    """Write ``data`` (voxels in the order ``affine`` maps, world mm) as a gzipped NIfTI-1
    atomically (:func:`ctspine.atomic.atomic_write`): qform and sform code 1 (scanner), units mm,
    gzip level 1 with no name or time in its header, so the same array gives the same bytes."""
    path = Path(path)
    image = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    image.header.set_data_dtype(data.dtype)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = description

    def write(handle) -> None:
        with gzip.GzipFile(filename="", mode="wb", fileobj=handle, compresslevel=1, mtime=0) as gz:
            image.to_stream(gz)

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)
    return path
