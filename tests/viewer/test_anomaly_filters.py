"""The two anomaly sources when they disagree, both ways: a published lumbarization whose labels
have no L6, and an L6 in a case on no published list. Exact case sets for every ``anomaly``
value with ``anomaly_source=curated`` and ``labels``, the facet counts, and the badge."""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command

from tests.support.datasets import copy_dataset, phantom_specs, relabel
from viewer.models import Case

pytestmark = pytest.mark.django_db

L5, L6 = 24, 25
LOST_L6 = "1.3.6.1.4.1.9328.50.4.0004"  # curated lumbarization: its L6 relabelled background
NEW_L6 = "liver_100"  # on no list: its L5 relabelled L6
KINDS = ("lumbarization", "sacralization")


@pytest.fixture(scope="module")
def disagreeing_root(phantom_root, tmp_path_factory):
    specs = phantom_specs()
    assert specs[LOST_L6].anomaly == "lumbarization" and specs[NEW_L6].anomaly is None
    root = copy_dataset(phantom_root, tmp_path_factory.mktemp("disagree") / "CTSpine1K")
    relabel(root / specs[LOST_L6].label_relpath, {L6: 0})
    relabel(root / specs[NEW_L6].label_relpath, {L5: L6})
    return root


@pytest.fixture
def catalog(db, disagreeing_root, settings):
    settings.CTSPINE_DATA_ROOT = disagreeing_root
    call_command("ingest", str(disagreeing_root), verbosity=0)
    assert not Case.objects.exclude(error="").exists()
    return disagreeing_root


def _expected() -> dict[str, dict[str, set[str]]]:
    """{source: {anomaly value: case ids}}, from the phantom's plan and the two edits above."""
    curated = {case_id: spec.anomaly or "" for case_id, spec in phantom_specs().items()}
    labels = {**curated, LOST_L6: "", NEW_L6: "lumbarization"}
    expected = {}
    for source, by_case in (("curated", curated), ("labels", labels)):
        expected[source] = {kind: {c for c, a in by_case.items() if a == kind} for kind in KINDS}
        expected[source]["any"] = {c for c, a in by_case.items() if a}
        expected[source]["none"] = {c for c, a in by_case.items() if not a}
    return expected


EXPECTED = _expected()


def test_the_fixture_disagrees_both_ways():
    curated, labels = EXPECTED["curated"], EXPECTED["labels"]
    assert LOST_L6 in curated["lumbarization"] and LOST_L6 in labels["none"]
    assert NEW_L6 in curated["none"] and NEW_L6 in labels["lumbarization"]
    assert curated["lumbarization"] != labels["lumbarization"]
    assert len(curated["sacralization"]) == 3 and curated["any"] != labels["any"]


@pytest.mark.parametrize("source", ["curated", "labels"])
@pytest.mark.parametrize("anomaly", ["lumbarization", "sacralization", "any", "none"])
def test_anomaly_filter_returns_exactly_the_cases_of_its_source(client, catalog, source, anomaly):
    params = {"anomaly": anomaly, "anomaly_source": source, "page_size": 100}
    page = client.get("/api/cases/", params).json()
    assert {row["case_id"] for row in page["results"]} == EXPECTED[source][anomaly]
    assert page["count"] == len(EXPECTED[source][anomaly])


def test_curated_is_the_default_source(client, catalog):
    page = client.get("/api/cases/", {"anomaly": "lumbarization", "page_size": 100}).json()
    assert {row["case_id"] for row in page["results"]} == EXPECTED["curated"]["lumbarization"]


def test_facets_count_both_sources(client, catalog):
    facets = client.get("/api/cases/facets/").json()
    for key, source in (("anomaly", "curated"), ("anomaly_labels", "labels")):
        assert facets[key] == {k: len(v) for k, v in EXPECTED[source].items()}, key
    assert facets["anomaly"] == {"lumbarization": 3, "sacralization": 3, "any": 6, "none": 18}
    assert facets["anomaly_labels"] == {
        "lumbarization": 3,
        "sacralization": 3,
        "any": 6,
        "none": 18,
    }
    # Filtered: the facets describe the filtered set.
    labelled = client.get(
        "/api/cases/facets/", {"anomaly": "lumbarization", "anomaly_source": "labels"}
    ).json()
    assert labelled["total"] == 3
    assert labelled["anomaly"] == {"lumbarization": 2, "sacralization": 0, "any": 2, "none": 1}
    assert labelled["anomaly_labels"] == {
        "lumbarization": 3,
        "sacralization": 0,
        "any": 3,
        "none": 0,
    }
    published = client.get("/api/cases/facets/", {"anomaly": "lumbarization"}).json()
    assert published["anomaly"] == {"lumbarization": 3, "sacralization": 0, "any": 3, "none": 0}
    assert published["anomaly_labels"] == {
        "lumbarization": 2,
        "sacralization": 0,
        "any": 2,
        "none": 1,
    }


def test_each_case_reports_both_sources_and_whether_they_disagree(client, catalog):
    page = client.get("/api/cases/", {"page_size": 100}).json()
    anomalies = {row["case_id"]: row["anomalies"] for row in page["results"]}
    assert {c for c, a in anomalies.items() if a["disagree"]} == {LOST_L6, NEW_L6}
    assert anomalies[LOST_L6] == {"curated": "lumbarization", "labels": None, "disagree": True}
    assert anomalies[NEW_L6] == {"curated": None, "labels": "lumbarization", "disagree": True}


def _cards(html: str) -> dict[str, str]:
    """The browse grid's cards: {case id: the card's HTML}."""
    parts = re.split(r'<li class="card[^"]*" data-case="', html)[1:]
    return {part[: part.index('"')]: part[: part.index("</li>")] for part in parts}


def test_browse_page_shows_the_disagree_badge_on_exactly_those_cases(client, catalog):
    html = client.get("/", {"view": "grid"}).content.decode()
    cards = _cards(html)
    assert set(cards) == set(phantom_specs())
    badged = {case_id for case_id, card in cards.items() if "badge warn" in card}
    assert badged == {LOST_L6, NEW_L6}
    assert "labels: none" in cards[LOST_L6] and ">lumbarization<" in cards[LOST_L6]
    assert "labels: lumbarization" in cards[NEW_L6]
    table = client.get("/").content.decode()
    rows = re.findall(r'<tr data-case="([^"]+)"[^>]*>(.*?)</tr>', table, re.S)
    assert {case_id for case_id, row in rows if "≠ labels" in row} == {LOST_L6, NEW_L6}


@pytest.mark.parametrize("source", ["curated", "labels"])
@pytest.mark.parametrize("anomaly", ["lumbarization", "sacralization", "any", "none"])
def test_browse_page_filters_exactly_the_cases_of_its_source(client, catalog, source, anomaly):
    """The page's anomaly filter is the API's (one queryset), for either source."""
    params = {"view": "grid", "anomaly": anomaly, "anomaly_source": source, "page_size": 100}
    page = client.get("/", params)
    assert page.status_code == 200
    assert set(_cards(page.content.decode())) == EXPECTED[source][anomaly]


def test_case_page_says_the_sources_disagree(client, catalog):
    for case_id in (LOST_L6, NEW_L6):
        page = client.get(f"/cases/{case_id}/").content.decode()
        assert "The published list and the labels disagree." in page
    agreeing = sorted(EXPECTED["curated"]["sacralization"])[0]
    assert "The published list and the labels disagree." not in (
        client.get(f"/cases/{agreeing}/").content.decode()
    )
