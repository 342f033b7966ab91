"""The metadata of a CTSpine1K download (``data_split.txt``, ``Path.csv``) and the curated
transitional-vertebra lists published with the dataset: their names, parsers and writers."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ctspine.dataset.layout import case_id_from_filename

SPLITS = ("train", "test_public", "test_private")
#: The section header of each split in ``data_split.txt`` (without its colon).
SPLIT_HEADERS = {"train": "trainset", "test_public": "test_public", "test_private": "test_private"}
_SPLIT_OF_SECTION = {f"{header}:": split for split, header in SPLIT_HEADERS.items()}
#: Transitional vertebrae: an L6 above the sacrum, or L5 fused into it.
ANOMALIES = ("lumbarization", "sacralization")
#: Patient position of a scan, from its series description in ``Path.csv``.
POSITIONS = ("prone", "supine")
ANOMALY_LIST = Path(__file__).resolve().with_name("anomalies.csv")


class MetadataError(ValueError):
    pass


def parse_split(path: Path) -> dict[str, str]:
    """``data_split.txt`` -> {case_id: split}; CRLF and blank lines tolerated."""
    split_of: dict[str, str] = {}
    section = None
    text = Path(path).read_text(encoding="utf-8-sig")
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line in _SPLIT_OF_SECTION:
            section = _SPLIT_OF_SECTION[line]
            continue
        if section is None:
            raise MetadataError(f"{path}:{number}: {line!r} comes before any split section")
        try:
            split_of[case_id_from_filename(line)] = section
        except ValueError as exc:
            raise MetadataError(f"{path}:{number}: {exc}") from exc
    return split_of


@dataclass(frozen=True)
class SeriesInfo:
    series_description: str
    scan_position: str  # "prone", "supine" or ""
    slice_thickness_mm: float | None
    kernel: str


_THICKNESS = re.compile(r"(?:\s(\d+\.\d+)(?=\s|$)|\b(\d+(?:\.\d+)?)\s*MM\b)", re.IGNORECASE)
_KERNEL = re.compile(r"\b([BDI]\d{2}[a-z])\b")
_PRONE = re.compile(r"pron|prne", re.IGNORECASE)
_SUPINE = re.compile(r"supi|\bsup\b", re.IGNORECASE)


def parse_series_description(description: str) -> SeriesInfo:
    """``4.000000-Coloprone  1.0  B30f-0.4.2`` -> prone, 1.0 mm, B30f (whatever is present).

    The leading ``4.000000-`` is the series number, not a thickness, so it is cut off first.
    """
    text = description.split("-", 1)[1] if "-" in description else ""
    position = "prone" if _PRONE.search(text) else "supine" if _SUPINE.search(text) else ""
    thickness = _THICKNESS.search(text)
    kernel = _KERNEL.search(text)
    return SeriesInfo(
        series_description=description,
        scan_position=position,
        slice_thickness_mm=float(thickness.group(1) or thickness.group(2)) if thickness else None,
        kernel=kernel.group(1) if kernel else "",
    )


def parse_path_csv(path: Path) -> dict[str, SeriesInfo]:
    """``Path.csv`` (``CASE/STUDY/SERIES`` per line, no header) -> {case_id: SeriesInfo}."""
    series: dict[str, SeriesInfo] = {}
    for raw in Path(path).read_text(encoding="utf-8-sig").splitlines():
        line = raw.strip().strip('"')
        if not line:
            continue
        parts = line.split("/")
        if len(parts) < 3:
            continue
        series[parts[0]] = parse_series_description(parts[-1])
    return series


@dataclass(frozen=True)
class CuratedAnomaly:
    """A row of the published transitional-vertebra lists (``anomalies.csv``)."""

    case_id: str
    source: str  # one of layout.SOURCES; VerSe rows belong to the separate Test_VerSe set
    anomaly: str  # "lumbarization" or "sacralization"
    split: str  # "train", "test_public", "test_private", or "" (VerSe rows)


@cache
def curated_anomalies() -> dict[str, CuratedAnomaly]:
    """The published transitional-vertebra lists, by case id (parsed once per process)."""
    with open(ANOMALY_LIST, newline="") as handle:
        rows = list(csv.DictReader(handle))
    split_of_header = {header: split for split, header in SPLIT_HEADERS.items()}
    return {
        row["case_id"]: CuratedAnomaly(
            case_id=row["case_id"],
            source=row["source"],
            anomaly=row["anomaly"],
            split=split_of_header[row["split"]] if row["split"] else "",
        )
        for row in rows
    }
