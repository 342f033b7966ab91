"""The paper's Table 2 from per-case results (pure: no Django).

Layout (CTSpine1K paper, Table 2): one row per vertebra C1 ... L6, then "Mean of Vertebrae" and
"Mean of Spine"; per split a DSC and an HD95 (mm) column. Averaging conventions, stated on the
page and in the printout (:data:`CONVENTIONS`):

- a vertebra's cell averages its Dice over the cases where that vertebra is counted (in the
  ground truth, the prediction or both: ``ctspine.metrics``), and its HD95 over the cases
  where the HD95 is defined (the vertebra in both);
- "Mean of Vertebrae" is the paper's: the plain mean of the per-vertebra rows (L6 included),
  over the rows that have a value; the same for HD95 (averaging the paper's own rows gives its
  summary rows to the printed precision);
- "Mean of Spine" is the mean over cases of the metrics of the binary spine (all labels merged);
- kept beside them under their own names: "Mean over cases" (the mean over cases of each case's
  own mean over its vertebrae) and "Pooled over vertebrae" (the mean over every vertebra of
  every case).

Besides the split table: the same table by source sub-dataset (one per split), for the
transitional-vertebra (anomaly) cases, the level errors per vertebra, the worst cases per
vertebra, and the published numbers beside ours (``evaluation.published``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from statistics import fmean

from ctspine.dataset.layout import SOURCES
from ctspine.labels import LABELS, label_name
from ctspine.metrics import LabelMetrics
from evaluation.published import published_table

# Beyond these, a cell of ours is marked as differing from the paper's.
DICE_THRESHOLD = 0.05
HD95_THRESHOLD_MM = 2.0

CONVENTIONS: tuple[str, ...] = (
    "Per vertebra: Dice averaged over the cases where the vertebra is in the ground truth or "
    "the prediction; HD95 over the cases where it is in both (otherwise HD95 is not defined); "
    "n = cases averaged for the Dice, then for the HD95 where fewer; missed = cases where the "
    "vertebra is in the ground truth and not predicted at all (Dice 0, no HD95).",
    "Mean of Vertebrae (as the paper): the plain mean of the per-vertebra rows above, L6 "
    "included, over the rows with a value; n = rows averaged.",
    "Mean of Spine: the mean over cases of the binary spine (all vertebrae merged into one mask).",
    "Mean over cases: the mean over cases of each case's own mean over its vertebrae.",
    "Pooled over vertebrae: the mean over every vertebra of every case (n = vertebrae).",
    "HD95: 95th percentile of the pooled surface distances of both directions, in mm (medpy).",
    "Paper: the nnU-Net baseline of the CTSpine1K paper (Table 2); ! after the paper's number "
    f"(in colour on the page, with ours in its tooltip) marks ours differing by more than "
    f"{DICE_THRESHOLD} DSC or {HD95_THRESHOLD_MM} mm HD95.",
)

MEAN_OF_VERTEBRAE = "mean_of_vertebrae"
MEAN_OF_SPINE = "mean_of_spine"
MEAN_OF_CASES = "mean_of_cases"
POOLED_MEAN = "pooled_mean"
SUMMARY_ROWS = (
    (MEAN_OF_VERTEBRAE, "Mean of Vertebrae"),
    (MEAN_OF_SPINE, "Mean of Spine"),
    (MEAN_OF_CASES, "Mean over cases"),
    (POOLED_MEAN, "Pooled over vertebrae"),
)
SPLIT_TITLES = {
    "test_public": "Test_public",
    "test_private": "Test_private",
    "test_verse": "Test_VerSe",
    "train": "Train",
}
ANOMALY_COLUMNS = (
    ("lumbarization", "Lumbarization (L6)"),
    ("sacralization", "Sacralization"),
    ("none", "No anomaly"),
)


@dataclass(frozen=True)
class CaseRecord:
    """One evaluated case. ``anomaly``: the curated one ("" when none). ``mean_*`` the case's
    Mean of Vertebrae, ``spine_*`` its binary spine; HD95 in mm, None when not defined."""

    case_id: str
    split: str
    source: str
    anomaly: str
    mean_dice: float | None
    mean_hd95_mm: float | None
    spine_dice: float | None
    spine_hd95_mm: float | None
    labels: tuple[LabelMetrics, ...] = ()
    z_spacing_mm: float | None = None  # slice spacing of the ground truth


@dataclass(frozen=True)
class Cell:
    """A table cell: mean Dice over ``n`` values, mean HD95 (mm) over ``n_hd95`` values; None
    when there is nothing to average. The values are cases for a vertebra row, rows for Mean of
    Vertebrae, vertebrae for the pooled mean. ``missed``: cases where the vertebra is in the
    ground truth and not predicted at all (Dice 0, no HD95)."""

    dice: float | None
    hd95_mm: float | None
    n: int
    n_hd95: int
    missed: int = 0


@dataclass(frozen=True)
class Column:
    """A group of cases. ``filters``: the case search parameters that select it (for links)."""

    key: str
    title: str
    filters: dict[str, str]
    cases: int


@dataclass(frozen=True)
class Row:
    key: str  # "C1" ... "L6", "mean_of_vertebrae" or "mean_of_spine"
    title: str
    label: int | None  # 1-25 for a vertebra row
    cells: tuple[Cell, ...]  # one per column
    published: tuple[tuple[float, float] | None, ...] = ()  # (DSC, HD95 mm) per column


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def row(self, key: str) -> Row:
        return next(row for row in self.rows if row.key == key)

    def cell(self, row_key: str, column_key: str) -> Cell:
        index = next(i for i, c in enumerate(self.columns) if c.key == column_key)
        return self.row(row_key).cells[index]

    def to_dict(self) -> dict:
        return asdict(self)


def _mean(values: list[float]) -> float | None:
    return fmean(values) if values else None


def summarize(records: Iterable[CaseRecord]) -> dict[str, Cell]:
    """Cells of one column: one per vertebra name with any case, plus the summary rows."""
    records = list(records)
    values: dict[int, list[LabelMetrics]] = {}
    for record in records:
        for value in record.labels:
            values.setdefault(value.label, []).append(value)
    cells = {label_name(label): _vertebra_cell(rows) for label, rows in sorted(values.items())}
    cells[MEAN_OF_VERTEBRAE] = mean_of_rows(cells.values())
    cells[MEAN_OF_SPINE] = _cell(
        [r.spine_dice for r in records if r.spine_dice is not None],
        [r.spine_hd95_mm for r in records if r.spine_hd95_mm is not None],
    )
    cells[MEAN_OF_CASES] = _cell(
        [r.mean_dice for r in records if r.mean_dice is not None],
        [r.mean_hd95_mm for r in records if r.mean_hd95_mm is not None],
    )
    cells[POOLED_MEAN] = _vertebra_cell([v for rows in values.values() for v in rows])
    return cells


def mean_of_rows(rows: Iterable[Cell]) -> Cell:
    """The paper's Mean of Vertebrae: the plain mean of the per-vertebra rows' Dice over the
    rows with a Dice, and of their HD95 (mm) over the rows with an HD95."""
    rows = list(rows)
    return _cell(
        [row.dice for row in rows if row.dice is not None],
        [row.hd95_mm for row in rows if row.hd95_mm is not None],
    )


def _vertebra_cell(values: list[LabelMetrics]) -> Cell:
    return _cell(
        [v.dice for v in values],
        [v.hd95_mm for v in values if v.hd95_mm is not None],
        missed=sum(v.found == "missed" for v in values),
    )


def _cell(dice: list[float], hd95: list[float], *, missed: int = 0) -> Cell:
    return Cell(_mean(dice), _mean(hd95), len(dice), len(hd95), missed)


def differs(cell: Cell, published: tuple[float, float] | None) -> tuple[bool, bool]:
    """Whether our (DSC, HD95) differ from the paper's by more than the thresholds."""
    if not published:
        return False, False
    dsc, hd95 = published
    return (
        cell.dice is not None and abs(cell.dice - dsc) > DICE_THRESHOLD,
        cell.hd95_mm is not None and abs(cell.hd95_mm - hd95) > HD95_THRESHOLD_MM,
    )


