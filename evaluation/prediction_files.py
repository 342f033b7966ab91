"""Matching the files of a prediction folder to case ids (pure: no Django).

A prediction for case ``X`` may be named as nnU-Net writes it (``X.nii.gz``), as the image it was
predicted from (``X_0000.nii.gz``), as a CTSpine1K label (``X_seg.nii.gz``), or uncompressed
(``.nii``). An exact name wins over a name with a suffix, so a case whose id itself ends in
``_0000`` is still found. Only the folder itself is read, not sub-folders: nnU-Net writes its
``summary.json``, ``plans.json`` and ``dataset.json`` there, which are not predictions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

FILE_ENDINGS = (".nii.gz", ".nii")
# Suffixes of the case id tried after the exact name, in this order.
ID_SUFFIXES = ("_0000", "_seg")


@dataclass(frozen=True)
class UnmatchedFile:
    """A NIfTI file of the folder that is not used, and why (a sentence)."""

    name: str
    reason: str


@dataclass
class PredictionMatch:
    """Which file predicts which case.

    ``files``: case id -> absolute path of its prediction. ``missing``: expected case ids with no
    file. ``unmatched``: NIfTI files used for no expected case (another case's duplicate, a case
    outside the evaluated split, or no known case at all). ``ignored``: other files (JSON, PNG...).
    """

    files: dict[str, Path] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unmatched: list[UnmatchedFile] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def strip_ending(name: str) -> str | None:
    """``X.nii.gz`` or ``X.nii`` -> ``X``; None for any other file name."""
    for ending in FILE_ENDINGS:
        if name.endswith(ending) and len(name) > len(ending):
            return name[: -len(ending)]
    return None


def candidate_ids(stem: str) -> list[str]:
    """The case ids a file stem may stand for, most specific first: ``X_0000`` -> [``X_0000``,
    ``X``]."""
    candidates = [stem]
    for suffix in ID_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            candidates.append(stem[: -len(suffix)])
    return candidates


def match_predictions(
    folder: str | os.PathLike,
    expected: Iterable[str],
    *,
    not_evaluated: dict[str, str] | None = None,
) -> PredictionMatch:
    """Match the files directly inside ``folder`` to the ``expected`` case ids.

    ``not_evaluated`` (optional): case ids of the catalog that are not expected -> why (a
    phrase such as "is in split train"), used to explain unmatched files. When two files predict the same case,
    the exact name (``X.nii.gz``) wins over a suffixed one, ``.nii.gz`` over ``.nii``; the other is
    reported as unmatched. Raises FileNotFoundError / NotADirectoryError for a bad folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        if not folder.exists():
            raise FileNotFoundError(f"prediction folder {folder} does not exist")
        raise NotADirectoryError(f"{folder} is not a folder")
    expected = set(expected)
    not_evaluated = not_evaluated or {}
    match = PredictionMatch()
    # (rank, name): lower rank = better claim on a case id.
    claims: dict[str, tuple[tuple[int, int], str]] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.is_file():
            continue
        stem = strip_ending(entry.name)
        if stem is None:
            match.ignored.append(entry.name)
            continue
        ending_rank = 0 if entry.name.endswith(".nii.gz") else 1
        case_id = None
        for rank, candidate in enumerate(candidate_ids(stem)):
            if candidate in expected:
                case_id, claim = candidate, ((rank, ending_rank), entry.name)
                break
        if case_id is None:
            match.unmatched.append(UnmatchedFile(entry.name, _why_unmatched(stem, not_evaluated)))
            continue
        previous = claims.get(case_id)
        if previous is None or claim[0] < previous[0]:
            if previous is not None:
                match.unmatched.append(_duplicate(previous[1], case_id))
            claims[case_id] = claim
        else:
            match.unmatched.append(_duplicate(entry.name, case_id))
    # Absolute, but links are not resolved: the path stays the one in the prediction folder.
    folder = Path(os.path.abspath(folder))
    match.files = {case_id: folder / name for case_id, (_, name) in claims.items()}
    match.missing = sorted(expected - set(claims))
    match.unmatched.sort(key=lambda item: item.name)
    return match


def _why_unmatched(stem: str, not_evaluated: dict[str, str]) -> str:
    for candidate in candidate_ids(stem):
        if candidate in not_evaluated:
            return f"case {candidate} {not_evaluated[candidate]}"
    return "matches no case id of the catalog"


def _duplicate(name: str, case_id: str) -> UnmatchedFile:
    return UnmatchedFile(name, f"another file of the folder already predicts {case_id}")
