"""Checking uploaded CT files before any job is queued: pure Python, no Django.

An upload is a NIfTI image (``.nii`` or ``.nii.gz``) or a ``.zip`` of one DICOM series, with an
optional NIfTI label map (CTSpine1K values 0-25 on the image grid). Everything here works on
files already on disk, streaming through them in chunks so that no volume is ever held in memory
whole. Every refusal is an :class:`UploadError` whose message names the user's file and says what
is wrong. Zips of DICOM series are unpacked and converted by :mod:`inference.dicom_zip`.

Geometry is reported as :mod:`ctspine.imaging.volume_io` does: shape and spacing (mm) in RAS+
order after reorientation, the affine mapping RAS voxel indices to world mm, and the stored
orientation as axis codes ("LPS").
"""

from __future__ import annotations

import re
import shutil
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ctspine.imaging.volume_io import (
    GZIP_MAGIC,
    HeaderInfo,
    VolumeError,
    check_same_grid,
    read_header_info,
)
from ctspine.labels import MAX_LABEL

try:  # ISA-L streams gzip faster than the standard library (NOTES.md); same interface.
    from isal import igzip as _gzip
    from isal.igzip_lib import IsalError as _DecodeError
except ImportError:  # pragma: no cover
    import gzip as _gzip

    _DecodeError = zlib.error

ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
# Voxel sizes outside this range (mm) are header mistakes, not scans.
MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 20.0
MAX_VOXELS = 2048**3 // 4  # 2 Gi voxels: far beyond any CT, well before memory runs out
CHUNK_BYTES = 16 << 20
# CT in Hounsfield units shows air around the patient at about -1000 HU; a scan with nothing
# darker than this is most likely another modality (MR, PET) or not in HU.
CT_AIR_THRESHOLD_HU = -200.0
CT_PLAUSIBLE_RANGE_HU = (-10000.0, 40000.0)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class UploadError(Exception):
    """An upload that cannot be used. ``field`` is the form field at fault ("image", "label") or
    None; ``status`` the HTTP status an API gives it (400, or 413 for a size limit)."""

    def __init__(self, message: str, *, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status


@dataclass(frozen=True)
class IncomingFile:
    """A file received from a user: where it lies on disk and the name the user gave it."""

    path: Path
    name: str


@dataclass(frozen=True)
class IntensitySummary:
    """Intensities of a whole image after scl_slope/scl_inter (HU for CT)."""

    minimum: float
    maximum: float
    mean: float
    voxels: int


@dataclass(frozen=True)
class ImageFacts:
    """What the checks found out about an image. ``shape``/``spacing_mm`` are RAS+ (mm);
    ``affine`` maps RAS voxel indices to world mm; ``warnings`` are sentences for the user."""

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    affine: np.ndarray
    axcodes: str
    dtype: str
    compressed: bool
    intensity: IntensitySummary
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelFacts:
    """Label values (1-25) present in a label map that passed the checks."""

    values: tuple[int, ...]


# --- file names and kinds -------------------------------------------------------------------------


def safe_file_name(name: str, *, default: str = "upload") -> str:
    """A user's file name reduced to ``[A-Za-z0-9._-]`` (no path, no leading dot), for messages and
    Content-Disposition; never a path component that could leave its folder."""
    base = re.split(r"[\\/]", name or "")[-1]
    cleaned = _SAFE_NAME.sub("_", base).strip("._")[:120]
    return cleaned or default


def sniff_kind(incoming: IncomingFile, *, field: str = "image") -> str:
    """ "nifti" (plain or gzip-compressed) or "zip", from the first bytes, not the file name."""
    with open(incoming.path, "rb") as handle:
        head = handle.read(4)
    if head[:2] == GZIP_MAGIC:
        return "nifti"
    if head in (ZIP_MAGIC, EMPTY_ZIP_MAGIC):
        return "zip"
    if len(head) == 4 and {int.from_bytes(head, "little"), int.from_bytes(head, "big")} & {
        348,
        540,
    }:
        return "nifti"
    raise UploadError(
        f"{incoming.name}: neither a NIfTI file (.nii, .nii.gz) nor a .zip of one DICOM series",
        field=field,
    )


def nifti_file_name(stem: str, incoming: IncomingFile) -> str:
    """``stem.nii.gz`` or ``stem.nii``, as the content is compressed or not."""
    with open(incoming.path, "rb") as handle:
        compressed = handle.read(2) == GZIP_MAGIC
    return f"{stem}.nii.gz" if compressed else f"{stem}.nii"


def _volume_error(exc: VolumeError, incoming: IncomingFile, field: str) -> UploadError:
    """A VolumeError about our stored copy, reworded to name the user's file."""
    message = str(exc).removeprefix(f"{incoming.path.name}: ")
    return UploadError(f"{incoming.name}: {message}", field=field)


# --- NIfTI ------------------------------------------------------------------------------------


def read_header(incoming: IncomingFile, *, field: str) -> HeaderInfo:
    """Header-only checks: NIfTI magic and header, 3D, not truncated, sane spacing and size."""
    try:
        info = read_header_info(incoming.path)
    except VolumeError as exc:
        raise _volume_error(exc, incoming, field) from None
    spacing = info.spacing_ras
    if not all(np.isfinite(s) and MIN_SPACING_MM <= s <= MAX_SPACING_MM for s in spacing):
        raise UploadError(
            f"{incoming.name}: voxel size {' x '.join(f'{s:.4g}' for s in spacing)} mm is not a"
            f" plausible CT spacing ({MIN_SPACING_MM:g}-{MAX_SPACING_MM:g} mm per axis); the"
            " header's pixdim or affine is probably wrong",
            field=field,
        )
    if int(np.prod(info.shape)) > MAX_VOXELS:
        raise UploadError(
            f"{incoming.name}: {' x '.join(map(str, info.shape))} voxels is too large to process",
            field=field,
        )
    return info


def iter_voxels(incoming: IncomingFile, info: HeaderInfo, *, field: str) -> Iterator[np.ndarray]:
    """The voxel values in file order, scaled by scl_slope/scl_inter, a chunk (~16 MB) at a time.

    Reads the file once from start to end (gzip trailer included, so its CRC is verified) and
    raises UploadError for corrupt or truncated data.
    """
    proxy = nib.load(incoming.path).dataobj
    dtype = np.dtype(proxy.dtype)
    if dtype.kind not in "iuf" or dtype.fields is not None:
        raise UploadError(
            f"{incoming.name}: unsupported voxel data type {dtype} (need integers or floats)",
            field=field,
        )
    slope, inter = _scaling(proxy)
    opener = _gzip.open if info.compressed else open
    chunk = max(CHUNK_BYTES // dtype.itemsize, 1) * dtype.itemsize
    try:
        with opener(incoming.path, "rb") as handle:
            if len(handle.read(info.vox_offset)) < info.vox_offset:
                raise EOFError("file ends inside the header")
            remaining = info.data_bytes
            while remaining:
                block = handle.read(min(chunk, remaining))
                if len(block) % dtype.itemsize or not block:
                    raise EOFError(f"{remaining} bytes of voxel data missing")
                remaining -= len(block)
                values = np.frombuffer(block, dtype=dtype)
                if slope != 1.0 or inter != 0.0:
                    values = values.astype(np.float32) * np.float32(slope) + np.float32(inter)
                yield values
            while handle.read(CHUNK_BYTES):  # to the end: the gzip CRC is checked there
                pass
    except (EOFError, OSError, ValueError, zlib.error, _DecodeError) as exc:
        raise UploadError(
            f"{incoming.name}: corrupt or truncated file ({exc})", field=field
        ) from None


def _scaling(proxy) -> tuple[float, float]:
    slope, inter = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    return slope, inter


def check_image(incoming: IncomingFile) -> ImageFacts:
    """Check an uploaded NIfTI image: a real 3D NIfTI with a plausible spacing, whose voxel data
    decodes completely. Intensities that do not look like CT give warnings, not errors."""
    info = read_header(incoming, field="image")
    lo, hi, total, count = np.inf, -np.inf, 0.0, 0
    for values in iter_voxels(incoming, info, field="image"):
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            raise UploadError(f"{incoming.name}: holds NaN or infinite values", field="image")
        lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
        total += float(values.sum(dtype=np.float64))
        count += values.size
    intensity = IntensitySummary(minimum=lo, maximum=hi, mean=total / count, voxels=count)
    return ImageFacts(
        shape=info.shape_ras,
        spacing_mm=tuple(float(s) for s in info.spacing_ras),
        affine=info.affine_ras,
        axcodes=info.axcodes,
        dtype=info.dtype,
        compressed=info.compressed,
        intensity=intensity,
        warnings=ct_warnings(intensity),
    )


def ct_warnings(intensity: IntensitySummary) -> tuple[str, ...]:
    """Sentences for the user when the intensities do not look like CT in Hounsfield units."""
    warnings = []
    if intensity.minimum > CT_AIR_THRESHOLD_HU:
        warnings.append(
            f"The darkest voxel is {intensity.minimum:.0f}, but a CT in Hounsfield units shows air"
            " at about -1000 HU: this may be an MR or another modality, or not in HU. The model"
            " was trained on CT, so its result may be meaningless."
        )
    low, high = CT_PLAUSIBLE_RANGE_HU
    if intensity.minimum < low or intensity.maximum > high:
        warnings.append(
            f"Intensities range from {intensity.minimum:.4g} to {intensity.maximum:.4g}, far"
            " outside the Hounsfield scale of CT."
        )
    return tuple(warnings)


def check_label(incoming: IncomingFile, *, image: ImageFacts) -> LabelFacts:
    """Check an uploaded ground-truth label map: NIfTI, on the image's voxel grid (shape and
    affine within 1e-3 mm, after reorientation to RAS+), integer values 0-25."""
    info = read_header(incoming, field="label")
    try:
        check_same_grid(
            image_shape=image.shape,
            image_affine=image.affine,
            label_shape=info.shape_ras,
            label_affine=info.affine_ras,
        )
    except VolumeError as exc:
        raise UploadError(
            f"{incoming.name}: does not lie on the image's voxel grid: {exc}", field="label"
        ) from None
    present = np.zeros(MAX_LABEL + 1, dtype=bool)
    lo, hi, fractional = np.inf, -np.inf, False
    for values in iter_voxels(incoming, info, field="label"):
        if values.dtype.kind == "f":
            if not np.all(np.isfinite(values)) or not np.array_equal(values, np.trunc(values)):
                fractional = True
        lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
        if lo >= 0 and hi <= MAX_LABEL and not fractional:
            present[np.unique(values.astype(np.uint8))] = True
    if fractional:
        raise UploadError(f"{incoming.name}: label map has non-integer values", field="label")
    if lo < 0 or hi > MAX_LABEL:
        raise UploadError(
            f"{incoming.name}: label values must be 0-{MAX_LABEL} (0 background, 1-25 C1-L6);"
            f" found {lo:g} to {hi:g}",
            field="label",
        )
    return LabelFacts(values=tuple(int(v) for v in np.flatnonzero(present) if v))


def move_into(incoming: IncomingFile, target: Path) -> None:
    """Move a received file to ``target`` (same file system: a rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(incoming.path, target)
