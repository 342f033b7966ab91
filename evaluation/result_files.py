"""Writing an evaluation's results as files (pure: no Django): Table 2 as CSV, one row per case
and vertebra as CSV, and everything as JSON. Each file is written atomically
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
from evaluation.table2 import Table

CASE_COLUMNS = ["case_id", "split", "source", "anomaly"]
LABEL_COLUMNS = CASE_COLUMNS + [f.name for f in fields(LabelMetrics)]


def file_stem(run_id: int, name: str) -> str:
    """``evaluation-<id>-<name>`` with the name reduced to safe file-name characters."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run"
    return f"evaluation-{run_id}-{safe[:80]}"


def table_csv(table: Table) -> str:
    """One line per row of the table (the vertebrae, then Mean of Vertebrae, Mean of Spine, Mean
    over cases, Pooled over vertebrae: ``table2.CONVENTIONS``); per column DSC, HD95 (mm),
    values averaged (n, n_hd95), cases where the vertebra was not predicted (missed) and the
    published DSC/HD95 where there is one."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["row"]
    for column in table.columns:
        header += [f"{column.key} {part}" for part in ("dsc", "hd95_mm", "n", "n_hd95", "missed")]
        header += [f"{column.key} paper dsc", f"{column.key} paper hd95_mm"]
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
