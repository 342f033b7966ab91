"""Search API parameters: validation and the label table."""

import pytest
from django.core.management import call_command

from tests.support.datasets import phantom_specs

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
        assert bad in response.json(), response.json()


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
    assert client.get("/api/docs/").status_code == 200


def test_unknown_case_is_404(client, catalog):
    assert client.get("/api/cases/no_such_case/").status_code == 404


def test_login_only_dataset(client, catalog, settings, user):
    settings.CTSPINE_PUBLIC_DATASET = False
    assert client.get("/api/cases/").status_code in (401, 403)
    assert client.get("/").status_code == 302
    client.force_login(user)
    assert client.get("/api/cases/").status_code == 200
