"""Building the catalog from a CTSpine1K download (called by ``manage.py ingest``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from ctspine.dataset.case_reader import CaseReading, file_identity, read_case
from ctspine.dataset.layout import CaseFiles, discover_case_ids, find_case_files, source_of
from ctspine.dataset.metadata import curated_anomalies, parse_path_csv, parse_split
from ctspine.labels import mask_of
from viewer.models import Case, VertebraStats

log = logging.getLogger(__name__)

METADATA_FIELDS = [
    "source",
    "split",
    "image_path",
    "label_path",
    "series_description",
    "scan_position",
    "slice_thickness_mm",
    "kernel",
    "curated_anomaly",
]


class IngestError(Exception):
    """The ingestion could not run at all (as opposed to one bad case)."""


@dataclass
class IngestSummary:
    ingested: int = 0
    unchanged: int = 0
    not_downloaded: int = 0
    failed: int = 0
    failures: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"{self.ingested} ingested, {self.unchanged} unchanged, "
            f"{self.not_downloaded} not downloaded, {self.failed} failed"
        )


@dataclass(frozen=True)
class CatalogEntry:
    """What the metadata files say about one case, before any image is opened."""

    case_id: str
    source: str
    split: str
    files: CaseFiles
    metadata: dict


def read_catalog(root: Path) -> list[CatalogEntry]:
    """Cases of the split plus any image found on disk, with their metadata from the download's
    ``data_split.txt`` and ``Path.csv`` and the curated anomaly lists."""
    root = Path(root)
    if not root.is_dir():
        raise IngestError(f"data root {root} does not exist or is not a directory")
    split_file, path_file = root / "data_split.txt", root / "Path.csv"
    split_of = parse_split(split_file) if split_file.exists() else {}
    series = parse_path_csv(path_file) if path_file.exists() else {}
    curated = {case_id: row.anomaly for case_id, row in curated_anomalies().items()}
    case_ids = sorted(set(split_of) | set(discover_case_ids(root)))
    entries = []
    for case_id in case_ids:
        try:
            source = source_of(case_id)
        except ValueError:
            log.warning("skipping %s: not a CTSpine1K case id", case_id)
            continue
        files = find_case_files(root, case_id)
        info = series.get(case_id)
        entries.append(
            CatalogEntry(
                case_id=case_id,
                source=source,
                split=split_of.get(case_id, ""),
                files=files,
                metadata={
                    "source": source,
                    "split": split_of.get(case_id, ""),
                    "image_path": files.image or files.expected_image,
                    "label_path": files.label or "",
                    "series_description": info.series_description if info else "",
                    "scan_position": info.scan_position if info else "",
                    "slice_thickness_mm": info.slice_thickness_mm if info else None,
                    "kernel": info.kernel if info else "",
                    "curated_anomaly": curated.get(case_id, ""),
                },
            )
        )
    return entries


def ingest(
    root: Path,
    *,
    workers: int = 1,
    metadata_only: bool = False,
    label_stats: bool = True,
    progress: Callable[[Iterable], Iterable] = lambda items: items,
) -> IngestSummary:
    """Catalog every case of ``root``. Unchanged files (same size and mtime) are skipped; each bad
    case stores its error and the run goes on. ``progress`` wraps the iterator of finished cases
    (a tqdm bar in the command)."""
    root = Path(root).resolve()
    entries = read_catalog(root)
    summary = IngestSummary()
    _save_metadata(entries)
    if metadata_only:
        summary.not_downloaded = len(entries)
        return summary

    existing = {case.case_id: case for case in Case.objects.all()}
    to_read = []
    for entry in entries:
        if entry.files.image is None:
            summary.not_downloaded += 1
            _mark_not_downloaded(existing[entry.case_id])
        elif _unchanged(existing[entry.case_id], entry.files, root, label_stats):
            summary.unchanged += 1
        else:
            to_read.append(entry)

    for reading in progress(_read_all(root, to_read, workers=workers, label_stats=label_stats)):
        _save_reading(existing[reading.case_id], reading)
        if reading.error:
            summary.failed += 1
            summary.failures[reading.case_id] = reading.error
        else:
            summary.ingested += 1
    return summary


def _read_all(root: Path, entries: list[CatalogEntry], *, workers: int, label_stats: bool):
    if workers <= 1 or len(entries) <= 1:
        for entry in entries:
            yield read_case(root, entry.files, label_stats=label_stats)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(read_case, root, entry.files, label_stats=label_stats) for entry in entries
        ]
        for future in futures:
            yield future.result()


def _save_metadata(entries: list[CatalogEntry]) -> None:
    rows = [Case(case_id=e.case_id, **e.metadata) for e in entries]
    with transaction.atomic():
        Case.objects.bulk_create(
            rows,
            batch_size=500,
            update_conflicts=True,
            unique_fields=["case_id"],
            update_fields=METADATA_FIELDS,
        )


def _unchanged(case: Case, files: CaseFiles, root: Path, label_stats: bool) -> bool:
    if not case.downloaded or case.error or case.image_mtime_ns is None:
        return False
    if label_stats and files.label and not case.label_stats_done:
        return False
    try:
        image = file_identity(root / files.image)
        label = file_identity(root / files.label) if files.label else None
    except OSError:
        return False
    same_image = (image.bytes, image.mtime_ns) == (case.image_bytes, case.image_mtime_ns)
    same_label = (label is None and not case.has_label) or (
        label is not None
        and (label.bytes, label.mtime_ns) == (case.label_bytes, case.label_mtime_ns)
    )
    return same_image and same_label


def _mark_not_downloaded(case: Case) -> None:
    if case.downloaded or case.error:
        case.downloaded = False
        case.error = ""
        case.save(update_fields=["downloaded", "error"])


@transaction.atomic
def _save_reading(case: Case, reading: CaseReading) -> None:
    case.downloaded = reading.downloaded
    case.error = reading.error
    case.ingested_at = timezone.now()
    for name, value in reading.geometry.items():
        setattr(case, name, value)
    if reading.image_identity:
        case.image_bytes = reading.image_identity.bytes
        case.image_mtime_ns = reading.image_identity.mtime_ns
    case.has_label = reading.label_identity is not None
    if reading.label_identity:
        case.label_bytes = reading.label_identity.bytes
        case.label_mtime_ns = reading.label_identity.mtime_ns
    if reading.error:
        # An error invalidates what we knew: the next run must read the case again.
        case.image_mtime_ns = None
    case.vertebrae.all().delete()
    summary = reading.labels
    case.label_stats_done = summary is not None
    case.vertebra_mask = mask_of(summary.values) if summary else 0
    case.lumbar_count = summary.lumbar_count if summary else None
    case.last_vertebra = summary.last_vertebra if summary else None
    case.label_anomaly = summary.anomaly if summary else ""
    case.save()
    if summary:
        VertebraStats.objects.bulk_create(
            VertebraStats(
                case=case,
                label=v.label,
                voxel_count=v.voxel_count,
                volume_cm3=v.volume_cm3,
                centroid_x=v.centroid_mm[0],
                centroid_y=v.centroid_mm[1],
                centroid_z=v.centroid_mm[2],
                z_min_mm=v.z_min_mm,
                z_max_mm=v.z_max_mm,
            )
            for v in summary.vertebrae
        )
