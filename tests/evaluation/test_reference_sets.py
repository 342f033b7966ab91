"""Scoring against a folder of label maps outside the catalog: Test_VerSe, VerSe's labels."""

from __future__ import annotations

import io
import json
import re

import nibabel as nib
import numpy as np
import pytest
from django.core.management import CommandError, call_command

from evaluation.case_metrics import PairTask, evaluate_pair
from evaluation.models import EvaluationRun
from evaluation.reference_sets import read_reference, set_key
from evaluation.table2 import MEAN_OF_VERTEBRAE

pytestmark = pytest.mark.django_db

T13, SACRUM = 28, 26


def _save(path, array):
    nib.save(nib.Nifti1Image(array.astype(np.uint8), np.diag([1.5, 1.5, 2.0, 1.0])), path)


def verse_labels() -> np.ndarray:
    """L1-L6 (20-25) stacked along z, with a T13 (28) above and the sacrum (26) below."""
    volume = np.zeros((12, 12, 40), np.uint8)
    for k, value in enumerate([SACRUM, 25, 24, 23, 22, 21, 20, T13]):
        volume[2:10, 2:10, 2 + 4 * k : 5 + 4 * k] = value
    return volume


@pytest.fixture
def verse_folders(tmp_path):
    reference, prediction = tmp_path / "Verse", tmp_path / "pred"
    reference.mkdir(), prediction.mkdir()
    truth = verse_labels()
    _save(reference / "verse001_seg.nii.gz", truth)
    _save(reference / "verse002_seg.nii.gz", np.where(truth == SACRUM, 0, truth))  # no sacrum
    # verse001: a model that knows CTSpine1K labels only: C1-L6 right, T13 and sacrum background.
    _save(prediction / "verse001.nii.gz", np.where(truth > 25, 0, truth))
    return reference, prediction  # verse002 has no prediction


def test_verse_labels_set_aside_t13_and_sacrum(verse_folders, tmp_path):
    reference, prediction = verse_folders
    read = read_reference(reference / "verse001_seg.nii.gz", convention="verse")
    assert set(np.unique(read.volume.data)) == {0, 20, 21, 22, 23, 24, 25}
    assert [found.note for found in read.set_aside] == [
        "T13 (28) set aside: 192 voxels",
        "sacrum (26) set aside: 192 voxels",
    ]
    # The ignore region is exactly the T13 and sacrum voxels (the test file is stored in RAS).
    assert np.array_equal(read.ignore, np.isin(verse_labels(), [T13, SACRUM]))
    # Stored LPS, the region is reoriented with the labels.
    asymmetric = verse_labels()
    asymmetric[2:4, 2:3, 30:33] = 20
    lps = tmp_path / "lps.nii.gz"
    nib.save(nib.Nifti1Image(asymmetric, np.diag([-1.5, -1.5, 2.0, 1.0])), lps)
    read_lps = read_reference(lps, convention="verse")
    ras = asymmetric[::-1, ::-1, :]
    assert np.array_equal(read_lps.ignore, np.isin(ras, [T13, SACRUM]))
    assert np.array_equal(read_lps.volume.data, np.where(ras > 25, 0, ras))
    assert set_key("Test_VerSe") == "test_verse"
    # A CTSpine1K-convention file has nothing to set aside.
    plain = read_reference(prediction / "verse001.nii.gz")
    assert plain.ignore is None and plain.set_aside == ()


def test_a_prediction_over_set_aside_vertebrae_is_not_scored_there(tmp_path):
    """A prediction labelling the T13 region L1 (and the sacrum L5) scores exactly as one that
    leaves them background: Dice and surface distances alike, per vertebra and for the spine."""
    truth = verse_labels()
    _save(tmp_path / "gt.nii.gz", truth)
    plain = np.where(truth > 25, 0, truth)
    over = plain.copy()
    over[truth == T13], over[truth == SACRUM] = 20, 24
    _save(tmp_path / "plain.nii.gz", plain)
    _save(tmp_path / "over.nii.gz", over)

    def score(name):
        task = PairTask(name, str(tmp_path / "gt.nii.gz"), str(tmp_path / name), convention="verse")
        return evaluate_pair(task)

    a, b = score("plain.nii.gz"), score("over.nii.gz")
    assert a.status == b.status == "ok"
    assert b.labels == a.labels
    l1 = next(row for row in b.labels if row.name == "L1")
    assert (l1.dice, l1.hd95_mm, l1.pred_voxels) == (1.0, 0.0, 192)
    assert (b.spine_dice, b.spine_hd95_mm, b.mean_dice) == (a.spine_dice, a.spine_hd95_mm, 1.0)
    # What was set aside is reported with the case, not as one of its level errors.
    assert b.set_aside == (("T13", 192), ("sacrum", 192))
    assert "T13 (28) set aside: 192 voxels" in b.callouts and b.level_summary == ()