EMPTY = Cell(None, None, 0, 0)


def build_table(
    records: Sequence[CaseRecord],
    *,
    title: str,
    columns: Sequence[tuple[str, str, dict[str, str], Callable[[CaseRecord], bool]]],
    published: dict[str, dict[str, tuple[float, float]]] | None = None,
) -> Table:
    """A Table 2 with one column per ``(key, title, filters, predicate)``: the cases of the
    column are the records for which ``predicate`` holds. ``published``: column key -> row key
    -> (DSC, HD95) reference figures."""
    published = published or {}
    selected = [[r for r in records if predicate(r)] for *_, predicate in columns]
    summaries = [summarize(group) for group in selected]
    heads = tuple(
        Column(key, title_, dict(filters), len(group))
        for (key, title_, filters, _), group in zip(columns, selected, strict=True)
    )
    rows = [(label.name, label.name, label.value) for label in LABELS] + [
        (key, title_, None) for key, title_ in SUMMARY_ROWS
    ]
    return Table(
        title=title,
        columns=heads,
        rows=tuple(
            Row(
                key=key,
                title=row_title,
                label=label,
                cells=tuple(summary.get(key, EMPTY) for summary in summaries),
                published=tuple(published.get(c.key, {}).get(key) for c in heads),
            )
            for key, row_title, label in rows
        ),
        notes=CONVENTIONS,
    )


