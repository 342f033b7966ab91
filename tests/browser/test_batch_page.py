"""The batch page in Chromium: it follows a running batch by polling and, once a worker has run
the case and the evaluation, shows the case done, its worker and the evaluation run."""

from __future__ import annotations

import pytest

from batches import services
from tests.batches.conftest import batch_settings, coarse_model, staff
from tests.inference.conftest import run_db_worker

# The batch fixtures this page needs (the browser ones come from tests/browser/conftest.py).
__all__ = ["batch_settings", "coarse_model", "staff"]

pytestmark = pytest.mark.browser


def test_batch_page_follows_the_batch_to_its_evaluation(
    live_server, transactional_db, client, batch_settings, staff, page, console
):
    batch = services.create_batch(
        user=staff, split="test_public", filters={"q": ["liver"]}, name="one case"
    )
    client.force_login(staff)
    page.context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
    )
    page.goto(f"{live_server.url}/batches/{batch.pk}/")
    assert page.locator("#count-queued").inner_text() == "1"
    assert page.locator("#cancel").is_visible()

    run_db_worker()  # the case, then the evaluation

    page.wait_for_selector("#batch-evaluation", timeout=20_000)  # the page reloaded by itself
    batch.refresh_from_db()
    job = batch.jobs().get()
    assert page.locator("#count-succeeded").inner_text() == "1"
    assert page.locator("#batch-state").inner_text() == "Done"
    assert page.locator("#batch-workers").inner_text().split()[-2:] == [job.worker, "1"]
    assert page.locator("#cancel").count() == 0
    page.locator("#batch-evaluation a").click()
    page.wait_for_url(f"**/evaluations/{batch.evaluation.pk}/")
    assert page.locator("#run-batch").inner_text() == "one case"
    assert console.unexpected() == []
