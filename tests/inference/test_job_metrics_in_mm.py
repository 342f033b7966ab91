"""A job's metrics in millimetres: the anisotropic case of tests/support/anisotropic.py
(0.8 x 0.8 x 4 mm, L1 moved one slice, L2 one column) uploaded with its ground truth and run
through the real task, pipeline and metric step. The network cannot be made to predict a
chosen shift, so the model is a stand-in returning that known prediction; everything after it
(writing the result, comparing with the ground truth, storing, the API, the page) is the real
code."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from inference import tasks
from inference.predictor import PredictionResult, PredictionTimings
from tests.inference.conftest import run_db_worker
from tests.support import anisotropic
from tests.support.anisotropic import EXPECTED, L1, L2, SPACING_MM
from tests.support.datasets import save_ras

NAMES = {L1: "L1", L2: "L2"}


class KnownPrediction:
    """A model stand-in: checks it is given the uploaded CT and its spacing, returns the
    prediction of tests/support/anisotropic.py."""

    device_name = "cpu"
    sees_stored_orientation = False  # arrays in RAS+, as the test builds them
    info = SimpleNamespace(as_dict=lambda: {"folder_name": "known prediction"})

    def predict_result(self, *, image, spacing_mm, progress=None):
        assert np.array_equal(image, anisotropic.image())
        assert spacing_mm == pytest.approx(SPACING_MM)
        if progress is not None:
            progress(1.0)
        return PredictionResult(
            labels=anisotropic.prediction(),
            timings=PredictionTimings(preprocess_s=0.0, network_s=0.0, export_s=0.0, total_s=0.0),
            device="cpu",
            tiles=1,
        )


@pytest.fixture
def finished_job(api, model, tmp_path, monkeypatch) -> int:
    monkeypatch.setattr(tasks, "load_predictor", lambda config: KnownPrediction())
    image = save_ras(tmp_path / "ct.nii.gz", anisotropic.image(), SPACING_MM)
    label = save_ras(tmp_path / "ct_seg.nii.gz", anisotropic.ground_truth(), SPACING_MM)
    with open(image, "rb") as image_file, open(label, "rb") as label_file:
        response = api.post(
            "/api/uploads/",
            {"image": image_file, "label": label_file, "mode": "fast"},
            format="multipart",
        )
    assert response.status_code == 201, response.content
    run_db_worker()
    return response.json()["job"]["id"]


@pytest.mark.django_db(transaction=True)
def test_job_metrics_are_in_mm_in_the_api(api, finished_job):
    body = api.get(f"/api/jobs/{finished_job}/").json()
    assert body["status"] == "succeeded", body["error"]
    rows = {row["label"]: row for row in body["metrics"]["per_label"]}
    assert set(rows) == {L1, L2}
    for label, want in EXPECTED.items():
        row = rows[label]
        assert row["dice"] == pytest.approx(want.dice, abs=1e-6), label
        assert row["hd95_mm"] == pytest.approx(want.hd95_mm, abs=1e-6), label
        assert row["assd_mm"] == pytest.approx(want.assd_mm, abs=1e-6), label
        assert row["nsd"] == pytest.approx(want.nsd, abs=1e-6), label
        assert (row["ref_voxels"], row["pred_voxels"]) == (want.ref_voxels, want.pred_voxels)
    assert body["metrics"]["tolerance_mm"] == anisotropic.TOLERANCE_MM


@pytest.mark.django_db(transaction=True)
def test_job_page_shows_the_metrics_in_mm(alice, finished_job):
    html = alice.get(f"/jobs/{finished_job}/").content.decode()
    for label, want in EXPECTED.items():
        row = re.search(rf'<tr data-label="{label}"[^>]*>(.*?)</tr>', html, re.S).group(1)
        cells = [
            re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", row, re.S)
        ]
        assert cells[1:5] == [
            f"{want.dice:.3f}",  # fractions, as the paper prints Dice
            f"{want.hd95_mm:.2f}",
            f"{want.assd_mm:.2f}",
            f"{want.nsd:.3f}",
        ], label
        assert cells[0].startswith(NAMES[label])
