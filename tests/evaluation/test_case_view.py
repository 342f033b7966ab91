"""An evaluated case in the viewer: prediction, ground truth and comparison layers."""

import io

import numpy as np
import pytest
from PIL import Image

from evaluation.models import OK, CaseResult
from tests.evaluation.test_pages import LUMBARIZED

pytestmark = pytest.mark.django_db


def test_evaluated_case_page_and_its_tiles(client, evaluated_run):
    run = evaluated_run.run
    result = CaseResult.objects.get(run=run, case_id=LUMBARIZED)
    assert result.status == OK
    page = client.get(f"/evaluations/{run.pk}/cases/{LUMBARIZED}/")
    html = page.content.decode()
    assert page.status_code == 200
    assert f'data-api="/api/evaluations/{run.pk}/cases/{LUMBARIZED}/"' in html
    assert '<tr data-label="25"' in html  # the L6 the prediction called L5
    base = f"/api/evaluations/{run.pk}/cases/{LUMBARIZED}"
    volume = client.get(f"{base}/volume/").json()
    assert volume["layers"] == ["labels", "reference", "compare"]
    index = volume["vertebrae"][-1]["positions"]["coronal"]["index"]
    tiles = {}
    for layer in ("labels", "reference", "compare"):
        response = client.get(f"{base}/slices/coronal/{index}.png", {"layer": layer, "opacity": 1})
        assert response.status_code == 200, response.content
        tiles[layer] = np.asarray(Image.open(io.BytesIO(response.content)))
    # The prediction mislabels L6, so the three layers draw different pixels.
    assert not np.array_equal(tiles["labels"], tiles["reference"])
    assert not np.array_equal(tiles["compare"], tiles["reference"])
    readout = client.get(
        f"{base}/voxel/", {"plane": "coronal", "index": index, "x": 0, "y": 0}
    ).json()
    assert "label" in readout and "reference" in readout


def test_cases_outside_the_run_or_not_evaluated(client, evaluated_run):
    run = evaluated_run.run
    assert client.get(f"/api/evaluations/{run.pk}/cases/nope/volume/").status_code == 404
    assert client.get(f"/evaluations/{run.pk}/cases/nope/").status_code == 404
    missing = CaseResult.objects.filter(run=run).exclude(status=OK).first()
    response = client.get(f"/api/evaluations/{run.pk}/cases/{missing.case_id}/volume/")
    assert response.status_code == 409 and "not evaluated" in response.json()["error"]


def test_evaluated_case_page_uses_the_job_pages_metrics_table(client, evaluated_run):
    run = evaluated_run.run
    html = client.get(f"/evaluations/{run.pk}/cases/{LUMBARIZED}/").content.decode()
    assert 'id="metrics-table"' in html and "Mean of Vertebrae" in html
    # L6 labelled L5: Dice 0 as a fraction with three decimals, mostly predicted as L5.
    l6 = html[html.index('<tr data-label="25"') :]
    l6 = l6[: l6.index("</tr>")]
    assert "<td>0.000</td>" in l6 and "L5 (off by one)" in l6 and "found-missed" in l6
