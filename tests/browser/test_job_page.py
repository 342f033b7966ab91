"""The job result page in Chromium: the shared viewer shows the job's image with the prediction,
offers the ground truth and comparison layers, and a click on a metrics-table row moves the
crosshair to that vertebra."""

from __future__ import annotations

import pytest

from inference import services
from inference.models import SegmentationJob
from inference.uploads import IncomingFile
from tests.inference.conftest import media, model, phantom_files, run_db_worker, tiny_model

# The inference fixtures this page needs (the browser ones come from tests/browser/conftest.py,
# whose single Playwright session all browser tests share).
__all__ = ["media", "model", "phantom_files", "tiny_model"]

pytestmark = pytest.mark.browser


def test_result_page_layers_and_row_jump(
    live_server,
    transactional_db,
    client,
    user,
    model,
    phantom_files,
    page,
    console,
):
    image, label = phantom_files
    upload = services.create_upload(
        user=user,
        image=IncomingFile(image, "ct.nii.gz"),
        label=IncomingFile(label, "ct_seg.nii.gz"),
    )
    job = services.create_job(user=user, upload=upload, mode="fast")
    run_db_worker()
    job.refresh_from_db()
    assert job.status == SegmentationJob.Status.SUCCEEDED, job.error

    client.force_login(user)
    page.context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
    )
    page.goto(f"{live_server.url}/jobs/{job.pk}/")
    page.wait_for_function("document.body.dataset.viewsReady === 'true'")
    layers = page.locator('#viewer [data-role="layers"]')
    assert layers.is_visible()
    assert "Ground truth" in layers.inner_text() and "Comparison" in layers.inner_text()

    row = page.locator("#metrics-table tbody tr[data-voxel]").last
    voxel = [int(v) for v in row.get_attribute("data-voxel").split(",")]
    row.locator("td").nth(1).click()  # anywhere in the row
    page.wait_for_function(
        "(voxel) => JSON.stringify(document.querySelector('#viewer').viewer.store.state.cursor)"
        " === JSON.stringify(voxel)",
        arg=voxel,
    )
    assert "active" in row.get_attribute("class")
    assert console.unexpected() == []
