"""Search API parameters: validation and the label table."""

import pytest
from django.core.management import call_command
from django.urls import reverse

from tests.support.datasets import phantom_specs
from viewer.models import Case

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog(ctspine_meta):
    call_command("ingest", str(ctspine_meta), "--metadata-only", verbosity=0)


@pytest.mark.parametrize(
    ("params", "bad"),
    [
        ({"source": "NOPE"}, "source"),
        ({"split": "validation"}, "split"),
        ({"anomaly": "scoliosis"}, "anomaly"),
        ({"anomaly_source": "rumour"}, "anomaly_source"),
        ({"vertebra": "L7"}, "vertebra"),
        ({"vertebra": "26"}, "vertebra"),
        ({"min_slices": "many"}, "min_slices"),
        ({"max_z_spacing": "thin"}, "max_z_spacing"),
        ({"position": "sideways"}, "position"),
        ({"ordering": "colour"}, "ordering"),
        ({"downloaded": "perhaps"}, "downloaded"),
        ({"sauce": "COLONOG"}, "sauce"),
    ],
)
def test_bad_parameter_is_400_naming_it(client, catalog, params, bad):
    for url in ("/api/cases/", "/api/cases/facets/"):
        response = client.get(url, params)
        assert response.status_code == 400, (url, params)
        body = response.json()
        assert body["field"] == bad and bad in body, body
        assert body["error"].startswith(f"{bad}: "), body


@pytest.mark.parametrize("page_size", ["0", "-3", "ten", "2.5"])
def test_bad_page_size_is_400_naming_it(client, catalog, page_size):
    response = client.get("/api/cases/", {"page_size": page_size})
    assert response.status_code == 400
    assert response.json()["field"] == "page_size"
    assert f"{page_size!r} is not a positive whole number" in response.json()["error"]


def test_page_size_is_capped(client, catalog):
    page = client.get("/api/cases/", {"page_size": 5000}).json()
    assert page["count"] == 1005 and len(page["results"]) == 1000


def test_vertebra_accepts_names_numbers_and_repeats(client, ingested_phantom):
    specs = phantom_specs().values()  # the phantom of tests/conftest.py
    with_l1_l2 = {s.case_id for s in specs if {20, 21} <= set(s.expected_labels)}
    with_l6 = {s.case_id for s in specs if 25 in s.expected_labels}
    assert with_l1_l2 and with_l6 and with_l1_l2 != {s.case_id for s in specs}
    for params, expected in (
        ({"vertebra": "L1,L2"}, with_l1_l2),
        ({"vertebra": ["L1", "21"]}, with_l1_l2),
        ({"vertebra": "l1, l2"}, with_l1_l2),
        ({"vertebra": ["L1", "L1", "L2"]}, with_l1_l2),
        ({"vertebra": "25"}, with_l6),
        ({"vertebra": ["L6", "L1"]}, with_l6 & with_l1_l2),
    ):
        response = client.get("/api/cases/", {**params, "page_size": 100})
        assert response.status_code == 200, response.content
        assert {row["case_id"] for row in response.json()["results"]} == expected, params


def test_labels_table(client):
    labels = client.get("/api/labels/").json()
    assert [lab["value"] for lab in labels] == list(range(1, 26))
    assert labels[0]["name"] == "C1" and labels[7]["name"] == "T1" and labels[24]["name"] == "L6"
    assert {lab["region"] for lab in labels} == {"cervical", "thoracic", "lumbar"}
    colours = [lab["colour"] for lab in labels]
    assert len(set(colours)) == 25


def test_window_presets(client):
    presets = {p["name"]: p for p in client.get("/api/windows/").json()}
    assert (presets["bone"]["width"], presets["bone"]["level"]) == (1800, 400)
    assert (presets["soft_tissue"]["width"], presets["soft_tissue"]["level"]) == (400, 40)
    assert (presets["lung"]["width"], presets["lung"]["level"]) == (1500, -600)


