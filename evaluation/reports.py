"""What the run page, the API and the JSON file show about an evaluation run.

Reads go through the querysets of ``evaluation.models``; the numbers come from the pure
``evaluation.table2`` and ``evaluation.plots``. The case search parameters of the browse page
(``viewer.filters.CaseFilter``) restrict every table to the matching cases, so "only
lumbarization cases" works on a run as on the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from django.http import QueryDict

from ctspine.dataset.layout import DATASET_SOURCES
from ctspine.dataset.metadata import ANOMALIES, SPLITS
from ctspine.labels import label_name, parse_label
from evaluation import table2
from evaluation.models import CaseResult, EvaluationRun, LabelResult
from evaluation.plots import group_plot, resolution_plot, strip_plot
from evaluation.reference_sets import set_aside_phrase
from viewer.filters import PARAMETERS, CaseFilter
from viewer.models import Case

# Parameters of the run pages besides the case search ones: which vertebra's metrics to list,
# which kind of level error, which status.
RUN_PARAMETERS = frozenset({"label", "level", "status"})
LEVELS = ("off_by_one", "other_level", "not_found")
FILTER_CHOICES = {
    "anomaly": (*ANOMALIES, "any", "none"),
    "source": DATASET_SOURCES,
    "split": SPLITS,
}


@dataclass
class Selection:
    """The case results a request selects. ``errors``: parameter -> messages (then ``cases``
    is empty); ``filters``: the case search parameters in effect, for links and headings."""

    cases: object  # CaseResult queryset
    errors: dict
    filters: dict[str, list[str]]
    label: int | None = None
    level: str | None = None

    @property
    def label_name(self) -> str | None:
        return None if self.label is None else label_name(self.label)


def select_cases(run: EvaluationRun, query: QueryDict) -> Selection:
    """The run's case results matching the browse filters in ``query`` (all when none)."""
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(query) - PARAMETERS - RUN_PARAMETERS)
    for name in unknown:
        errors[name] = ["unknown parameter"]
    label = level = None
    if query.get("label"):
        try:
            label = parse_label(query["label"])
        except ValueError as exc:
            errors["label"] = [str(exc)]
    if query.get("level"):
        level = query["level"]
        if level not in LEVELS:
            errors["level"] = [f"use one of {', '.join(LEVELS)}"]
        elif label is None:
            errors["level"] = ["needs a label"]
    filters = {name: query.getlist(name) for name in CaseFilter.base_filters if query.getlist(name)}
    cases = run.cases.all()
    if filters:
        case_filter = CaseFilter(query, queryset=Case.objects.all())
        if case_filter.is_valid():
            cases = cases.for_cases(case_filter.qs)
        else:
            errors.update(case_filter.errors)
    if errors:
        cases = run.cases.none()
    return Selection(cases, errors, filters, label, level)


def missing_phrase(run: EvaluationRun) -> str:
    """How many cases had no prediction and what was done with them, for headers."""
    if not run.cases_missing:
        return "0 without prediction"
    if run.missing_as_failure:
        return (
            f"{run.cases_missing} without prediction (scored as empty predictions: Dice 0 for "
            "each of their vertebrae, HD95 not defined)"
        )
    return f"{run.cases_missing} without prediction (left out of the tables: --skip-missing)"


def query_string(filters: dict[str, list[str]], **extra) -> str:
    """``?a=1&b=2`` from the active filters plus ``extra`` (None values dropped)."""
    pairs = [(name, value) for name, values in filters.items() for value in values]
    pairs += [(name, value) for name, value in extra.items() if value is not None]
    return "?" + urlencode(pairs) if pairs else ""


def run_report(run: EvaluationRun, selection: Selection, *, worst: int = 3) -> dict:
    """Tables, level errors, worst cases, Dice strip plot data and problems of the selection,
    as plain values: the API returns this with the run (``RunReportSerializer``), the page
    renders it."""
    records = selection.cases.as_records()
    # What the ground truth set aside is a fact of the whole run, kept from its evaluation.
    summary = {
        **table2.report(records, run.splits, worst=worst),
        "set_aside": run.summary.get("set_aside", []) if run.summary else [],
    }
    return {
        "filters": selection.filters,
        "summary": summary,
        "dice_by_label": _dice_by_label(records),
        "resolution": [
            {
                "case_id": r.case_id,
                "source": r.source,
                "z_spacing_mm": r.z_spacing_mm,
                "mean_dice": r.mean_dice,
            }
            for r in records
            if r.z_spacing_mm is not None and r.mean_dice is not None
        ],
        "problems": [
            {"case_id": c.case_id, "status": c.status, "error": c.error, "file": _name(c)}
            for c in selection.cases.problems().order_by("status", "case_id")
        ],
        "unmatched_files": run.unmatched_files,
    }


def _dice_by_label(records) -> dict[str, list[dict]]:
    """Label value (as a string: JSON keys) -> every case's Dice and HD95 (mm) for it."""
    out: dict[str, list[dict]] = {}
    for record in records:
        for value in record.labels:
            out.setdefault(str(value.label), []).append(
                {"case_id": record.case_id, "dice": value.dice, "hd95_mm": value.hd95_mm}
            )
    return out


