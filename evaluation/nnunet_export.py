"""Writing the dataset in nnU-Net v2's raw format (pure: no Django).

``Dataset<ID>_<NAME>/`` receives:

- ``imagesTr/<case>_0000.nii.gz`` + ``labelsTr/<case>.nii.gz`` for the train split;
- ``imagesTs/<case>_0000.nii.gz`` for test_public and test_private, their ground truth apart in
  ``labelsTs/<case>.nii.gz`` (nnU-Net never reads it; ``manage.py evaluate`` does);
- ``dataset.json`` (channel 0 = CT, labels background + C1 ... L6 = 0 ... 25, ``numTraining``,
  ``file_ending``), which ``nnUNetv2_plan_and_preprocess --verify_dataset_integrity`` accepts;
- ``test_splits.json``: ``{"train": [...], "test_public": [...], "test_private": [...]}``, case
  identifiers as nnU-Net names them (no channel suffix, no file ending), in the JSON-lists-of-ids
  form of nnU-Net's ``splits_final.json``, so scripts can pick each test split's predictions.

Files are linked by default (a hard link on the same file system, else a symlink) so that
150 GB are not copied; ``copy=True`` copies. Exporting again into the same folder replaces the
export: files of cases no longer exported are removed, so ``numTraining`` always matches.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ctspine.atomic import atomic_write
from ctspine.dataset.metadata import SPLITS
from ctspine.labels import LABELS

CHANNEL_SUFFIX = "_0000"
FILE_ENDING = ".nii.gz"
FOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
SPLITS_FILE = "test_splits.json"
# nnU-Net finds a dataset by the "Dataset%03d_" prefix of its folder name; the name itself
# must stay one path component without spaces for its command-line tools.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ExportCase:
    """One case to export: its official split and the absolute paths of its files."""

    case_id: str
    split: str  # train, test_public, test_private
    image: Path
    label: Path | None


@dataclass
class ExportSummary:
    """What an export did. ``skipped``: case id -> reason (a short phrase, the same for every
    case skipped for that reason); ``removed``: stale files of an earlier export deleted."""

    folder: Path
    exported: dict[str, int] = field(default_factory=dict)  # split -> cases
    linked: int = 0  # files hard-linked or symlinked
    symlinked: int = 0  # of those, symlinks (another file system)
    copied: int = 0
    removed: int = 0
    skipped: dict[str, str] = field(default_factory=dict)


def dataset_folder(out: Path, *, dataset_id: int, name: str) -> Path:
    """``out/Dataset<ID>_<NAME>``; ValueError for an id outside 1-999 or an unusable name."""
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"--dataset-id must be 1-999, got {dataset_id}")
    if not NAME_PATTERN.match(name):
        raise ValueError(
            f"--name {name!r}: use letters, digits, '_', '-' and '.', starting with a letter or digit"
        )
    return Path(out) / f"Dataset{dataset_id:03d}_{name}"


def dataset_json(*, num_training: int, name: str) -> dict:
    """nnU-Net v2's dataset.json: labels are consecutive integers from background = 0."""
    return {
        "name": name,
        "description": "CTSpine1K vertebra segmentation, exported by the CTSpine1K viewer",
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{label.name: label.value for label in LABELS}},
        "numTraining": num_training,
        "file_ending": FILE_ENDING,
        "license": "see the CTSpine1K dataset and its sources (TCIA, MSD, COVID-19)",
    }


def export_dataset(
    cases: Iterable[ExportCase],
    *,
    out: Path,
    dataset_id: int,
    name: str,
    copy: bool = False,
    progress: Callable[[Iterable[ExportCase]], Iterable[ExportCase]] | None = None,
) -> ExportSummary:
    """Write the nnU-Net raw folder for ``cases`` under ``out``; returns what was done.

    Cases outside the official split, training cases without a label and cases whose files
    have gone are skipped with a reason. ``progress`` may wrap the case iterable (a tqdm bar).
    Raises ValueError for a bad ``dataset_id`` or ``name``.
    """
    folder = dataset_folder(Path(out), dataset_id=dataset_id, name=name)
    summary = ExportSummary(folder=folder)
    for name_ in FOLDERS:  # all four, even empty: nnU-Net asserts imagesTr and labelsTr exist
        (folder / name_).mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[str]] = {split: [] for split in SPLITS}
    written: set[Path] = set()
    cases = list(cases)
    for case in progress(cases) if progress else cases:
        reason = _why_skip(case)
        if reason is not None:
            summary.skipped[case.case_id] = reason
            continue
        for source, target in _targets(case, folder):
            _place(source, target, copy, summary)
            written.add(target)
        splits[case.split].append(case.case_id)
    summary.removed = _remove_stale(folder, written)
    for split, ids in splits.items():
        summary.exported[split] = len(ids)
    _write_json(folder / "dataset.json", dataset_json(num_training=len(splits["train"]), name=name))
    _write_json(folder / SPLITS_FILE, {split: sorted(ids) for split, ids in splits.items()})
    return summary


def _why_skip(case: ExportCase) -> str | None:
    if case.split not in SPLITS:
        return "not in the official split"
    if case.split == "train" and case.label is None:
        return "training case without a label file"
    if not case.image.is_file() or (case.label is not None and not case.label.is_file()):
        return "file missing on disk since ingestion"
    return None


def _targets(case: ExportCase, folder: Path) -> list[tuple[Path, Path]]:
    images, labels = ("imagesTr", "labelsTr") if case.split == "train" else ("imagesTs", "labelsTs")
    targets = [(case.image, folder / images / f"{case.case_id}{CHANNEL_SUFFIX}{FILE_ENDING}")]
    if case.label is not None:
        targets.append((case.label, folder / labels / f"{case.case_id}{FILE_ENDING}"))
    return targets


def _place(source: Path, target: Path, copy: bool, summary: ExportSummary) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Replace, never write through: the old target may be a hard link to the dataset's own file.
    if target.exists() or target.is_symlink():
        target.unlink()
    if copy:
        with open(source, "rb") as original:
            atomic_write(target, lambda handle: shutil.copyfileobj(original, handle, 16 << 20))
        summary.copied += 1
        return
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed: a symlink still costs nothing
        os.symlink(Path(source).resolve(), target)
        summary.symlinked += 1
    summary.linked += 1


def _remove_stale(folder: Path, written: set[Path]) -> int:
    """Delete NIfTI files of an earlier export that this export did not write."""
    removed = 0
    for name in FOLDERS:
        for path in (folder / name).glob(f"*{FILE_ENDING}"):
            if path not in written:
                path.unlink()
                removed += 1
    return removed


def _write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (json.dumps(content, indent=2) + "\n").encode())