def test_ordering_and_pagination(client, catalog):
    page = client.get("/api/cases/", {"ordering": "-case_id", "page_size": 5}).json()
    ids = [r["case_id"] for r in page["results"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 5
    assert page["next"]


def test_openapi_schema_and_docs(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/cases/facets/" in schema.content
    document = client.get("/api/schema/", {"format": "json"}).json()
    for path in ("/api/cases/", "/api/cases/facets/"):
        parameters = {p["name"]: p for p in document["paths"][path]["get"]["parameters"]}
        for name in ("source", "split", "anomaly", "anomaly_source", "vertebra", "downloaded",
                     "min_slices", "max_slices", "min_z_spacing", "max_z_spacing", "position",
                     "q", "ordering"):  # fmt: skip
            assert name in parameters, (path, name)
        assert parameters["min_slices"]["description"] == "at least this many axial slices"
    assert {"page", "page_size"} <= {
        p["name"] for p in document["paths"]["/api/cases/"]["get"]["parameters"]
    }
    assert client.get("/api/docs/").status_code == 200


def test_schema_describes_the_labels_presets_and_facets(client):
    document = client.get("/api/schema/", {"format": "json"}).json()

    def answer(path):
        return document["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]

    schemas = document["components"]["schemas"]
    assert answer("/api/labels/")["schema"]["items"]["$ref"].endswith("/Label")
    assert set(schemas["Label"]["properties"]) == {"value", "name", "region", "colour"}
    assert answer("/api/windows/")["schema"]["items"]["$ref"].endswith("/WindowPreset")
    assert set(schemas["WindowPreset"]["properties"]) == {"name", "width", "level", "title"}
    assert answer("/api/cases/facets/")["schema"]["$ref"].endswith("/Facets")
    facets = client.get("/api/cases/facets/").json()
    assert set(schemas["Facets"]["properties"]) == set(facets)


def test_case_urls_are_reversed_in_the_viewer_namespace(catalog):
    case = Case.objects.get(case_id="liver_106")
    assert case.get_absolute_url() == "/cases/liver_106/"
    assert reverse("viewer:api:case-thumbnail", args=["liver_106", "png"]) == (
        "/api/cases/liver_106/thumbnail.png"
    )
    assert reverse("viewer:api:case-list") == "/api/cases/"


def test_unknown_case_is_404(client, catalog):
    response = client.get("/api/cases/no_such_case/")
    assert response.status_code == 404
    assert (
        response.json()["error"] == response.json()["detail"] == "No Case matches the given query."
    )


def test_login_only_dataset(client, catalog, settings, user):
    settings.CTSPINE_PUBLIC_DATASET = False
    assert client.get("/api/cases/").status_code in (401, 403)
    page = client.get("/", {"source": "COLONOG"})
    assert page.status_code == 302 and page.url == "/accounts/login/?next=/%3Fsource%3DCOLONOG"
    assert client.get("/cases/liver_106/").url == "/accounts/login/?next=/cases/liver_106/"
    client.force_login(user)
    assert client.get("/api/cases/").status_code == 200


def test_browse_pages_link_to_their_neighbours_keeping_the_filter(client, catalog, monkeypatch):
    from viewer import pages

    monkeypatch.setattr(pages, "PAGE_SIZE", 2)
    count = Case.objects.filter(source="COLONOG").count()
    assert count > 4  # at least three pages
    html = client.get("/", {"source": "COLONOG", "page": 2}).content.decode()
    assert f"<span>page 2 of {-(-count // 2)}</span>" in html
    assert '<a href="?source=COLONOG&amp;page=1" rel="prev">' in html
    assert '<a href="?source=COLONOG&amp;page=3" rel="next">' in html
    single = client.get("/", {"source": "COLONOG", "page": 1}).content.decode()
    assert 'rel="prev"' not in single and 'rel="next"' in single