def _name(result: CaseResult) -> str:
    return result.prediction_path.rsplit("/", 1)[-1] if result.prediction_path else ""


# --- for the templates ---------------------------------------------------------------------------


def table_rows(table: dict, filters: dict[str, list[str]], *, skip_empty: bool = True) -> list:
    """Rows of a ``Table.to_dict()`` with, per cell, its column and the query of its case list
    (the column's filters plus the page's own, and the vertebra)."""
    rows = []
    for row in table["rows"]:
        if skip_empty and row["label"] is not None and not any(c["n"] for c in row["cells"]):
            continue
        cells = []
        for column, cell, published in zip(
            table["columns"], row["cells"], row["published"], strict=True
        ):
            merged = {**filters, **{k: [v] for k, v in column["filters"].items()}}
            label = row["title"] if row["label"] is not None else None
            far_dsc, far_hd95 = table2.differs(table2.Cell(**cell), published)
            cells.append(
                {
                    **cell,
                    "column": column,
                    "published": published,
                    "differs_dsc": far_dsc,
                    "differs_hd95": far_hd95,
                    "query": query_string(merged, label=label),
                }
            )
        rows.append({**row, "cells": cells})
    return rows


def table_columns(table: dict, filters: dict[str, list[str]]) -> list[dict]:
    """Columns of a ``Table.to_dict()`` with the query of their case list."""
    return [
        {
            **column,
            "query": query_string({**filters, **{k: [v] for k, v in column["filters"].items()}}),
        }
        for column in table["columns"]
    ]


def plot_of(report: dict):
    """The strip plot of a report's per-label Dice values."""
    return strip_plot(
        (int(label), value["case_id"], value["dice"])
        for label, values in report["dice_by_label"].items()
        for value in values
    )


def resolution_of(report: dict):
    """The resolution figure: each case's Mean of Vertebrae Dice against its slice spacing."""
    return resolution_plot(
        (p["case_id"], p["z_spacing_mm"], p["mean_dice"], p["source"]) for p in report["resolution"]
    )


def anomaly_plot_of(table: dict):
    """Per vertebra, the mean Dice of each anomaly group, from the anomaly table."""
    return group_plot(
        (row["label"], column["key"], cell["dice"], cell["n"])
        for row in table["rows"]
        if row["label"] is not None
        for column, cell in zip(table["columns"], row["cells"], strict=True)
        if cell["dice"] is not None
    )


def case_rows(selection: Selection):
    """The case list of the cases page: with a label, that vertebra's row of each case (worst
    first, optionally only one kind of level error); without, each case's means."""
    if selection.label is None:
        return selection.cases.scored().worst_first(), False
    labels = (
        LabelResult.objects.filter(case_result__in=selection.cases.scored().values("pk"))
        .of_label(selection.label)
        .level_error(selection.level)
        .worst_first()
        .select_related("case_result")
    )
    return labels, True


def level_rows(report: dict, splits, filters: dict[str, list[str]]) -> list[dict]:
    """The level-error rows grouped by vertebra, one entry per split (None: not in that split),
    each with the queries of its case lists (all cases, and each kind of level error)."""
    by_label: dict[int, dict] = {}
    for row in report["summary"]["level_errors"]:
        entry = by_label.setdefault(row["label"], {"label": row["label"], "name": row["name"]})
        merged = {**filters, "split": [row["split"]]}
        queries = {
            level: query_string(merged, label=row["name"], level=level) for level in (None, *LEVELS)
        }
        entry[row["split"]] = {**row, "query": queries.pop(None), "queries": queries}
    return [
        {**entry, "splits": [entry.get(split) for split in splits]}
        for _, entry in sorted(by_label.items())
    ]


def run_page_context(run: EvaluationRun, selection: Selection) -> dict:
    """Everything the run page renders."""
    report = run_report(run, selection)
    summary = report["summary"]
    filters = selection.filters
    return {
        "run": run,
        "report": report,
        "selection": selection,
        "filter_query": query_string(filters),
        "table2": summary["table2"],
        "table2_rows": table_rows(summary["table2"], filters, skip_empty=False),
        "table2_columns": table_columns(summary["table2"], filters),
        "by_source": [
            {
                "table": table,
                "rows": table_rows(table, filters),
                "columns": table_columns(table, filters),
            }
            for table in summary["by_source"]
        ],
        "anomalies": summary["anomalies"],
        "anomaly_rows": table_rows(summary["anomalies"], filters),
        "anomaly_columns": table_columns(summary["anomalies"], filters),
        "level_rows": level_rows(report, run.splits, filters),
        "split_titles": [table2.SPLIT_TITLES.get(s, s) for s in run.splits],
        "plot": plot_of(report),
        "resolution": resolution_of(report),
        "anomaly_plot": anomaly_plot_of(summary["anomalies"]),
        "worst": summary["worst_cases"],
        "worst_cases": selection.cases.scored().worst_first()[:10],
        "choices": FILTER_CHOICES,
        "missing": missing_phrase(run),
        "set_aside": set_aside_phrase(summary["set_aside"]),
        "dice_threshold": table2.DICE_THRESHOLD,
        "hd95_threshold_mm": table2.HD95_THRESHOLD_MM,
    }