def split_table(records: Sequence[CaseRecord], splits: Sequence[str]) -> Table:
    """The paper's Table 2: one column per split, with the published figures beside ours."""
    return build_table(
        records,
        title="Table 2: DSC and HD95 (mm) per vertebra",
        columns=[
            (split, SPLIT_TITLES.get(split, split), {"split": split}, _is_split(split))
            for split in splits
        ],
        published=published_table(),
    )


def source_tables(records: Sequence[CaseRecord], splits: Sequence[str]) -> list[Table]:
    """Table 2 by source sub-dataset: one table per split, one column per source with cases."""
    tables = []
    for split in splits:
        in_split = [r for r in records if r.split == split]
        sources = sorted({r.source for r in in_split}, key=source_rank)
        tables.append(
            build_table(
                in_split,
                title=f"{SPLIT_TITLES.get(split, split)} by source",
                columns=[
                    (
                        source,
                        source,
                        {"split": split, "source": source},
                        lambda r, source=source: r.source == source,
                    )
                    for source in sources
                ],
            )
        )
    return tables


def anomaly_table(records: Sequence[CaseRecord], splits: Sequence[str]) -> Table:
    """Table 2 for the transitional-vertebra cases of the curated lists, all evaluated splits
    together (there are few of them), beside the cases without an anomaly."""
    return build_table(
        records,
        title="Transitional vertebrae (curated lists), "
        + " + ".join(SPLIT_TITLES.get(s, s) for s in splits),
        columns=[
            (key, title, {"anomaly": key}, lambda r, key=key: (r.anomaly or "none") == key)
            for key, title in ANOMALY_COLUMNS
        ],
    )


def _is_split(split: str) -> Callable[[CaseRecord], bool]:
    return lambda record: record.split == split


def cases_phrase(count: int) -> str:
    """``count`` cases in words: "1 case", "3 cases"."""
    return f"{count} case{'' if count == 1 else 's'}"


def source_rank(source: str) -> tuple[int, str]:
    """Sort key of a source sub-dataset: the dataset's order (``ctspine.dataset.layout.SOURCES``),
    then any other source by name."""
    return (SOURCES.index(source) if source in SOURCES else len(SOURCES), source)


@dataclass(frozen=True)
class LevelErrorRow:
    """Per vertebra and split: in how many cases it is in the ground truth (``cases``), mostly
    labelled as a neighbouring level (``off_by_one``), as a level further away (``other_level``),
    or covered by no predicted vertebra at all (``not_found``)."""

    label: int
    name: str
    split: str
    cases: int
    off_by_one: int
    other_level: int
    not_found: int
    # Which labels it was mostly taken for, most frequent first: [(name, count)].
    taken_for: tuple[tuple[str, int], ...] = ()


def level_errors(records: Sequence[CaseRecord], splits: Sequence[str]) -> list[LevelErrorRow]:
    """Level (labelling) errors per vertebra present in the ground truth, per split."""
    rows = []
    for split in splits:
        for label in LABELS:
            values = [
                v
                for r in records
                if r.split == split
                for v in r.labels
                if v.label == label.value and v.ref_voxels > 0
            ]
            if not values:
                continue
            wrong = [v for v in values if v.predicted_as is not None and v.predicted_as != v.label]
            taken: dict[str, int] = {}
            for v in wrong:
                taken[label_name(v.predicted_as)] = taken.get(label_name(v.predicted_as), 0) + 1
            rows.append(
                LevelErrorRow(
                    label=label.value,
                    name=label.name,
                    split=split,
                    cases=len(values),
                    off_by_one=sum(v.off_by_one for v in wrong),
                    other_level=sum(not v.off_by_one for v in wrong),
                    not_found=sum(v.predicted_as is None for v in values),
                    taken_for=tuple(sorted(taken.items(), key=lambda kv: (-kv[1], kv[0]))),
                )
            )
    return rows


