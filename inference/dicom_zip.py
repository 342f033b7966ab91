"""A zip of one DICOM series, made safe and converted to NIfTI: pure Python, no Django.

:func:`extract_zip` refuses what a hostile or careless zip may hold (paths leaving the folder,
links, bombs, thousands of files) before and while it writes anything; :func:`dicom_series_to_nifti`
checks that the files are one evenly spaced series and converts it with SimpleITK, which keeps the
DICOM geometry (LPS) and writes it as the NIfTI affine (RAS). The series is held in memory once,
while it is converted, and only after its decoded size (rows x columns x slices x bytes, read
from the headers with bounded memory) passed the limits: DICOM's own compression (deflate, JPEG
2000) hides that size from the zip's, and a file whose header does not give it is refused, never
handed to SimpleITK unsized. The NIfTI is written by :func:`ctspine.imaging.volume_io.write_nifti`
(atomically). Refusals are :class:`inference.uploads.UploadError`.
"""

from __future__ import annotations

import re
import stat
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from struct import error as struct_error

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from ctspine.imaging.volume_io import write_nifti
from inference.uploads import MAX_VOXELS, IncomingFile, UploadError

# Files a zip tool or an operating system adds beside the images; skipped, not refused.
_ZIP_NOISE = re.compile(r"(^|/)(__MACOSX/|\.DS_Store$|Thumbs\.db$|desktop\.ini$|DICOMDIR$)")


@dataclass(frozen=True)
class ZipLimits:
    """What a DICOM zip may hold: ``max_files`` entries, at most ``max_expanded_bytes`` and at
    most ``max_ratio`` times its own size once extracted (zip bombs expand thousands of times);
    its series at most ``max_expanded_bytes`` and ``max_decoded_ratio`` times the zip's size once
    the pixels are decoded (lossless DICOM compression stays far below; a bomb does not)."""

    max_files: int = 5000
    max_expanded_bytes: int = 8 << 30
    max_ratio: float = 20.0
    max_decoded_ratio: float = 100.0


@dataclass(frozen=True)
class DicomFacts:
    """The DICOM series a zip held: number of slices, series description, modality."""

    files: int
    series_description: str
    modality: str
    warnings: tuple[str, ...] = field(default=())


# --- zip ------------------------------------------------------------------------------------------


