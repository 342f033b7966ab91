"""Evaluating a folder of predictions against the catalog's ground truth (``manage.py evaluate``).

1. Which cases: those of the evaluated split(s) that have ground truth in this download
   (downloaded, a label file, no ingestion error).
2. Which file predicts which case: ``evaluation.prediction_files``.
3. Metrics per case in a process pool over the pure ``evaluation.case_metrics.evaluate_pair``.
4. Rows stored (``CaseResult`` per case of the split, ``LabelResult`` per vertebra counted), the
   tables of ``evaluation.table2`` computed, CSV and JSON files written.

A missing prediction, a prediction on another grid or an unreadable file is stored as that
case's status and listed; it never stops the run.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ctspine.atomic import write_text
from ctspine.dataset.layout import PathOutsideRoot, resolve_inside
from ctspine.imaging.volume_io import VolumeError
from evaluation import table2
from evaluation.case_metrics import MISSING, OK, PairResult, PairTask, evaluate_pair
from evaluation.models import EVALUATED_SPLITS, CaseResult, EvaluationRun, LabelResult
from evaluation.prediction_files import match_predictions
from evaluation.reference_sets import (
    VERSE,
    VERSE_SET,
    reference_files,
    set_aside_summary,
    set_key,
)
from evaluation.result_files import (
    file_stem,
    labels_csv,
    notes_path,
    table_csv,
    table_notes,
    write_json,
)
from evaluation.serializers import RunDocumentSerializer
from viewer.models import Case
from viewer.tiles.volumes import cache_location

# progress(iterable, total) -> the same items, e.g. wrapped in a tqdm bar.
Progress = Callable[[Iterable, int], Iterable]


class EvaluationError(Exception):
    """The evaluation cannot run at all (bad folder, bad split), as opposed to one bad case."""


@dataclass
class CasePlan:
    """The cases of the split that have ground truth (case id -> Case, absolute label path) and,
    for every other case of the catalog, why it is not evaluated (a phrase)."""

    cases: dict[str, Case | None] = field(default_factory=dict)  # None: not in the catalog
    references: dict[str, Path] = field(default_factory=dict)
    not_evaluated: dict[str, str] = field(default_factory=dict)
    without_reference: int = 0  # cases of the split with no ground truth in this download
    # For a reference folder: its set key, the source of its cases and its label convention.
    set_key: str = ""
    source: str = ""
    convention: str = "ctspine"

    def about(self, case_id: str) -> dict[str, str]:
        """Split, source and curated anomaly of a case ("" where unknown)."""
        case = self.cases[case_id]
        if case is None:
            return {"split": self.set_key, "source": self.source, "anomaly": ""}
        return {"split": case.split, "source": case.source, "anomaly": case.curated_anomaly}


def plan_reference_folder(folder: Path, set_name: str) -> CasePlan:
    """Every label map of ``folder`` as a case of the set ``set_name`` (not in the catalog);
    Test_VerSe's maps are read in VerSe's convention."""
    try:
        references = reference_files(folder)
        key = set_key(set_name)
    except (OSError, VolumeError, ValueError) as exc:
        raise EvaluationError(str(exc)) from exc
    verse = key == VERSE_SET
    return CasePlan(
        cases=dict.fromkeys(references),
        references=references,
        set_key=key,
        source="VerSe" if verse else "",
        convention=VERSE if verse else "ctspine",
    )


def plan_cases(splits: tuple[str, ...], *, root: Path) -> CasePlan:
    plan = CasePlan()
    for case in Case.objects.order_by("case_id"):
        if case.split not in splits:
            plan.not_evaluated[case.case_id] = f"is in split {case.split or 'none'}, not evaluated"
            continue
        reason = _why_no_reference(case)
        if reason is None:
            try:
                plan.references[case.case_id] = resolve_inside(root, case.label_path)
            except PathOutsideRoot:
                reason = "has its label file outside the data root"
        if reason is None:
            plan.cases[case.case_id] = case
        else:
            plan.not_evaluated[case.case_id] = reason
            plan.without_reference += 1
    return plan


def _why_no_reference(case: Case) -> str | None:
    if not case.downloaded:
        return "has no ground truth here (not downloaded)"
    if case.error:
        return "has no ground truth here (ingestion error)"
    if not case.has_label:
        return "has no ground truth here (no label file)"
    return None


def run_evaluation(
    prediction_dir: str | Path,
    *,
    split: str = "all",
    name: str = "",
    workers: int = 1,
    tolerance_mm: float = 2.0,
    out_dir: str | Path | None = None,
    progress: Progress | None = None,
    skip_missing: bool = False,
    reference_dir: str | Path | None = None,
    set_name: str = "Test_VerSe",
    cases: Collection[str] | None = None,
) -> EvaluationRun:
    """Evaluate every prediction of ``prediction_dir`` for the cases of ``split`` (test_public,
    test_private, all = both test splits, or train) and store an ``EvaluationRun``.

    ``reference_dir``: score against the label maps of this folder instead of the catalog (a
    set named ``set_name``; Test_VerSe in VerSe's label convention, ``split`` is then unused).
    ``skip_missing``: leave cases without a prediction out of the tables instead of scoring
    them as empty predictions (Dice 0 for each of their vertebrae, HD95 not defined).
    ``cases``: only these case ids of the split are expected (a batch over filtered cases);
    None: every case of the split.

    ``workers``: processes computing metrics (1: in this process). ``tolerance_mm``: the NSD
    tolerance. ``out_dir``: where the CSV and JSON files go (default: the prediction folder).
    Raises :class:`EvaluationError` when the folder, split or tolerance is unusable.

    The workers are spawned processes: a script calling this with ``workers > 1`` needs the
    usual ``if __name__ == "__main__":`` guard (``manage.py`` has it).
    """
    if split not in EVALUATED_SPLITS:
        raise EvaluationError(f"split must be one of {', '.join(EVALUATED_SPLITS)}, not {split!r}")
    if not tolerance_mm >= 0:  # also refuses NaN
        raise EvaluationError(f"the NSD tolerance must be >= 0 mm, not {tolerance_mm}")
    folder = Path(prediction_dir).expanduser().resolve()
    if reference_dir is not None:
        reference_dir = Path(reference_dir).expanduser().resolve()
        plan = plan_reference_folder(reference_dir, set_name)
        split = plan.set_key
    else:
        plan = plan_cases(EVALUATED_SPLITS[split], root=Path(settings.CTSPINE_DATA_ROOT))
    if cases is not None:
        for case_id in set(plan.cases) - set(cases):
            del plan.cases[case_id], plan.references[case_id]
            plan.not_evaluated[case_id] = "is not among the cases evaluated"
    try:
        match = match_predictions(folder, plan.cases, not_evaluated=plan.not_evaluated)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise EvaluationError(str(exc)) from exc
    run = EvaluationRun.objects.create(
        name=name or folder.name,
        prediction_dir=str(folder),
        split=split,
        reference_dir=str(reference_dir or ""),
        missing_as_failure=not skip_missing,
        tolerance_mm=tolerance_mm,
        workers=max(1, workers),
        cases_expected=len(plan.cases),
        unmatched_files=[{"name": u.name, "reason": u.reason} for u in match.unmatched],
    )
    try:
        start = time.perf_counter()
        predicted = [case_id for case_id in plan.cases if case_id in match.files]
        scored = predicted if skip_missing else list(plan.cases)
        tasks = [
            PairTask(
                case_id,
                str(plan.references[case_id]),
                str(match.files[case_id]) if case_id in match.files else None,
                tolerance_mm,
                plan.convention,
                cache=cache_location(),
            )
            for case_id in sorted(scored)
        ]
        items = _evaluate_all(tasks, workers=max(1, workers))
        results = list(progress(items, len(tasks)) if progress else items)
        seconds = time.perf_counter() - start
        _store(run, plan, match.files, results)
        _finish(run, results, seconds=seconds, out_dir=Path(out_dir) if out_dir else folder)
    except BaseException as exc:
        # Record why before re-raising, so the run is never left "running" after a failure
        # (KeyboardInterrupt included).
        run.status, run.error, run.finished = EvaluationRun.Status.FAILED, repr(exc), timezone.now()
        run.save(update_fields=["status", "error", "finished"])
        raise
    return run


def _evaluate_all(tasks: list[PairTask], *, workers: int) -> Iterator[PairResult]:
    """Results in completion order. ``spawn``: the workers import only the pure metric modules
    and inherit no database connection or thread of this process."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(evaluate_pair, tasks)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as pool:
        for future in as_completed([pool.submit(evaluate_pair, task) for task in tasks]):
            yield future.result()


def _store(run: EvaluationRun, plan: CasePlan, files: dict[str, Path], results) -> None:
    by_id = {result.case_id: result for result in results}
    rows, labels = [], []
    for case_id, case in sorted(plan.cases.items()):
        result = by_id.get(case_id, PairResult(case_id, MISSING, "no prediction file"))
        row = CaseResult(
            run=run,
            catalog_case=case,
            case_id=case_id,
            **plan.about(case_id),
            status=result.status,
            scored=bool(result.labels) or result.status == OK,
            error=result.error,
            prediction_path=str(files.get(case_id, "")),
            reference_path=str(plan.references[case_id]),
            mean_dice=result.mean_dice,
            mean_hd95_mm=result.mean_hd95_mm,
            mean_assd_mm=result.mean_assd_mm,
            mean_nsd=result.mean_nsd,
            spine_dice=result.spine_dice,
            spine_hd95_mm=result.spine_hd95_mm,
            level_errors=len(result.level_errors),
            off_by_one=result.off_by_one,
            messages=[*result.level_errors, *result.callouts],
            level_summary=list(result.level_summary),
            # RAS: the third axis runs from the feet to the head.
            z_spacing_mm=result.spacing_mm[2] if result.spacing_mm else None,
            seconds=result.seconds or None,
        )
        rows.append(row)
        labels += [
            LabelResult.from_metrics(value, run=run, case_result=row) for value in result.labels
        ]
    with transaction.atomic():
        CaseResult.objects.bulk_create(rows, batch_size=500)
        LabelResult.objects.bulk_create(labels, batch_size=1000)


def _finish(run: EvaluationRun, results: list[PairResult], *, seconds: float, out_dir: Path):
    statuses = [r.status for r in results]
    run.cases_evaluated = statuses.count(OK)
    run.cases_missing = run.cases_expected - len(results) + statuses.count(MISSING)
    run.cases_failed = len(statuses) - run.cases_evaluated - statuses.count(MISSING)
    run.seconds = seconds
    run.summary = {
        **table2.report(run.cases.as_records(), run.splits),
        "set_aside": set_aside_summary(r.set_aside for r in results),
    }
    run.status, run.finished = EvaluationRun.Status.DONE, timezone.now()
    try:
        _write_files(run, results, out_dir)
    except OSError as exc:  # the results are stored; only the files beside them are lost
        run.error = f"could not write the result files to {out_dir}: {exc}"
    run.save()


def _write_files(run: EvaluationRun, results: list[PairResult], out_dir: Path) -> None:
    stem = file_stem(run.pk, run.name)
    about = {
        row["case_id"]: row for row in run.cases.values("case_id", "split", "source", "anomaly")
    }
    table = table2.split_table(run.cases.as_records(), run.splits)
    csv_path = write_text(out_dir / f"{stem}_table2.csv", table_csv(table))
    run.table_csv_path = str(csv_path)
    write_text(notes_path(csv_path), table_notes(table, csv_name=csv_path.name))
    run.labels_csv_path = str(
        write_text(
            out_dir / f"{stem}_labels.csv",
            labels_csv([r for r in results if r.labels], about),
        )
    )
    document = RunDocumentSerializer(run).data
    run.json_path = str(write_json(out_dir / f"{stem}.json", document))