def test_evaluate_against_a_reference_folder_as_test_verse(client, verse_folders, tmp_path):
    reference, prediction = verse_folders
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command(
        "evaluate", str(prediction), "--reference", str(reference), "--name", "verse",
        "--set-name", "Test_VerSe", "--out", str(tmp_path), stdout=stdout, stderr=stderr,
    )  # fmt: skip
    run = EvaluationRun.objects.get(name="verse")
    assert (run.split, run.cases_expected, run.cases_evaluated, run.cases_missing) == (
        "test_verse", 2, 1, 1,
    )  # fmt: skip
    table = run.summary["table2"]
    assert [(c["key"], c["title"], c["cases"]) for c in table["columns"]] == [
        ("test_verse", "Test_VerSe", 2)
    ]
    rows = {row["key"]: row for row in table["rows"]}
    # verse001 perfect, verse002 without prediction: Dice 0 and no HD95 for each vertebra.
    assert rows["L6"]["cells"][0] == {
        "dice": 0.5, "hd95_mm": 0.0, "n": 2, "n_hd95": 1, "missed": 1,
    }  # fmt: skip
    assert rows["L6"]["published"] == [[0.0, 45.16]]
    assert rows[MEAN_OF_VERTEBRAE]["published"] == [[0.619, 6.23]]
    assert rows["T12"]["cells"][0]["n"] == 0  # T13 is not scored as anything
    case = run.cases.get(case_id="verse001")
    assert "T13 (28) set aside: 192 voxels" in case.messages
    assert case.catalog_case is None and case.source == "VerSe"
    printout = stdout.getvalue()
    assert "Test_VerSe (2 cases)" in printout
    # What was set aside, for the run: its own line, not among the level errors per case.
    assert run.summary["set_aside"] == [
        {"name": "T13", "value": 28, "cases": 2, "voxels": 384},
        {"name": "sacrum", "value": 26, "cases": 1, "voxels": 192},
    ]
    assert "Set aside (not scored as C1-L6): T13 in 2 cases, sacrum in 1 case." in printout
    assert "set aside: 192 voxels" not in printout  # no longer among the level errors
    with open(run.json_path) as handle:
        assert json.load(handle)["summary"]["set_aside"] == run.summary["set_aside"]
    assert "1 without prediction (scored as empty predictions" in printout
    assert "verse002: no prediction (scored as an empty prediction)" in stderr.getvalue()
    page = client.get(f"/evaluations/{run.pk}/")
    assert page.status_code == 200 and "ground truth from a folder outside the catalog" in (
        page.content.decode()
    )
    assert re.search(
        r'<dd id="set-aside"[^>]*>Not scored as C1–L6: T13 in 2 cases, sacrum in 1 case</dd>',
        page.content.decode(),
    )
    api = client.get(f"/api/evaluations/{run.pk}/").json()
    assert api["summary"]["set_aside"] == run.summary["set_aside"]
    case_page = client.get(f"/evaluations/{run.pk}/cases/verse001/").content.decode()
    assert 'id="metrics-table"' in case_page and 'id="not-viewable"' in case_page


def test_skip_missing_leaves_them_out(verse_folders, tmp_path):
    reference, prediction = verse_folders
    call_command(
        "evaluate", str(prediction), "--reference", str(reference), "--skip-missing",
        "--out", str(tmp_path), "--verbosity", "0",
    )  # fmt: skip
    run = EvaluationRun.objects.get()
    assert run.missing_as_failure is False and run.cases_missing == 1
    l6 = next(row for row in run.summary["table2"]["rows"] if row["key"] == "L6")
    assert l6["cells"][0] == {"dice": 1.0, "hd95_mm": 0.0, "n": 1, "n_hd95": 1, "missed": 0}


def test_bad_reference_input_is_a_clear_error(verse_folders, tmp_path):
    reference, prediction = verse_folders
    with pytest.raises(CommandError, match="reference folder .* does not exist"):
        call_command("evaluate", str(prediction), "--reference", str(tmp_path / "nowhere"))
    with pytest.raises(CommandError, match="holds no .nii or .nii.gz label map"):
        call_command("evaluate", str(prediction), "--reference", str(prediction / ".."))
    with pytest.raises(CommandError, match="--set-name names a --reference folder"):
        call_command("evaluate", str(prediction), "--set-name", "Other")
    # A VerSe value that is neither 1-25 nor set aside (27) makes that case unreadable.
    bad = verse_labels()
    bad[bad == 20] = 27
    _save(reference / "verse001_seg.nii.gz", bad)
    call_command(
        "evaluate", str(prediction), "--reference", str(reference), "--out", str(tmp_path),
        "--verbosity", "0", stderr=io.StringIO(),
    )  # fmt: skip
    case = EvaluationRun.objects.get().cases.get(case_id="verse001")
    assert case.status == "unreadable" and "label values must be 0-25" in case.error
