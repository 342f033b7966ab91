"""Writing an evaluation's results as files (pure: no Django): Table 2 as CSV, one row per case
and vertebra as CSV, and everything as JSON. Each file is written to a temporary name in its
folder and renamed into place, so a reader never sees half a file."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from evaluation.case_metrics import PairResult
from evaluation.table2 import Table

LABEL_COLUMNS = [
    "case_id", "split", "source", "anomaly", "label", "name", "dice", "hd95_mm", "assd_mm",
    "nsd", "ref_voxels", "pred_voxels", "predicted_as", "off_by_one",
]  # fmt: skip


def file_stem(run_id: int, name: str) -> str:
    """``evaluation-<id>-<name>`` with the name reduced to safe file-name characters."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run"
    return f"evaluation-{run_id}-{safe[:80]}"


def table_csv(table: Table) -> str:
    """One line per row of the table; per column DSC, HD95 (mm), cases averaged (n, n_hd95) and
    the published DSC/HD95 where there is one."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["row"]
    for column in table.columns:
        header += [f"{column.key} {part}" for part in ("dsc", "hd95_mm", "n", "n_hd95")]
        header += [f"{column.key} paper dsc", f"{column.key} paper hd95_mm"]
    writer.writerow(header)
    for row in table.rows:
        line = [row.title]
        for cell, published in zip(row.cells, row.published, strict=True):
            line += [_num(cell.dice), _num(cell.hd95_mm), cell.n, cell.n_hd95]
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
            writer.writerow(
                {
                    "case_id": result.case_id,
                    "split": about["split"],
                    "source": about["source"],
                    "anomaly": about["anomaly"],
                    "label": row.label,
                    "name": row.name,
                    "dice": _num(row.dice),
                    "hd95_mm": _num(row.hd95_mm),
                    "assd_mm": _num(row.assd_mm),
                    "nsd": _num(row.nsd),
                    "ref_voxels": row.ref_voxels,
                    "pred_voxels": row.pred_voxels,
                    "predicted_as": "" if row.predicted_as is None else row.predicted_as,
                    "off_by_one": int(row.off_by_one),
                }
            )
    return out.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None else repr(round(float(value), 6))


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.part")
    temporary.write_text(text)
    os.replace(temporary, path)
    return path


def write_json(path: Path, content: dict) -> Path:
    return write_text(path, json.dumps(content, indent=1, allow_nan=False) + "\n")