def extract_zip(incoming: IncomingFile, destination: Path, *, limits: ZipLimits) -> dict[Path, str]:
    """Extract the files of a zip into ``destination`` (flat, numbered names), refusing unsafe ones.

    Refused before anything is written: absolute paths or ``..`` in entry names, symbolic links,
    encrypted entries, more than ``limits.max_files`` files, or a declared expanded size beyond the
    limits; while extracting, the bytes actually written are counted against the same limits (a
    zip may lie about its sizes). Operating-system clutter (``__MACOSX/``, ``.DS_Store``,
    ``DICOMDIR``) is skipped. Returns extracted path -> the entry's name in the zip.
    """
    try:
        archive = zipfile.ZipFile(incoming.path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadError(
            f"{incoming.name}: not a readable zip file ({exc})", field="image"
        ) from None
    with archive:
        entries = [info for info in archive.infolist() if not info.is_dir()]
        for info in entries:
            _check_entry(incoming, info)
        entries = [info for info in entries if not _ZIP_NOISE.search(info.filename)]
        if not entries:
            raise UploadError(f"{incoming.name}: the zip holds no files", field="image")
        if len(entries) > limits.max_files:
            raise UploadError(
                f"{incoming.name}: the zip holds {len(entries)} files; at most {limits.max_files}"
                " are accepted (one DICOM series)",
                field="image",
            )
        budget = _expansion_budget(incoming, limits)
        declared = sum(info.file_size for info in entries)
        if declared > budget:
            raise _too_expanded(incoming, declared, limits)
        destination.mkdir(parents=True, exist_ok=True)
        names: dict[Path, str] = {}
        written = 0
        for number, info in enumerate(entries):
            target = destination / f"{number:06d}"
            names[target] = info.filename
            try:
                with archive.open(info) as source, open(target, "wb") as sink:
                    while block := source.read(1 << 20):
                        written += len(block)
                        if written > budget:
                            raise _too_expanded(incoming, written, limits)
                        sink.write(block)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise UploadError(
                    f"{incoming.name}: {info.filename} cannot be extracted ({exc})", field="image"
                ) from None
    return names


def _check_entry(incoming: IncomingFile, info: zipfile.ZipInfo) -> None:
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise UploadError(
            f"{incoming.name}: entry {name!r} has an absolute path; refused", field="image"
        )
    if ".." in parts:
        raise UploadError(
            f"{incoming.name}: entry {name!r} points outside the archive (..); refused",
            field="image",
        )
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UploadError(
            f"{incoming.name}: entry {name!r} is a symbolic link; refused", field="image"
        )
    if info.flag_bits & 0x1:
        raise UploadError(
            f"{incoming.name}: entry {name!r} is encrypted; upload an unencrypted zip",
            field="image",
        )


def _expansion_budget(incoming: IncomingFile, limits: ZipLimits) -> int:
    size = incoming.path.stat().st_size
    return int(min(limits.max_expanded_bytes, limits.max_ratio * max(size, 1 << 20)))


def decoded_budget(incoming: IncomingFile, limits: ZipLimits) -> int:
    """The most bytes the series in the zip ``incoming`` may take once its pixels are decoded."""
    size = incoming.path.stat().st_size
    return int(min(limits.max_expanded_bytes, limits.max_decoded_ratio * max(size, 1 << 20)))


def _too_expanded(incoming: IncomingFile, size: int, limits: ZipLimits) -> UploadError:
    zipped = incoming.path.stat().st_size
    return UploadError(
        f"{incoming.name}: the zip would expand to {size / 2**20:.0f} MB, {size / max(zipped, 1):.0f}"
        f" times its own size; at most {limits.max_ratio:g} times and"
        f" {limits.max_expanded_bytes / 2**30:g} GB are accepted",
        field="image",
    )


# --- DICOM ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Slice:
    path: Path
    series: str
    description: str
    modality: str
    position: tuple[float, ...]
    orientation: tuple[float, ...]
    size: tuple[int, ...]


def dicom_series_to_nifti(
    files: dict[Path, str], output: Path, *, name: str, max_decoded_bytes: int
) -> DicomFacts:
    """Convert the DICOM files ``files`` (path -> name shown in messages) into one NIfTI image
    ``output`` (``.nii.gz``), written atomically, with the series geometry (LPS in DICOM, RAS in
    the NIfTI header, the affine SimpleITK's own NIfTI writer would give).

    Refused before any pixel is decoded: a series larger than ``max_decoded_bytes`` or
    :data:`inference.uploads.MAX_VOXELS` once decoded, or with a file whose size its header does
    not give (see :func:`check_decoded_size`). Refused
    then: files that are not DICOM images (named), several series (listed), slices with
    differing orientation or size, two slices at one position, unevenly spaced slices (a missing
    slice), multi-frame files. The slices are ordered along the slice normal, not by file name.
    """
    check_decoded_size(files, name=name, max_bytes=max_decoded_bytes)
    slices, not_images = [], []
    for path, shown in sorted(files.items(), key=lambda item: item[1]):
        found = _read_slice(path)
        if found is None:
            not_images.append(shown)
        else:
            slices.append(found)
    if not_images:
        listed = ", ".join(not_images[:5]) + (
            f" and {len(not_images) - 5} more" if len(not_images) > 5 else ""
        )
        raise UploadError(
            f"{name}: {len(not_images)} file(s) are not DICOM images: {listed}. The zip must"
            " hold the files of one DICOM series and nothing else",
            field="image",
        )
    series = _one_series(slices, name=name)
    ordered = _ordered_slices(series, name=name)
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames([str(s.path) for s in ordered])
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise UploadError(f"{name}: the DICOM series cannot be read ({_first_line(exc)})") from None
    if image.GetPixelID() == sitk.sitkFloat64:
        image = sitk.Cast(image, sitk.sitkFloat32)  # rescaled values; float32 holds HU exactly
    write_nifti(output, _voxels(image), _ras_affine(image))
    modality = ordered[0].modality
    warnings = ()
    if modality and modality != "CT":
        warnings = (f"The DICOM series has modality {modality}; the model expects CT.",)
    return DicomFacts(
        files=len(ordered),
        series_description=ordered[0].description,
        modality=modality,
        warnings=warnings,
    )


# The header of one DICOM file (every tag before the pixel data) must fit in this many bytes.
MAX_DICOM_HEADER_BYTES = 4 << 20
_PIXEL_DATA_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # pixel data: integer, float, double


@dataclass(frozen=True)
class _PixelSize:
    """What one file's pixels take once decoded, from its header; ``deflated``: the whole data
    set is one deflate stream (transfer syntax 1.2.840.10008.1.2.1.99)."""

    rows: int
    columns: int
    frames: int
    bytes_per_voxel: int
    deflated: bool

    @property
    def voxels(self) -> int:
        return self.rows * self.columns * self.frames

    @property
    def decoded_bytes(self) -> int:
        return self.voxels * self.bytes_per_voxel


def check_decoded_size(files: dict[Path, str], *, name: str, max_bytes: int) -> None:
    """Refuse a series whose pixels would take more than ``max_bytes`` or whose voxels are more
    than :data:`inference.uploads.MAX_VOXELS` once decoded: rows x columns x frames x bytes per
    voxel of every file, from the headers alone. Deflated files are then inflated in 1 MB steps
    and counted, all together against ``max_bytes`` (a deflate bomb need not sit in the pixels);
    never more than a few MB of a file is held.

    A file whose size cannot be read from its header is refused here, named with the reason (not
    a DICOM file, no ``DICM`` marker, a header beyond :data:`MAX_DICOM_HEADER_BYTES`, no Rows or
    Columns): SimpleITK would read it, and decode its pixels, whatever their size."""
    sizes: dict[Path, _PixelSize] = {}
    unsized: list[str] = []
    for path, shown in sorted(files.items(), key=lambda item: item[1]):
        size = _pixel_size(path)
        if isinstance(size, _PixelSize):
            sizes[path] = size
        else:
            unsized.append(f"{shown} ({size})")
    if unsized:
        listed = ", ".join(unsized[:5]) + (
            f" and {len(unsized) - 5} more" if len(unsized) > 5 else ""
        )
        raise UploadError(
            f"{name}: {len(unsized)} file(s) are not DICOM images whose size can be read from"
            f" their header: {listed}. The zip must hold the files of one DICOM series (DICOM"
            " files with the 'DICM' marker) and nothing else",
            field="image",
        )
    total = sum(size.decoded_bytes for size in sizes.values())
    voxels = sum(size.voxels for size in sizes.values())
    largest = max(sizes.values(), key=lambda size: size.rows * size.columns)
    described = (
        f"{len(sizes)} slices of up to {largest.rows} x {largest.columns} pixels"
        f" x {largest.bytes_per_voxel} bytes"
    )
    if voxels > MAX_VOXELS:
        raise UploadError(
            f"{name}: the DICOM series holds {described}: {voxels} voxels, more than the"
            f" {MAX_VOXELS} this server processes",
            field="image",
            status=413,
        )
    if total > max_bytes:
        raise UploadError(
            f"{name}: the DICOM series holds {described}: {total / 2**20:.0f} MB once decoded;"
            f" a zip of this size may hold at most {max_bytes / 2**20:.0f} MB of pixels",
            field="image",
            status=413,
        )
    inflated = 0
    for path in (path for path, size in sizes.items() if size.deflated):
        inflated += _inflated_size(path, limit=max_bytes - inflated)
        if inflated > max_bytes:
            raise UploadError(
                f"{name}: its deflated DICOM files inflate to more than"
                f" {max_bytes / 2**20:.0f} MB, the most a zip of this size may hold",
                field="image",
                status=413,
            )


_NOT_DICOM = "not a DICOM file: no 'DICM' marker at byte 128"
_HEADER_TOO_LARGE = (
    f"its header, the tags before the pixel data, is larger than"
    f" {MAX_DICOM_HEADER_BYTES >> 20} MB or cannot be read"
)
_HEADER_UNREADABLE = "its header cannot be read"
_NO_SIZE = "no image size (Rows, Columns) in its header"


def _pixel_size(path: Path) -> _PixelSize | str:
    """The decoded size of one DICOM file's pixels, or why it cannot be read from the header."""
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
    except (InvalidDicomError, OSError, ValueError, EOFError, struct_error):
        return _NOT_DICOM
    if meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        header = _deflated_header(path)
        if header is None:
            return _HEADER_TOO_LARGE
        return _size_from_header(header, deflated=True) or _NO_SIZE
    try:  # values over 1 MB (a private tag) are left in the file, not read
        header = pydicom.dcmread(path, stop_before_pixels=True, defer_size=1 << 20)
    except (InvalidDicomError, OSError, ValueError, EOFError, struct_error):
        return _HEADER_UNREADABLE
    return _size_from_header(header, deflated=False) or _NO_SIZE


def _inflate(path: Path) -> Iterator[bytes]:
    """The inflated data set of a deflated-syntax file, 1 MB at most at a time."""
    with open(path, "rb") as handle:
        handle.seek(128 + 4)
        group = handle.read(12)  # (0002,0000) UL: the length of the rest of the file meta
        if len(group) < 12:
            return
        handle.seek(128 + 4 + 12 + int.from_bytes(group[8:12], "little"))
        inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        while block := handle.read(1 << 16):
            while block:
                yield inflate.decompress(block, 1 << 20)
                block = inflate.unconsumed_tail


def _deflated_header(path: Path):
    """The tags before the pixel data of a deflated-syntax file, or None when they cannot be read
    or take more than :data:`MAX_DICOM_HEADER_BYTES` inflated."""
    head = b""
    reached_pixels = False

    def at_pixels(tag, vr, length) -> bool:
        nonlocal reached_pixels
        reached_pixels = reached_pixels or tag in _PIXEL_DATA_TAGS
        return reached_pixels

    try:
        for out in _inflate(path):
            head += out
            if len(head) > MAX_DICOM_HEADER_BYTES:
                break
        header = read_dataset(
            DicomBytesIO(head[:MAX_DICOM_HEADER_BYTES]),
            is_implicit_VR=False,
            is_little_endian=True,
            stop_when=at_pixels,
        )
    except (zlib.error, OSError, ValueError, EOFError, struct_error):
        return None
    if len(head) > MAX_DICOM_HEADER_BYTES and not reached_pixels:
        return None  # cut off: the tags went on past the limit
    return header


def _inflated_size(path: Path, *, limit: int) -> int:
    """Bytes the deflated file inflates to, counted up to just past ``limit``."""
    inflated = 0
    try:
        for out in _inflate(path):
            inflated += len(out)
            if inflated > limit:
                break
    except zlib.error:
        pass  # a corrupt stream: SimpleITK refuses the file with its own message
    return inflated


def _size_from_header(header, *, deflated: bool) -> _PixelSize | None:
    try:
        rows, columns = int(header.Rows), int(header.Columns)
        bits = int(header.get("BitsAllocated", 16))
        samples = int(header.get("SamplesPerPixel", 1))
        frames = int(header.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    return _PixelSize(rows, columns, frames, max(bits // 8, 1) * samples, deflated)


def _read_slice(path: Path) -> _Slice | None:
    """The geometry tags of one DICOM image file, or None when it is not a DICOM image."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None

    def tag(key: str) -> str:
        return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""

    def numbers(key: str) -> tuple[float, ...]:
        try:
            return tuple(float(v) for v in tag(key).split("\\") if v.strip())
        except ValueError:
            return ()

    position, orientation = numbers("0020|0032"), numbers("0020|0037")
    if len(position) != 3 or len(orientation) != 6:
        return None  # not an image slice (a structured report, a presentation state, ...)
    return _Slice(
        path=path,
        series=tag("0020|000e"),
        description=tag("0008|103e"),
        modality=tag("0008|0060"),
        position=position,
        orientation=orientation,
        size=tuple(reader.GetSize()),
    )


def _one_series(slices: list[_Slice], *, name: str) -> list[_Slice]:
    groups: dict[str, list[_Slice]] = {}
    for found in slices:
        groups.setdefault(found.series, []).append(found)
    if len(groups) > 1:
        listed = "; ".join(
            f"{uid or '(no series UID)'} '{members[0].description}' ({len(members)} files)"
            for uid, members in sorted(groups.items(), key=lambda item: -len(item[1]))
        )
        raise UploadError(
            f"{name}: the zip holds {len(groups)} DICOM series: {listed}. Upload one series per"
            " zip",
            field="image",
        )
    series = next(iter(groups.values()))
    first = series[0]
    if first.size[2:] and first.size[2] > 1:
        raise UploadError(
            f"{name}: multi-frame (enhanced) DICOM is not supported; export the series as one"
            " file per slice",
            field="image",
        )
    for other in series[1:]:
        if not np.allclose(other.orientation, first.orientation, atol=1e-4):
            raise UploadError(
                f"{name}: the slices have different orientations: more than one series?",
                field="image",
            )
        if other.size != first.size:
            raise UploadError(
                f"{name}: the slices have different sizes ({first.size[:2]} and"
                f" {other.size[:2]}): more than one series?",
                field="image",
            )
    if len(series) < 2:
        raise UploadError(
            f"{name}: a single DICOM slice is not a 3D volume; upload the whole series",
            field="image",
        )
    return series


def _ordered_slices(series: list[_Slice], *, name: str) -> list[_Slice]:
    """The slices sorted along the slice normal, checked to be evenly spaced."""
    row, column = np.array(series[0].orientation[:3]), np.array(series[0].orientation[3:])
    normal = np.cross(row, column)
    ordered = sorted(series, key=lambda s: float(np.dot(normal, s.position)))
    heights = np.array([float(np.dot(normal, s.position)) for s in ordered])
    gaps = np.diff(heights)
    if gaps.min() < 1e-3:
        raise UploadError(
            f"{name}: two files lie at the same slice position ({heights[np.argmin(gaps)]:.2f}"
            " mm along the slice normal): duplicate files or several series",
            field="image",
        )
    median = float(np.median(gaps))
    if np.abs(gaps - median).max() > max(0.02, 0.05 * median):
        raise UploadError(
            f"{name}: the slices are not evenly spaced (gaps from {gaps.min():.3g} to"
            f" {gaps.max():.3g} mm): slices are missing or several series are mixed",
            field="image",
        )
    return ordered


def _first_line(exc: Exception) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _voxels(image: sitk.Image) -> np.ndarray:
    """The voxels of ``image`` indexed [i, j, k] as its affine maps them (a view, not a copy)."""
    return sitk.GetArrayViewFromImage(image).transpose(2, 1, 0)


def _ras_affine(image: sitk.Image) -> np.ndarray:
    """The voxel -> world (RAS, mm) affine of ``image``, whose geometry SimpleITK gives in LPS:
    what SimpleITK's own NIfTI writer puts in the header."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array(image.GetSpacing(), dtype=float)
    affine[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
