"""Ground truth from a folder of label maps that are not in the catalog, such as Test_VerSe.

VerSe's labels (the convention of ``label/Verse/`` in a CTSpine1K download): 1-24 are C1-L5 as
in CTSpine1K, 25 is L6; 28 (T13) and 26 (sacrum) have no CTSpine1K label, so they are set aside
and reported, never scored as C1-L6: background in the ground truth, and an ignore region
(:attr:`Reference.ignore`) where the prediction is not scored either. Any other value is an
error.
Label maps are read as RAS+ like every other volume (``ctspine.imaging.volume_io``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ctspine.imaging.volume_io import (
    Volume,
    VolumeError,
    decode_file,
    read_volume,
    spacing_of,
    to_ras,
    validate_labels,
)
from evaluation.prediction_files import candidate_ids, strip_ending
from evaluation.table2 import cases_phrase

VERSE = "verse"
CONVENTIONS = ("ctspine", VERSE)
# VerSe labels without a CTSpine1K counterpart: value -> what it is (head to feet).
SET_ASIDE = {28: "T13", 26: "sacrum"}
VERSE_SET = "test_verse"


def set_key(name: str) -> str:
    """The key of a reference set from its name: ``Test_VerSe`` -> ``test_verse``."""
    key = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not key:
        raise ValueError(f"a set name needs letters or digits, not {name!r}")
    return key


@dataclass(frozen=True)
class SetAside:
    """Voxels of one set-aside VerSe label in a ground truth: ``value`` 28 or 26, ``name``
    "T13" or "sacrum"."""

    value: int
    name: str
    voxels: int

    @property
    def note(self) -> str:
        """The case's sentence, e.g. "T13 (28) set aside: 5120 voxels"."""
        return f"{self.name} ({self.value}) set aside: {self.voxels} voxels"


@dataclass(frozen=True)
class Reference:
    """A ground-truth label map read in a convention. ``set_aside``: what was set aside (head
    to feet); ``ignore``: where, as a boolean RAS+ array on the volume's grid (None when
    nothing was set aside)."""

    volume: Volume
    set_aside: tuple[SetAside, ...] = ()
    ignore: np.ndarray | None = None

    def without_ignored(self, prediction: np.ndarray) -> np.ndarray:
        """``prediction`` (RAS+, on the volume's grid) with the ignore region made background,
        so that a vertebra predicted over a set-aside one is not scored there."""
        if self.ignore is None:
            return prediction
        return np.where(self.ignore, np.uint8(0), prediction).astype(prediction.dtype, copy=False)


def read_reference(
    path: str | os.PathLike,
    *,
    convention: str = "ctspine",
    read: Callable[..., Volume] = read_volume,
) -> Reference:
    """Read a ground-truth label map as RAS+ uint8 labels 0-25. Raises VolumeError for a bad
    file or (VerSe) a label value that is neither 0-25 nor set aside. ``read(path, kind=...)``
    reads a CTSpine1K-convention file (e.g. the volume cache's reader); VerSe files are always
    decoded here, since their extra labels must be set aside first."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, not {convention!r}")
    if convention != VERSE:
        return Reference(read(path, kind="label"))
    # As read_volume(kind="label"), with VerSe's extra labels set aside before validation.
    path = Path(path)
    data, affine, header = decode_file(path)
    set_aside = tuple(
        SetAside(value, name, voxels)
        for value, name in SET_ASIDE.items()
        if (voxels := int(np.count_nonzero(data == value)))
    )
    ignore = None
    if set_aside:
        aside = np.isin(data, [found.value for found in set_aside])
        data = np.where(aside, 0, data)
        ignore = to_ras(aside.astype(np.uint8), affine=affine, header=header)[0].astype(bool)
    original_shape = data.shape
    axcodes = "".join(nib.aff2axcodes(affine))
    labels = validate_labels(data, path=path)
    labels, ras_affine = to_ras(labels, affine=affine, header=header)
    volume = Volume(
        data=labels,
        affine=ras_affine,
        spacing=spacing_of(ras_affine),
        original_axcodes=axcodes,
        original_shape=original_shape,
    )
    return Reference(volume, set_aside, ignore)


def reference_files(folder: str | os.PathLike) -> dict[str, Path]:
    """Case id -> label map of a reference folder: ``X.nii.gz``, ``X_seg.nii.gz`` (as VerSe
    names them in a CTSpine1K download) or ``.nii``. Raises FileNotFoundError /
    NotADirectoryError for a bad folder, VolumeError when it holds no label map."""
    folder = Path(folder)
    if not folder.is_dir():
        if not folder.exists():
            raise FileNotFoundError(f"reference folder {folder} does not exist")
        raise NotADirectoryError(f"{folder} is not a folder")
    files: dict[str, Path] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        stem = strip_ending(entry.name) if entry.is_file() else None
        if stem is not None:
            # The shortest candidate: "X_seg" names the case X.
            files.setdefault(candidate_ids(stem)[-1], Path(entry.path).absolute())
    if not files:
        raise VolumeError(f"reference folder {folder} holds no .nii or .nii.gz label map")
    return files


def set_aside_summary(per_case: Iterable[Iterable[tuple[str, int]]]) -> list[dict]:
    """What a run set aside, from each case's ``(name, voxels)`` pairs: per set-aside label
    found (head to feet) its ``name``, VerSe ``value``, ``cases`` and ``voxels`` in all."""
    cases: dict[str, int] = {}
    voxels: dict[str, int] = {}
    for found in per_case:
        for name, count in found:
            cases[name] = cases.get(name, 0) + 1
            voxels[name] = voxels.get(name, 0) + count
    return [
        {"name": name, "value": value, "cases": cases[name], "voxels": voxels[name]}
        for value, name in SET_ASIDE.items()
        if name in cases
    ]


def set_aside_phrase(summary: Iterable[dict]) -> str:
    """``set_aside_summary`` in words: "T13 in 3 cases, sacrum in 1 case" ("" when empty)."""
    return ", ".join(f"{row['name']} in {cases_phrase(row['cases'])}" for row in summary)
