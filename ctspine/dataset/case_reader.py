"""Reading one case of a download for the catalog: headers, grid checks, label statistics.

Runs in ingestion worker processes, so it takes plain values and returns a plain dataclass; every
known failure becomes a readable ``error`` string instead of an exception, so one bad case never
stops a run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ctspine.dataset.layout import CaseFiles, PathOutsideRoot, resolve_inside
from ctspine.imaging import volume_io
from ctspine.imaging.label_stats import LabelSummary, LabelValueError, summarize_labels

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileIdentity:
    bytes: int
    mtime_ns: int


@dataclass
class CaseReading:
    case_id: str
    downloaded: bool
    image_identity: FileIdentity | None = None
    label_identity: FileIdentity | None = None
    geometry: dict = field(default_factory=dict)  # Case model field -> value
    labels: LabelSummary | None = None
    error: str = ""


def file_identity(path: Path) -> FileIdentity:
    stat = os.stat(path)
    return FileIdentity(bytes=stat.st_size, mtime_ns=stat.st_mtime_ns)


def read_case(root: Path, files: CaseFiles, *, label_stats: bool) -> CaseReading:
    """Headers of the image and label of one case (without decoding the image voxels), the grid
    check between them and, if ``label_stats``, the per-vertebra statistics of the label."""
    reading = CaseReading(case_id=files.case_id, downloaded=files.image is not None)
    if files.image is None:
        return reading
    try:
        _read_into(reading, Path(root), files, label_stats=label_stats)
    except (volume_io.VolumeError, LabelValueError, PathOutsideRoot) as exc:
        reading.error = str(exc)
    except OSError as exc:
        # The message reaches users: the file relative to the root and the reason, no server path.
        logger.warning("case %s: could not read its files", files.case_id, exc_info=True)
        reading.error = (
            f"could not read {_shown(root, exc.filename)}: {exc.strerror or type(exc).__name__}"
        )
    return reading


def _shown(root: Path, filename) -> str:
    """How a message names a file: relative to the data root, else by its name alone."""
    if not filename:
        return "the files"
    path = Path(os.fsdecode(filename))
    for base in (Path(root).resolve(), Path(root)):
        if path.is_relative_to(base):
            return str(path.relative_to(base))
    return path.name


def _read_into(reading: CaseReading, root: Path, files: CaseFiles, *, label_stats: bool) -> None:
    image_path = resolve_inside(root, files.image)
    reading.image_identity = file_identity(image_path)
    image = volume_io.read_header_info(image_path)
    reading.geometry = {
        "dim_x": image.shape_ras[0],
        "dim_y": image.shape_ras[1],
        "dim_z": image.shape_ras[2],
        "spacing_x": round(float(image.spacing_ras[0]), 5),
        "spacing_y": round(float(image.spacing_ras[1]), 5),
        "spacing_z": round(float(image.spacing_ras[2]), 5),
        "axis_codes": image.axcodes,
        "dtype": image.dtype,
    }
    if files.label is None:
        return
    label_path = resolve_inside(root, files.label)
    reading.label_identity = file_identity(label_path)
    label = volume_io.read_header_info(label_path)
    volume_io.check_same_grid(
        image_shape=image.shape_ras,
        image_affine=image.affine_ras,
        label_shape=label.shape_ras,
        label_affine=label.affine_ras,
    )
    if label_stats:
        volume = volume_io.read_volume(label_path, kind="label")
        reading.labels = summarize_labels(volume.data, volume.affine)
