"""Writing an evaluation's results as files (pure: no Django): Table 2 as CSV with its notes
beside it (which mean is which, what each column holds), one row per case and vertebra as CSV,
and everything as JSON. Each file is written atomically
(``ctspine.atomic.atomic_write``), so a reader never sees half a file."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path

from ctspine.atomic import write_text
from ctspine.metrics import LabelMetrics
from evaluation.case_metrics import PairResult
from evaluation.table2 import Table, cases_phrase

CASE_COLUMNS = ["case_id", "split", "source", "anomaly"]
LABEL_COLUMNS = CASE_COLUMNS + [f.name for f in fields(LabelMetrics)]


def file_stem(run_id: int, name: str) -> str:
    """``evaluation-<id>-<name>`` with the name reduced to safe file-name characters."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run"
    return f"evaluation-{run_id}-{safe[:80]}"


# What each CSV column of a set holds, after the set's key (``table_csv``).
TABLE_CSV_PARTS = (
    ("dsc", "our mean Dice, a fraction in [0, 1]"),
    ("hd95_mm", "our mean HD95 in mm (empty: not defined in any case)"),
    (
        "n",
        "values averaged for the Dice (cases for a vertebra, rows for Mean of Vertebrae, "
        "vertebrae for Pooled over vertebrae)",
    ),
    ("n_hd95", "values averaged for the HD95"),
    ("missed", "cases where the vertebra is in the ground truth and not predicted at all"),
    ("paper dsc", "the paper's DSC (Table 2), where it gives one"),
    ("paper hd95_mm", "the paper's HD95 in mm, where it gives one"),
)


def notes_path(csv_path: Path) -> Path:
    """The notes file beside a Table 2 CSV: ``X_table2.csv`` -> ``X_table2_notes.txt``."""
    return csv_path.with_name(f"{csv_path.stem}_notes.txt")


def table_notes(table: Table, *, csv_name: str) -> str:
    """The footnotes of ``table_csv``, as text for a file beside it (a CSV has no place for
    them that every reader skips): the sets, the columns, and the conventions that say which
    mean each summary row is (``table2.CONVENTIONS``)."""
    lines = [f"Notes to {csv_name}: {table.title}", "", "Sets (the first word of a column name):"]
    lines += [f"  {c.key}: {c.title}, {cases_phrase(c.cases)}" for c in table.columns]
    lines += ["", "Columns (after the set):"]
    lines += [f"  {part}: {meaning}" for part, meaning in TABLE_CSV_PARTS]
    lines += ["", "Rows (column 'row': the vertebra C1 ... L6, then the summary rows):"]
    lines += [f"* {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def table_csv(table: Table) -> str:
    """One line per row of the table (the vertebrae, then Mean of Vertebrae, Mean of Spine, Mean
    over cases, Pooled over vertebrae); per column DSC, HD95 (mm), values averaged (n, n_hd95),
    cases where the vertebra was not predicted (missed) and the published DSC/HD95 where there
    is one. Which mean is which, and the columns: ``table_notes``, written beside it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["row"]
    for column in table.columns:
        header += [f"{column.key} {part}" for part, _ in TABLE_CSV_PARTS]
    writer.writerow(header)
    for row in table.rows:
        line = [row.title]
        for cell, published in zip(row.cells, row.published, strict=True):
            line += [_num(cell.dice), _num(cell.hd95_mm), cell.n, cell.n_hd95, cell.missed]
            line += list(published) if published else ["", ""]
        writer.writerow(line)
    return out.getvalue()


def labels_csv(results: Sequence[PairResult], cases: dict[str, dict]) -> str:
    """One line per evaluated case and vertebra; ``cases``: case id -> split, source, anomaly."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=LABEL_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for result in sorted(results, key=lambda r: r.case_id):
        about = cases[result.case_id]
        for row in result.labels:
            line = {key: _cell(value) for key, value in asdict(row).items()}
            line.update({key: about[key] for key in CASE_COLUMNS[1:]}, case_id=result.case_id)
            writer.writerow(line)
    return out.getvalue()


def _cell(value) -> str | int:
    """A CSV cell: floats rounded to 6 decimals, booleans as 0/1, None as empty."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return _num(value)
    return "" if value is None else value


def _num(value: float | None) -> str:
    return "" if value is None else repr(round(float(value), 6))


def write_json(path: Path, content: dict) -> Path:
    return write_text(path, json.dumps(content, indent=1, allow_nan=False) + "\n")
