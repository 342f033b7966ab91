"""HD95, ASSD and NSD in millimetres through ``manage.py evaluate``: an anisotropic case
(0.8 x 0.8 x 4 mm) with vertebrae moved by one voxel along k and along i, whose values are worked
out by hand in tests/support/anisotropic.py. Checked in the stored rows, the labels CSV, the JSON
document and the run's pages. Per-vertebra values only: they do not depend on how Table 2's
summary rows are formed."""

from __future__ import annotations

import csv
import json
import re

import pytest
from django.core.management import call_command

from evaluation.models import CaseResult, LabelResult
from tests.evaluation.conftest import run_evaluate
from tests.support import anisotropic
from tests.support.anisotropic import EXPECTED, L1, L2, SPACING_MM
from tests.support.datasets import copy_dataset, phantom_specs, save_ras
from viewer.models import Case

pytestmark = pytest.mark.django_db

# NIfTI stores voxel sizes as float32 (0.8 reads back as 0.800000011920929): compare to 1e-6.

CASE = "CTC-1018399231"  # a test_public case of the phantom, replaced by the anisotropic one
NAMES = {L1: "L1", L2: "L2"}


@pytest.fixture(scope="module")
def anisotropic_root(phantom_root, tmp_path_factory):
    spec = phantom_specs()[CASE]
    assert spec.split == "test_public"
    root = copy_dataset(phantom_root, tmp_path_factory.mktemp("anisotropic") / "CTSpine1K")
    save_ras(root / spec.image_relpath, anisotropic.image(), SPACING_MM)
    save_ras(root / spec.label_relpath, anisotropic.ground_truth(), SPACING_MM)
    return root


@pytest.fixture
def run(db, anisotropic_root, settings, tmp_path):
    settings.CTSPINE_DATA_ROOT = anisotropic_root
    call_command("ingest", str(anisotropic_root), verbosity=0)
    folder = tmp_path / "predictions"
    folder.mkdir()
    save_ras(folder / f"{CASE}.nii.gz", anisotropic.prediction(), SPACING_MM)
    return run_evaluate(folder, tmp_path / "out", "--split", "test_public", "--verbosity", "0").run


def test_the_case_is_catalogued_with_its_anisotropic_spacing(run):
    result = CaseResult.objects.get(run=run, case_id=CASE)
    assert result.status == "ok", result.error
    case = Case.objects.get(case_id=CASE)
    assert case.spacing == pytest.approx(list(SPACING_MM))


def test_stored_rows_are_in_mm(run):
    rows = {
        row.label: row for row in LabelResult.objects.filter(run=run, case_result__case_id=CASE)
    }
    assert set(rows) == {L1, L2}
    for label, want in EXPECTED.items():
        row = rows[label]
        assert row.dice == pytest.approx(want.dice, abs=1e-6), label
        assert row.hd95_mm == pytest.approx(want.hd95_mm, abs=1e-6), label
        assert row.assd_mm == pytest.approx(want.assd_mm, abs=1e-6), label
        assert row.nsd == pytest.approx(want.nsd, abs=1e-6), label
        assert (row.ref_voxels, row.pred_voxels) == (want.ref_voxels, want.pred_voxels)
        assert row.predicted_as == label and not row.off_by_one


def test_labels_csv_is_in_mm(run):
    with open(run.labels_csv_path) as handle:
        rows = {int(r["label"]): r for r in csv.DictReader(handle) if r["case_id"] == CASE}
    assert set(rows) == {L1, L2}
    for label, want in EXPECTED.items():
        row = rows[label]
        assert row["name"] == NAMES[label]
        assert float(row["hd95_mm"]) == pytest.approx(want.hd95_mm, abs=1e-6), label
        assert float(row["assd_mm"]) == pytest.approx(want.assd_mm, abs=1e-6), label
        assert float(row["nsd"]) == pytest.approx(want.nsd, abs=1e-6), label
        assert float(row["dice"]) == pytest.approx(want.dice, abs=1e-6), label


def test_json_document_is_in_mm(run):
    with open(run.json_path) as handle:
        document = json.load(handle)
    (case,) = [c for c in document["cases"] if c["case_id"] == CASE]
    labels = {row["label"]: row for row in case["labels"]}
    assert set(labels) == {L1, L2}
    for label, want in EXPECTED.items():
        assert labels[label]["hd95_mm"] == pytest.approx(want.hd95_mm, abs=1e-6), label
        assert labels[label]["assd_mm"] == pytest.approx(want.assd_mm, abs=1e-6), label
        assert labels[label]["nsd"] == pytest.approx(want.nsd, abs=1e-6), label


def test_case_page_of_the_run_shows_mm(client, run):
    html = client.get(f"/evaluations/{run.pk}/cases/{CASE}/").content.decode()
    for label, want in EXPECTED.items():
        row = re.search(rf'<tr data-label="{label}"[^>]*>(.*?)</tr>', html, re.S).group(1)
        cells = [c.strip() for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
        assert cells[:5] == [
            NAMES[label],
            f"{want.dice:.3f}",
            f"{want.hd95_mm:.2f}",
            f"{want.assd_mm:.2f}",
            f"{want.nsd:.3f}",
        ], label


def test_run_cases_page_by_vertebra_shows_mm(client, run):
    for label, want in EXPECTED.items():
        html = client.get(f"/evaluations/{run.pk}/cases/", {"label": NAMES[label]}).content.decode()
        row = re.search(rf'<tr data-case="{re.escape(CASE)}">(.*?)</tr>', html, re.S).group(1)
        numbers = re.findall(r'<td class="num">([^<]*)</td>', row)
        assert numbers[:3] == [f"{want.dice:.3f}", f"{want.hd95_mm:.2f}", f"{want.nsd:.3f}"]
