"""The CTSpine1K paper's Table 2 (nnU-Net baseline), as the application ships it.

``evaluation/data/paper_table2.csv`` is the application's own copy of the published table: one
row per vertebra (label 1-25, C1-L6), then ``mean_of_vertebrae`` and ``mean_of_spine``; per test
set a DSC (fraction) and an HD95 (mm) column. Its "Mean of Vertebrae" row is the plain mean of
the 25 vertebra rows, L6 included.
"""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

TABLE_PATH = Path(__file__).resolve().parent / "data" / "paper_table2.csv"
# Column prefixes of the CSV = the keys of the evaluated sets.
PUBLISHED_SETS = ("test_public", "test_private", "test_verse")


@cache
def published_table() -> dict[str, dict[str, tuple[float, float]]]:
    """Set key (``test_public``, ``test_private``, ``test_verse``) -> row key (vertebra name
    such as ``L6``, ``mean_of_vertebrae``, ``mean_of_spine``) -> (DSC, HD95 mm)."""
    with TABLE_PATH.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        key: {
            row["name"] or row["label"]: (
                float(row[f"{key}_dsc"]),
                float(row[f"{key}_hd95_mm"]),
            )
            for row in rows
        }
        for key in PUBLISHED_SETS
    }
