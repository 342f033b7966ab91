"""Write phantom cases and the root files of a CTSpine1K download (the demo dataset).

``data/<folder>/<case>.nii.gz``, ``label/<folder>/<case>_seg.nii.gz``, ``Path.csv``,
``readme.txt`` and ``data_split.txt``, as published; every file written atomically
(:func:`ctspine.atomic.atomic_write`). The cases come from :mod:`ctspine.phantom.plan` and are
drawn by :mod:`ctspine.phantom.anatomy`.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from ctspine.atomic import write_text
from ctspine.dataset.layout import DATASET_SOURCES as SOURCES
from ctspine.dataset.metadata import SPLIT_HEADERS, SPLITS
from ctspine.imaging.volume_io import write_nifti
from ctspine.phantom.anatomy import make_phantom
from ctspine.phantom.plan import PhantomSpec

PHANTOM_DESCRIPTION = b"CTSpine1K synthetic phantom"

# --- writing a dataset --------------------------------------------------------------------------


def write_dataset(
    root: str | os.PathLike,
    specs: Iterable[PhantomSpec],
    progress: Callable[[PhantomSpec], None] | None = None,
) -> list[Path]:
    """Write the cases and the root files of a CTSpine1K download under ``root``.

    Writes ``data/<folder>/<case>.nii.gz`` and ``label/<folder>/<case>_seg.nii.gz`` per case
    (calling ``progress(spec)`` after each), then ``Path.csv``, ``readme.txt`` and, last,
    ``data_split.txt``, whose presence therefore marks a complete dataset. Every file is written
    atomically, so readers never see half a file.
    Returns the paths written.
    """
    root = Path(root)
    specs = list(specs)
    ids = [s.case_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate case ids in the specs")
    written = []
    for spec in specs:
        image, label, affine = make_phantom(spec)
        for array, relpath in ((image, spec.image_relpath), (label, spec.label_relpath)):
            written.append(
                write_nifti(root / relpath, array, affine, description=PHANTOM_DESCRIPTION)
            )
        if progress is not None:
            progress(spec)
    written.append(write_text(root / "Path.csv", path_csv_text(specs)))
    written.append(write_text(root / "readme.txt", _readme_text(specs)))
    written.append(write_text(root / "data_split.txt", data_split_text(specs)))
    return written


def data_split_text(specs: Iterable[PhantomSpec]) -> str:
    """data_split.txt as published: ``trainset:``, ``test_public:``, ``test_private:`` sections of
    image file names, CRLF line endings, a blank line between sections."""
    specs = list(specs)
    sections = []
    for split in SPLITS:
        names = sorted(f"{s.case_id}.nii.gz" for s in specs if s.split == split)
        sections.append("\r\n".join([f"{SPLIT_HEADERS[split]}:", *names]))
    return "\r\n\r\n".join(sections) + "\r\n"


def path_csv_text(specs: Iterable[PhantomSpec]) -> str:
    """Path.csv as published: ``CASE/STUDY/SERIES`` rows for COLONOG and HNSCC cases, no header,
    CRLF; the series description states scan position and slice thickness like TCIA's."""
    rows = sorted(
        (SOURCES.index(s.source), s.case_id, _series_path(s))
        for s in specs
        if s.source in ("COLONOG", "HNSCC-3DCT-RT")
    )
    return "".join(f"{row[2]}\r\n" for row in rows)


def _series_path(spec: PhantomSpec) -> str:
    rng = np.random.default_rng([spec.seed, 3])

    def uid() -> int:
        return int(rng.integers(10000, 99999))

    thickness = _thickness_text(spec.spacing_mm[2])
    if spec.source == "HNSCC-3DCT-RT":
        date = f"{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}-{rng.integers(2009, 2016)}"
        kernel = rng.choice(["HEADNECK  {t}  B30s", "HN {t}  eFoV"]).format(t=thickness)
        return f"{spec.case_id}/{date}-RTHEADNECK Adult-{uid()}/3.000000-{kernel}-{uid()}"
    # From the id, not the seed: any selection of cases mixes prone and supine the same way.
    position = ("supine", "prone")[zlib.crc32(spec.case_id.encode()) % 2]
    name = str(rng.choice(["Colo{p}", "Colon {P}", "{P} Colon"])).format(
        p=position, P=position.title()
    )
    series = 4 if position == "prone" else 3
    study = f"01-01-2000-1-Abdomen24ACRINColoIRB2415-04 Adult-.{uid()}"
    return f"{spec.case_id}/{study}/{series}.000000-{name}  {thickness}  B30f-.{uid()}"


def _thickness_text(spacing: float) -> str:
    """Nominal reconstructed slice thickness nearest the slice spacing, formatted like TCIA's."""
    nominal = (0.625, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
    value = min(nominal, key=lambda v: abs(v - spacing))
    text = f"{value:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _readme_text(specs: list[PhantomSpec]) -> str:
    lumbarization = sorted(s.case_id for s in specs if s.anomaly == "lumbarization")
    sacralization = sorted(s.case_id for s in specs if s.anomaly == "sacralization")
    lines = [
        "Synthetic phantom in the CTSpine1K layout, made by ctspine/phantom/ (not patient data).",
        "Case ids, splits and transitional-vertebra cases are real CTSpine1K ones; the images are not.",
        "",
        f"Sacral lumbarization (L6 present, label 25): {', '.join(lumbarization) or 'none'}",
        f"Lumbar sacralization (L5 fused into the sacrum): {', '.join(sacralization) or 'none'}",
    ]
    return "\r\n".join(lines) + "\r\n"