@dataclass(frozen=True)
class WorstCase:
    case_id: str
    split: str
    dice: float
    hd95_mm: float | None


def worst_cases(records: Sequence[CaseRecord], *, per_label: int = 3) -> dict[str, list[WorstCase]]:
    """The ``per_label`` lowest-Dice cases of each vertebra (ties: larger HD95 first, then case
    id), by vertebra name in label order."""
    found: dict[int, list[WorstCase]] = {}
    for record in records:
        for value in record.labels:
            found.setdefault(value.label, []).append(
                WorstCase(record.case_id, record.split, value.dice, value.hd95_mm)
            )
    return {
        label_name(label): sorted(
            cases,
            key=lambda c: (
                c.dice,
                -(c.hd95_mm if c.hd95_mm is not None else float("inf")),
                c.case_id,
            ),
        )[:per_label]
        for label, cases in sorted(found.items())
    }


def report(records: Sequence[CaseRecord], splits: Sequence[str], *, worst: int = 3) -> dict:
    """Everything the run page and the JSON file show, as plain values for ``json.dumps``;
    ``worst``: how many worst cases per vertebra."""
    return {
        "conventions": list(CONVENTIONS),
        "cases": len(records),
        "table2": split_table(records, splits).to_dict(),
        "by_source": [table.to_dict() for table in source_tables(records, splits)],
        "anomalies": anomaly_table(records, splits).to_dict(),
        "level_errors": [asdict(row) for row in level_errors(records, splits)],
        "worst_cases": {
            name: [asdict(case) for case in cases]
            for name, cases in worst_cases(records, per_label=worst).items()
        },
    }


# --- text printout ----------------------------------------------------------------------------


def _number(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _count(cell: Cell) -> str:
    """``n``, or ``n/n_hd95`` where the HD95 averages fewer values than the Dice."""
    return str(cell.n) if cell.n == cell.n_hd95 else f"{cell.n}/{cell.n_hd95}"


def format_table(table: Table, *, skip_empty_rows: bool = True) -> str:
    """The table as fixed-width text in the paper's layout: per column DSC, HD95 (mm), the
    number of values averaged (Dice/HD95 where they differ), the cases where the vertebra was
    missed (blank: none) and the paper's DSC and HD95, with ``!`` after a published number
    that ours differs from beyond the thresholds."""
    name_width = max(len(r.title) for r in table.rows) + 1
    published = any(any(row.published) for row in table.rows)
    part = f"{'DSC':>6} {'HD95 mm':>8} {'n':>7} {'missed':>6}" + (
        f" {'paper':>6}{'':1} {'HD95':>6}{'':1}" if published else ""
    )
    width = len(part) + 3
    lines = [table.title, ""]
    lines.append(
        (
            " " * name_width
            + "".join(f"{c.title} ({cases_phrase(c.cases)})".center(width) for c in table.columns)
        ).rstrip()
    )
    lines.append("Vertebra".ljust(name_width) + "".join(part + "   " for _ in table.columns))
    lines[-1] = lines[-1].rstrip()
    for row in table.rows:
        if skip_empty_rows and row.label is not None and not any(c.n for c in row.cells):
            continue
        if row.key == MEAN_OF_VERTEBRAE:
            lines.append("-" * (name_width + width * len(table.columns)))
        text = row.title.ljust(name_width)
        for cell, paper in zip(row.cells, row.published or (None,) * len(row.cells), strict=True):
            text += f"{_number(cell.dice, 3):>6} {_number(cell.hd95_mm, 2):>8} {_count(cell):>7}"
            text += f" {cell.missed or '':>6}"
            if published:
                dsc, hd = paper if paper else (None, None)
                far_dsc, far_hd = differs(cell, paper)
                text += f" {_number(dsc, 3):>6}{'!' if far_dsc else ' '}"
                text += f" {_number(hd, 2):>6}{'!' if far_hd else ' '}"
            text += "   "
        lines.append(text.rstrip())
    lines.append("")
    lines += [f"* {note}" for note in table.notes]
    return "\n".join(lines)
