"""Clear states in Chromium: an empty filter result, a thumbnail or volume that fails to load
(message, retry), a case not downloaded and a case whose ingestion failed."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from viewer.models import Case

pytestmark = pytest.mark.browser


def test_empty_filter_result_says_so_and_offers_to_clear(site, page, shot):
    page.goto(f"{site}/?q=no-such-case&view=grid")
    expect(page.locator("#empty-result")).to_be_visible()
    expect(page.locator("#result-count")).to_have_text("0")
    expect(page.locator("#case-grid")).to_have_count(0)
    shot("empty")
    page.locator("#empty-result").get_by_role("link", name="Clear all filters").click()
    expect(page.locator("#result-count")).to_have_text(str(Case.objects.count()))
    expect(page.locator("#case-table")).to_be_visible()


def test_failed_thumbnail_shows_a_message_and_retries(site, page, console, shot):
    console.expect(r"status of 500|HTTP 500")
    first = Case.objects.order_by("case_id").first().case_id
    attempts = []

    def handle(route):
        attempts.append(route.request.url)
        if len(attempts) == 1:
            route.fulfill(status=500, content_type="application/json", body='{"error": "boom"}')
        else:
            route.continue_()

    page.route(f"**/api/cases/{first}/thumbnail.png", handle)
    page.goto(f"{site}/?view=grid")
    card = page.locator(f'#case-grid .card[data-case="{first}"]')
    expect(card.locator(".thumb-error")).to_contain_text("Thumbnail failed to load")
    shot("thumbnail-error")
    card.get_by_role("button", name=re.compile("Retry")).click()
    expect(card.locator(".thumb-error")).to_be_hidden()
    page.wait_for_function(
        '(id) => document.querySelector(`.card[data-case="${id}"] img`).naturalWidth > 0', arg=first
    )
    assert len(attempts) == 2


def test_cases_not_downloaded_or_failed_say_why(site, page, shot):
    missing, broken = Case.objects.order_by("case_id")[:2]
    Case.objects.filter(pk=missing.pk).update(downloaded=False)
    Case.objects.filter(pk=broken.pk).update(error="label grid differs from the image grid")

    page.goto(f"{site}/?view=grid")
    expect(page.locator(f'.card[data-case="{missing.case_id}"] .placeholder')).to_have_text(
        "not downloaded"
    )
    expect(page.locator(f'.card[data-case="{broken.case_id}"] .placeholder')).to_have_text(
        "ingestion error"
    )
    shot("grid")

    page.goto(f"{site}/cases/{missing.case_id}/")
    expect(page.locator("#case-not-downloaded")).to_contain_text("not in the configured download")
    expect(page.locator("#viewer")).to_have_count(0)
    expect(page.locator("#metadata")).to_be_visible()
    shot("not-downloaded")

    page.goto(f"{site}/cases/{broken.case_id}/")
    expect(page.locator("#case-error")).to_contain_text("label grid differs from the image grid")
    expect(page.locator("#viewer")).to_have_count(0)
    shot("ingestion-error")


def test_volume_that_fails_to_load_shows_why_and_retries(site, page, viewer, console, shot):
    console.expect(r"status of 409|HTTP 409")
    case_id = Case.objects.filter(vertebra_mask__gt=0).order_by("case_id").first().case_id
    failing = {"on": True}

    def handle(route):
        if failing["on"]:
            body = '{"error": "the image file changed while it was read"}'
            route.fulfill(status=409, content_type="application/json", body=body)
        else:
            route.continue_()

    page.route("**/volume/", handle)
    page.goto(f"{site}/cases/{case_id}/")
    message = page.locator('#viewer [data-role="message"]')
    expect(message).to_contain_text("the image file changed while it was read")
    shot("volume-error")
    failing["on"] = False
    message.get_by_role("button", name="Retry").click()
    page.wait_for_function("document.body.dataset.viewsReady === 'true'")
    viewer.wait_ready()
    expect(message).to_be_hidden()


def test_layer_switch_appears_when_the_volume_has_several_layers(site, page, viewer):
    """The inference pages reuse the viewer with labels / reference / compare layers."""
    case_id = Case.objects.filter(vertebra_mask__gt=0).order_by("case_id").first().case_id
    asked: list[str] = []

    def with_layers(route):
        response = route.fetch()
        body = response.json()
        body["layers"] = ["labels", "reference", "compare"]
        route.fulfill(response=response, json=body)

    def strip_layer(route):
        # The case has no reference labels: note what was asked, let the server draw labels.
        asked.append(route.request.url)
        route.continue_(url=re.sub(r"&layer=\w+", "", route.request.url))

    page.route("**/volume/", with_layers)
    page.route(re.compile(r"layer=compare"), strip_layer)
    viewer.open(f"{site}/cases/{case_id}/")
    layers = page.locator('#viewer [data-role="layers"]')
    expect(layers).to_be_visible()
    expect(layers.get_by_role("radio")).to_have_count(3)
    layers.get_by_label("Compare").check()
    viewer.wait_for("document.querySelector('#viewer').viewer.store.state.layer === 'compare'")
    assert any("/slices/axial/" in url for url in asked)
    page.wait_for_function("location.search.includes('layer=compare')")
