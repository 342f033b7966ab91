"""The official on-disk layout of a CTSpine1K download and how case ids map to sources.

Images live under ``data/<folder>/<case>.nii.gz`` and labels under
``label/<folder>/<case>_seg.nii.gz``; the folder names are the published ones, typos included
(``conlon``, ``Liver``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

IMAGE_DIR = "data"
LABEL_DIR = "label"
IMAGE_SUFFIX = ".nii.gz"
LABEL_SUFFIX = "_seg.nii.gz"

#: The 1,005 cases of CTSpine1K come from these four sub-datasets.
DATASET_SOURCES = ("COLONOG", "HNSCC-3DCT-RT", "MSD-T10", "COVID-19")
#: ... and the optional Test_VerSe set from VerSe.
SOURCES = (*DATASET_SOURCES, "VerSe")

# source -> (image folders, label folders), first one is the published spelling.
FOLDERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "COLONOG": (("colon",), ("conlon", "colon")),
    "HNSCC-3DCT-RT": (("HNSCC-3DCT-RT_neck",), ("HNSCC-3DCT-RT_neck",)),
    "MSD-T10": (("liver", "Liver"), ("Liver", "liver")),
    "COVID-19": (("COVID-19",), ("COVID-19",)),
    "VerSe": (("Verse", "verse"), ("Verse", "verse")),
}


def source_of(case_id: str) -> str:
    """The source sub-dataset of a case id, from the published id patterns."""
    if case_id.startswith(("1.3.6.1.4.1.9328.50.4.", "CTC-")):
        return "COLONOG"
    if case_id.startswith("HN_"):
        return "HNSCC-3DCT-RT"
    if case_id.startswith("liver_"):
        return "MSD-T10"
    if case_id.startswith("volume-covid19-"):
        return "COVID-19"
    if case_id.lower().startswith("verse"):
        return "VerSe"
    raise ValueError(f"case id {case_id!r} matches no CTSpine1K source")


def case_id_from_filename(name: str) -> str:
    """``liver_106.nii.gz`` -> ``liver_106``; ``liver_106_seg.nii.gz`` -> ``liver_106``."""
    name = name.strip()
    if name.endswith(LABEL_SUFFIX):
        return name[: -len(LABEL_SUFFIX)]
    if name.endswith(IMAGE_SUFFIX):
        return name[: -len(IMAGE_SUFFIX)]
    raise ValueError(f"{name!r} is not a .nii.gz file name")


class PathOutsideRoot(ValueError):
    pass


def resolve_inside(root: Path, relative: str | os.PathLike) -> Path:
    """``root / relative`` with symlinks resolved; PathOutsideRoot if it leaves ``root`` (its
    message names ``relative`` only, never an absolute path)."""
    root = Path(root).resolve()
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        # The message reaches users (tiles, case errors): it names no server path.
        raise PathOutsideRoot(
            f"{relative} leads outside the data root (a symbolic link or '..' points elsewhere)"
        )
    return candidate


def image_path(source: str, case_id: str) -> str:
    """Where a case's image is in the official layout (published folder spelling), relative to
    the dataset root: ``data/<folder>/<case>.nii.gz``."""
    return f"{IMAGE_DIR}/{FOLDERS[source][0][0]}/{case_id}{IMAGE_SUFFIX}"


def label_path(source: str, case_id: str) -> str:
    """Where a case's label is in the official layout (published folder spelling), relative to
    the dataset root: ``label/<folder>/<case>_seg.nii.gz``."""
    return f"{LABEL_DIR}/{FOLDERS[source][1][0]}/{case_id}{LABEL_SUFFIX}"


@dataclass(frozen=True)
class CaseFiles:
    case_id: str
    source: str
    image: str | None  # path relative to the root, None if absent on disk
    label: str | None
    expected_image: str  # where the image would be in the official layout


def find_case_files(root: Path, case_id: str) -> CaseFiles:
    """Locate a case's image and label in the official layout (any published folder spelling)."""
    source = source_of(case_id)
    image_folders, label_folders = FOLDERS[source]
    image = _first_existing(
        root, [f"{IMAGE_DIR}/{f}/{case_id}{IMAGE_SUFFIX}" for f in image_folders]
    )
    label = _first_existing(
        root, [f"{LABEL_DIR}/{f}/{case_id}{LABEL_SUFFIX}" for f in label_folders]
    )
    return CaseFiles(
        case_id=case_id,
        source=source,
        image=image,
        label=label,
        expected_image=image_path(source, case_id),
    )


def _first_existing(root: Path, candidates: list[str]) -> str | None:
    for relative in candidates:
        # lexists: a symlink pointing outside the root must still be found, so it can be refused.
        if os.path.lexists(Path(root) / relative):
            return relative
    return None


def discover_case_ids(root: Path) -> list[str]:
    """Case ids of every image under ``data/`` whose folder belongs to a known source."""
    known = {folder for image_folders, _ in FOLDERS.values() for folder in image_folders}
    found = []
    data = Path(root) / IMAGE_DIR
    if not data.is_dir():
        return found
    for folder in sorted(p for p in data.iterdir() if p.is_dir() and p.name in known):
        for entry in sorted(folder.iterdir()):
            if entry.name.endswith(IMAGE_SUFFIX):
                found.append(case_id_from_filename(entry.name))
    return found
