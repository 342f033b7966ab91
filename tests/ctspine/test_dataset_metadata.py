"""The catalog of the real CTSpine1K metadata reproduces the paper's Table 1."""

import pytest
from django.core.management import call_command

from ctspine.dataset.layout import DATASET_SOURCES, image_path, label_path
from ctspine.dataset.metadata import CuratedAnomaly, curated_anomalies

pytestmark = pytest.mark.django_db

TABLE_1 = {
    "COLONOG": {"train": 480, "test_public": 152, "test_private": 152},
    "HNSCC-3DCT-RT": {"train": 20, "test_public": 5, "test_private": 6},
    "MSD-T10": {"train": 90, "test_public": 30, "test_private": 30},
    "COVID-19": {"train": 20, "test_public": 10, "test_private": 10},
}
ANOMALIES = {
    "COLONOG": {"lumbarization": 16, "sacralization": 9},
    "HNSCC-3DCT-RT": {"lumbarization": 0, "sacralization": 0},
    "MSD-T10": {"lumbarization": 1, "sacralization": 2},
    "COVID-19": {"lumbarization": 0, "sacralization": 0},
}


@pytest.fixture
def metadata_catalog(ctspine_meta):
    call_command("ingest", str(ctspine_meta), "--metadata-only", verbosity=0)


def test_table_1_counts_per_source_and_split(client, metadata_catalog):
    for source, splits in TABLE_1.items():
        facets = client.get("/api/cases/facets/", {"source": source}).json()
        assert facets["split"] == splits, source
        assert facets["total"] == sum(splits.values())
        for anomaly, count in ANOMALIES[source].items():
            assert facets["anomaly"][anomaly] == count, (source, anomaly)
    everything = client.get("/api/cases/facets/").json()
    assert everything["total"] == 1005
    assert everything["split"] == {"train": 610, "test_public": 197, "test_private": 198}
    assert everything["anomaly"]["lumbarization"] == 17
    assert everything["anomaly"]["sacralization"] == 11
    assert everything["downloaded"] == {"no": 1005}


def test_list_filters_agree_with_facets(client, metadata_catalog):
    page = client.get("/api/cases/", {"anomaly": "lumbarization", "page_size": 100}).json()
    assert page["count"] == 17
    assert {r["case_id"] for r in page["results"]} >= {"liver_106", "1.3.6.1.4.1.9328.50.4.0004"}
    assert all(r["anomalies"]["curated"] == "lumbarization" for r in page["results"])
    assert all(r["downloaded"] is False for r in page["results"])
    split = client.get("/api/cases/", {"split": "test_public", "source": "MSD-T10"}).json()
    assert split["count"] == 30
    both = client.get("/api/cases/", {"source": ["HNSCC-3DCT-RT", "COVID-19"]}).json()
    assert both["count"] == 31 + 40


def test_path_csv_scan_position_is_searchable(client, metadata_catalog):
    prone = client.get("/api/cases/", {"position": "prone"}).json()
    supine = client.get("/api/cases/", {"position": "supine"}).json()
    assert prone["count"] > 200 and supine["count"] > 200
    detail = client.get("/api/cases/1.3.6.1.4.1.9328.50.4.0001/").json()
    assert detail["scan_position"] == "prone"
    assert detail["slice_thickness_mm"] == 1.0
    assert detail["kernel"] == "B30f"
    assert detail["series_description"].startswith("4.000000-Coloprone")


def test_metadata_only_twice_is_idempotent(client, ctspine_meta, metadata_catalog):
    call_command("ingest", str(ctspine_meta), "--metadata-only", verbosity=0)
    assert client.get("/api/cases/facets/").json()["total"] == 1005


def test_browse_page_without_javascript_shows_counts_and_filters(client, metadata_catalog):
    page = client.get("/", {"anomaly": "sacralization"})
    html = page.content.decode()
    assert page.status_code == 200
    assert '<strong id="result-count">11</strong>' in html
    assert "liver_83" in html and "liver_93" in html
    assert "liver_106" not in html  # a lumbarization case


def test_curated_anomaly_list_is_parsed_once_with_splits_named_as_in_the_catalog():
    rows = curated_anomalies()
    assert rows is curated_anomalies()
    assert rows["liver_106"] == CuratedAnomaly("liver_106", "MSD-T10", "lumbarization", "train")
    in_dataset = [r for r in rows.values() if r.source in DATASET_SOURCES]
    assert len(in_dataset) == 17 + 11
    assert {r.split for r in in_dataset} == {"train", "test_public", "test_private"}
    assert {r.split for r in rows.values() if r.source == "VerSe"} == {""}


def test_published_folder_spellings():
    assert image_path("COLONOG", "CTC-1") == "data/colon/CTC-1.nii.gz"
    assert label_path("COLONOG", "CTC-1") == "label/conlon/CTC-1_seg.nii.gz"
    assert label_path("MSD-T10", "liver_1") == "label/Liver/liver_1_seg.nii.gz"
