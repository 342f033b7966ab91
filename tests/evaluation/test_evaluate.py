"""``manage.py evaluate`` on a prediction folder made by perturbing the phantom's ground truth in
known ways (tests/evaluation/conftest.py): the stored numbers, Table 2, the problems listed."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from statistics import fmean

import pytest
from django.core.management import CommandError, call_command

from ctspine.volume_cache import SourceIdentity
from evaluation.models import CaseResult, EvaluationRun, LabelResult
from evaluation.table2 import CONVENTIONS, MEAN_OF_CASES, MEAN_OF_SPINE, MEAN_OF_VERTEBRAE
from tests.evaluation.conftest import EVALUATED, SCORED, SHIFT_SLICES, run_evaluate
from viewer.tiles.volumes import volume_cache

pytestmark = pytest.mark.django_db


def _labels(run, case_id) -> dict[int, LabelResult]:
    return {
        row.label: row for row in LabelResult.objects.filter(run=run, case_result__case_id=case_id)
    }


def test_stores_the_expected_numbers_per_case_and_label(evaluated_run, prediction_folder):
    run, expected = evaluated_run.run, prediction_folder.expected
    assert run.status == EvaluationRun.Status.DONE, run.error
    assert (run.cases_expected, run.cases_evaluated) == (12, len(EVALUATED)) == (12, 9)
    for case_id in EVALUATED:
        result = CaseResult.objects.get(run=run, case_id=case_id)
        assert result.status == "ok"
        rows = _labels(run, case_id)
        assert set(rows) == set(expected.dice[case_id]), case_id  # the labels counted
        for label, dice in expected.dice[case_id].items():
            assert rows[label].dice == pytest.approx(dice, abs=1e-12), (case_id, label)
            assert (rows[label].hd95_mm is not None) == (label in expected.hd95_defined[case_id])
        assert result.mean_dice == pytest.approx(expected.mean_dice[case_id])
        assert result.spine_dice == pytest.approx(expected.spine_dice[case_id])
        assert result.prediction_path.startswith(str(prediction_folder.path))


def test_perfect_predictions_score_one_and_zero_mm(evaluated_run):
    for case_id in ("CTC-1018399231", "volume-covid19-A-0251_ct", "1.3.6.1.4.1.9328.50.4.0506"):
        result = CaseResult.objects.get(run=evaluated_run.run, case_id=case_id)
        assert (result.mean_dice, result.mean_hd95_mm) == (1.0, 0.0)
        assert (result.spine_dice, result.spine_hd95_mm, result.level_errors) == (1.0, 0.0, 0)


def test_known_perturbations(evaluated_run, prediction_folder):
    run, spacing = evaluated_run.run, prediction_folder.expected.spacing
    # Swapped C3/C4: both Dice 0 with distances defined, each mostly labelled as the other.
    swapped = _labels(run, "HN_P023")
    for label, other in ((3, 4), (4, 3)):
        assert swapped[label].dice == 0 and swapped[label].hd95_mm > 0
        assert (swapped[label].predicted_as, swapped[label].off_by_one) == (other, True)
    assert CaseResult.objects.get(run=run, case_id="HN_P023").spine_dice == 1.0
    # Missing T5: Dice 0, no distance, covered by no predicted vertebra.
    missing = _labels(run, "volume-covid19-A-0320_ct")[12]
    assert (missing.dice, missing.hd95_mm, missing.predicted_as, missing.pred_voxels) == (
        0,
        None,
        None,
        0,
    )
    # L1 shifted by 2 slices: a translation, so every surface distance is at most the shift.
    shifted = _labels(run, "liver_110")[20]
    shift_mm = SHIFT_SLICES * spacing["liver_110"][2]
    assert 0 < shifted.hd95_mm <= shift_mm + 1e-9
    assert (shifted.predicted_as, shifted.off_by_one) == (20, False)
    # Lumbarization missed: L6 labelled L5.
    lumbar = _labels(run, "1.3.6.1.4.1.9328.50.4.0699")
    assert (lumbar[25].dice, lumbar[25].hd95_mm, lumbar[25].predicted_as) == (0, None, 24)
    assert lumbar[25].off_by_one and 0 < lumbar[24].dice < 1
    # Extra L6: L5 labelled L6; L6 is counted although the ground truth has none.
    extra = _labels(run, "liver_165")
    assert (extra[25].ref_voxels, extra[25].dice, extra[25].hd95_mm) == (0, 0, None)
    assert (extra[24].predicted_as, extra[24].off_by_one) == (25, True)
    assert CaseResult.objects.get(run=run, case_id="liver_165").mean_dice == pytest.approx(8 / 10)


def test_missing_mismatched_and_unreadable_are_listed_not_fatal(evaluated_run):
    run, stderr = evaluated_run.run, evaluated_run.stderr
    problems = {c.case_id: c for c in run.cases.problems()}
    assert {k: v.status for k, v in problems.items()} == {
        "1.3.6.1.4.1.9328.50.4.0663": "missing",
        "1.3.6.1.4.1.9328.50.4.0555": "grid_mismatch",
        "HN_P029": "unreadable",
    }
    assert (run.cases_missing, run.cases_failed) == (1, 2)
    assert "differs from ground truth grid" in problems["1.3.6.1.4.1.9328.50.4.0555"].error
    assert "label values must be 0-25" in problems["HN_P029"].error
    assert "1.3.6.1.4.1.9328.50.4.0663: no prediction" in stderr
    assert "1.3.6.1.4.1.9328.50.4.0555: grid mismatch: prediction grid" in stderr
    unmatched = {f["name"]: f["reason"] for f in run.unmatched_files}
    assert unmatched == {
        "liver_0.nii.gz": "case liver_0 is in split train, not evaluated",
        "not-a-case.nii.gz": "matches no case id of the catalog",
    }
    assert "not used: liver_0.nii.gz" in stderr


def test_table2_averages_per_split_and_prints_in_the_paper_layout(evaluated_run, prediction_folder):
    run, expected = evaluated_run.run, prediction_folder.expected
    table = run.summary["table2"]
    assert [c["key"] for c in table["columns"]] == ["test_public", "test_private"]
    rows = {row["key"]: row for row in table["rows"]}
    for index, split in enumerate(("test_public", "test_private")):
        cases = [c for c in SCORED if expected.split[c] == split]
        row_means = []
        for key, row in rows.items():
            cell = row["cells"][index]
            if row["label"] is None:
                continue
            values = [
                expected.dice[c][row["label"]] for c in cases if row["label"] in expected.dice[c]
            ]
            assert cell["n"] == len(values), (split, key)
            assert cell["dice"] == (pytest.approx(fmean(values)) if values else None), (split, key)
            if values:
                row_means.append(fmean(values))
        # The paper's rule: the plain mean of the vertebra rows; the case-wise mean kept apart.
        assert rows[MEAN_OF_VERTEBRAE]["cells"][index]["dice"] == pytest.approx(fmean(row_means))
        assert rows[MEAN_OF_VERTEBRAE]["cells"][index]["n"] == len(row_means)
        by_case = rows[MEAN_OF_CASES]["cells"][index]
        assert by_case["dice"] == pytest.approx(fmean(expected.mean_dice[c] for c in cases))
        spine = rows[MEAN_OF_SPINE]["cells"][index]
        assert spine["dice"] == pytest.approx(fmean(expected.spine_dice[c] for c in cases))
    # L6 of test_public: the lumbarization case only, Dice 0, no HD95, L5 covers it.
    assert rows["L6"]["cells"][0] == {
        "dice": 0.0,
        "hd95_mm": None,
        "n": 1,
        "n_hd95": 0,
        "missed": 1,
    }
    # The case without a prediction: each of its vertebrae missed; Dice and HD95 counts differ.
    t10 = rows["T10"]["cells"][0]
    assert (t10["n"], t10["n_hd95"], t10["missed"]) == (5, 4, 1)
    assert rows[MEAN_OF_VERTEBRAE]["published"] == [[0.869, 5.40], [0.840, 6.41]]
    assert rows["L5"]["published"] == [[0.969, 1.49], [0.943, 2.45]]
    printout = evaluated_run.stdout
    assert "Table 2: DSC and HD95 (mm) per vertebra" in printout
    public_mean = rows[MEAN_OF_VERTEBRAE]["cells"][0]["dice"]
    line = next(line for line in printout.splitlines() if line.startswith("Mean of Vertebrae"))
    assert line.split()[3] == f"{public_mean:.3f}"
    assert re.search(r" 0\.869!? +5\.40!? ", line) and re.search(r" 0\.840!? +6\.41!?", line)
    # Every vertebra row carries the paper's numbers, C1 included.
    c1 = next(line for line in printout.splitlines() if line.startswith("C1 "))
    assert "0.951" in c1 and "0.957" in c1
    # T10 of Test_public: 5 Dice values, 4 HD95 values, missed in the case without prediction.
    t10_line = next(line for line in printout.splitlines() if line.startswith("T10 "))
    assert t10_line.split()[3:5] == ["5/4", "1"]
    assert "Test_public (6 cases)" in printout
    assert "Mean of Vertebrae (as the paper): the plain mean of the per-vertebra rows" in printout
    assert "1 without prediction (scored as empty predictions" in printout
    assert "  HN_P023: C3 labelled one level too low; C4 labelled one level too high" in printout


def test_writes_csv_and_json_beside_the_printout(evaluated_run):
    run = evaluated_run.run
    with open(run.table_csv_path) as handle:
        table = list(csv.DictReader(handle))
    mean = next(row for row in table if row["row"] == "Mean of Vertebrae")
    assert float(mean["test_public dsc"]) == pytest.approx(
        next(r for r in run.summary["table2"]["rows"] if r["key"] == MEAN_OF_VERTEBRAE)["cells"][0][
            "dice"
        ],
        abs=1e-6,
    )
    assert mean["test_public paper dsc"] == "0.869"
    rows = {row["row"]: row for row in table}
    assert {"Mean over cases", "Pooled over vertebrae"} <= set(rows)
    assert (rows["T10"]["test_public n_hd95"], rows["T10"]["test_public missed"]) == ("4", "1")
    assert rows["C1"]["test_private paper dsc"] == "0.957"
    # The footnotes beside it: which mean is which, and what each column holds.
    notes = Path(run.table_csv_path).with_name(Path(run.table_csv_path).stem + "_notes.txt")
    text = notes.read_text()
    assert text.startswith(f"Notes to {Path(run.table_csv_path).name}: Table 2")
    for note in CONVENTIONS:
        assert f"* {note}\n" in text
    assert "Mean over cases: the mean over cases of each case's own mean" in text
    assert "  test_public: Test_public, 6 cases\n" in text
    assert "  test_public n_hd95" not in text and "  n_hd95: values averaged for the HD95" in text
    assert f"(its notes: {notes.name})" in evaluated_run.stdout
    with open(run.labels_csv_path) as handle:
        labels = list(csv.DictReader(handle))
    assert len(labels) == LabelResult.objects.filter(run=run).count()
    document = json.loads(open(run.json_path).read())
    assert document["status"] == "done" and document["counts"]["evaluated"] == 9
    assert document["counts"]["missing"] == 1 and document["counts"]["missing_scored"] is True
    assert {c["case_id"] for c in document["cases"]} == set(SCORED)
    assert all(c["reference"].startswith("/") for c in document["cases"])
    missing = next(c for c in document["cases"] if c["case_id"] not in EVALUATED)
    assert missing["status"] == "missing" and missing["prediction"] == ""
    assert {label["dice"] for label in missing["labels"]} == {0.0}


def test_parallel_workers_give_the_same_rows(
    ingested_phantom, prediction_folder, tmp_path, settings
):
    settings.CTSPINE_CACHE_DIR = tmp_path / "cache-1"
    one = run_evaluate(prediction_folder.path, tmp_path / "1", "--verbosity", "0").run
    assert references_cached(one)
    settings.CTSPINE_CACHE_DIR = tmp_path / "cache-2"
    two = run_evaluate(
        prediction_folder.path,
        tmp_path / "2",
        "--workers",
        "2",
        "--split",
        "test_public",
        "--verbosity",
        "0",
    ).run
    assert two.workers == 2 and two.cases_expected == 6
    fields = ("case_result__case_id", "label", "dice", "hd95_mm", "assd_mm", "nsd", "predicted_as")
    public = LabelResult.objects.filter(case_result__split="test_public").order_by(*fields[:2])
    assert list(public.filter(run=two).values_list(*fields)) == list(
        public.filter(run=one).values_list(*fields)
    )
    assert references_cached(two)  # by the pool's processes


def references_cached(run: EvaluationRun) -> bool:
    """Whether the run read its ground truth through the configured volume cache (so that the
    evaluated split is warm in the viewer afterwards)."""
    cached = {entry.key for entry in volume_cache().entries() if entry.last_used is not None}
    references = CaseResult.objects.filter(run=run).values_list("reference_path", flat=True)
    return bool(references) and {SourceIdentity.of(p).key("label") for p in references} <= cached


def test_a_bad_folder_is_a_clear_error(ingested_phantom, tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        call_command("evaluate", str(tmp_path / "nowhere"))
    with pytest.raises(CommandError, match="NSD tolerance must be >= 0 mm"):
        call_command("evaluate", str(tmp_path), "--tolerance-mm", "-1")
    assert not EvaluationRun.objects.exists()
