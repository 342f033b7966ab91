"""Segmentation as a new user meets it after `make run`: signed in as the demo account, press
"Segment with nnU-Net" on a dataset case, watch the job progress, and see the demo model's
prediction over the image with the comparison overlay and the per-vertebra metrics."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from ctspine.phantom.plan import plan_cases
from inference import demo_model
from tests.inference.conftest import media, run_db_worker
from tests.support.demo_model import anisotropic_lps, use_demo_model

__all__ = ["media"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_demo_user_segments_a_dataset_case(site, settings, media, page, console, shot, tmp_path):
    use_demo_model(settings)
    account = tmp_path / ".demo-account"
    call_command("demo_account", str(account))
    password = dict(line.split(": ", 1) for line in account.read_text().splitlines())["password"]
    case_id = anisotropic_lps(plan_cases(24, seed=7)).case_id  # the site's phantom download

    page.goto(f"{site}/accounts/login/?next=/cases/{case_id}/")
    page.fill("input[name=username]", "demo")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site}/cases/{case_id}/")
    page.click("#segment-case")
    page.wait_for_url(f"{site}/jobs/*/")
    assert page.locator("#job-state").inner_text() == "Queued"
    assert page.locator("#job-progress").is_visible()
    shot("queued")
    job_url = page.url

    # The worker runs in this thread. The page waits elsewhere meanwhile: its polls reach the
    # job API, whose GET may write (reaping), and SQLite's one writer would then refuse one side.
    page.goto("about:blank")
    run_db_worker()
    page.goto(job_url)

    page.wait_for_selector("#metrics-table", timeout=60_000)
    assert page.locator("#job-state").inner_text() == "Succeeded"
    assert page.locator("#model-notice").inner_text() == f"Result of the {demo_model.NOTICE}."
    page.wait_for_function("document.body.dataset.viewsReady === 'true'")
    layers = page.locator('#viewer [data-role="layers"]').inner_text()
    assert "Ground truth" in layers and "Comparison" in layers
    rows = page.locator("#metrics-table tbody tr[data-voxel]")
    assert rows.count() >= 5
    shot("result")
    assert console.unexpected() == []
