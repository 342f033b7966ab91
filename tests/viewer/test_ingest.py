"""Ingestion of a download: phantom data, the real samples, incremental runs and bad cases."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from django.core.management import CommandError, call_command

from ctspine.labels import values_of
from ctspine.phantom.plan import plan_cases
from ctspine.phantom.writer import write_dataset
from viewer.models import Case

pytestmark = pytest.mark.django_db


def test_phantom_ingestion_matches_what_was_generated(ingested_phantom, client):
    specs = {spec.case_id: spec for spec in plan_cases(24, seed=7)}
    cases = {case.case_id: case for case in Case.objects.all()}
    assert set(cases) == set(specs)
    for case_id, spec in specs.items():
        case = cases[case_id]
        assert case.error == "", (case_id, case.error)
        assert case.downloaded and case.has_label and case.label_stats_done
        assert values_of(case.vertebra_mask) == list(spec.expected_labels), case_id
        assert case.split == spec.split and case.source == spec.source
        canonical = nib.as_closest_canonical(nib.load(ingested_phantom / spec.image_relpath))
        assert case.shape == list(canonical.shape)
        assert case.spacing == pytest.approx(list(canonical.header.get_zooms()), abs=1e-4)
        assert case.axis_codes == spec.orientation
        # The label-derived hint agrees with the curated list on the phantom.
        assert case.label_anomaly == (spec.anomaly or ""), case_id
        assert case.curated_anomaly == (spec.anomaly or ""), case_id
        assert not case.anomalies["disagree"]
    lumbarization = client.get("/api/cases/", {"anomaly": "lumbarization"}).json()
    assert lumbarization["count"] == 3
    by_labels = client.get(
        "/api/cases/", {"anomaly": "lumbarization", "anomaly_source": "labels"}
    ).json()
    assert {r["case_id"] for r in by_labels["results"]} == {
        r["case_id"] for r in lumbarization["results"]
    }
    l6 = client.get("/api/cases/", {"vertebra": "L6"}).json()
    assert l6["count"] == 3 and all("L6" in r["vertebrae"] for r in l6["results"])


def test_vertebra_statistics_are_in_mm(ingested_phantom, client):
    case = Case.objects.filter(vertebra_mask__gt=0).first()
    detail = client.get(f"/api/cases/{case.case_id}/").json()
    stats = detail["vertebra_stats"]
    assert [s["name"] for s in stats] == detail["vertebrae"]
    label = nib.as_closest_canonical(nib.load(ingested_phantom / case.label_path))
    data = np.asanyarray(label.dataobj)
    voxel_mm3 = float(np.prod(label.header.get_zooms()))
    for row in stats:
        ijk = np.argwhere(data == row["label"])
        assert row["voxel_count"] == len(ijk)
        assert row["volume_cm3"] == pytest.approx(len(ijk) * voxel_mm3 / 1000, rel=1e-3)
        centroid = nib.affines.apply_affine(label.affine, ijk.mean(axis=0))
        assert row["centroid_mm"] == pytest.approx(centroid.tolist(), abs=1e-2)
        z = nib.affines.apply_affine(label.affine, ijk)[:, 2]
        assert row["z_min_mm"] == pytest.approx(z.min(), abs=1e-2)
        assert row["z_max_mm"] == pytest.approx(z.max(), abs=1e-2)
    # Vertebrae are ordered head to feet: lower labels sit higher (larger S coordinate).
    centres = [row["centroid_mm"][2] for row in stats]
    assert centres == sorted(centres, reverse=True)


def test_second_run_skips_unchanged_files_and_rereads_changed_ones(ingested_phantom, capsys):
    call_command("ingest", str(ingested_phantom))
    assert "0 ingested, 24 unchanged, 0 not downloaded, 0 failed" in capsys.readouterr().out
    changed = next(ingested_phantom.glob("label/*/*_seg.nii.gz"))
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    call_command("ingest", str(ingested_phantom))
    assert "1 ingested, 23 unchanged" in capsys.readouterr().out


def test_parallel_workers_give_the_same_catalog(phantom_root, settings):
    settings.CTSPINE_DATA_ROOT = phantom_root
    call_command("ingest", str(phantom_root), "--workers", "2", verbosity=0)
    parallel = list(Case.objects.values_list("case_id", "vertebra_mask", "dim_z", "label_anomaly"))
    Case.objects.all().delete()
    call_command("ingest", str(phantom_root), verbosity=0)
    serial = list(Case.objects.values_list("case_id", "vertebra_mask", "dim_z", "label_anomaly"))
    assert parallel == serial and len(serial) == 24


def test_headers_only_leaves_label_statistics_for_later(phantom_root, settings):
    settings.CTSPINE_DATA_ROOT = phantom_root
    call_command("ingest", str(phantom_root), "--headers-only", verbosity=0)
    assert not Case.objects.filter(label_stats_done=True).exists()
    assert Case.objects.filter(downloaded=True, dim_z__isnull=False).count() == 24
    call_command("ingest", str(phantom_root), verbosity=0)
    assert Case.objects.filter(label_stats_done=True).count() == 24


def test_partial_download_lists_missing_cases_as_not_downloaded(tmp_path, client, settings):
    root = settings.CTSPINE_DATA_ROOT = tmp_path / "partial"
    specs = plan_cases(4, seed=1)
    write_dataset(root, specs)
    (root / specs[0].image_relpath).unlink()
    call_command("ingest", str(root), verbosity=0)
    missing = Case.objects.get(case_id=specs[0].case_id)
    assert not missing.downloaded and missing.error == ""
    assert client.get("/api/cases/", {"downloaded": "false"}).json()["count"] == 1
    assert client.get("/api/cases/", {"downloaded": "true"}).json()["count"] == 3


def test_a_root_other_than_the_served_one_is_refused(phantom_root, tmp_path, settings):
    settings.CTSPINE_DATA_ROOT = tmp_path / "served"
    (tmp_path / "served").mkdir()
    with pytest.raises(CommandError) as refused:
        call_command("ingest", str(phantom_root), verbosity=0)
    assert str(refused.value) == (
        f"{phantom_root} is not the data root the server reads, CTSPINE_DATA_ROOT="
        f"{tmp_path / 'served'}. Set CTSPINE_DATA_ROOT={phantom_root} for this command and the"
        f" server, or ingest {tmp_path / 'served'}; --metadata-only works from any root"
    )
    assert not Case.objects.exists()


def test_missing_root_is_a_command_error(tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        call_command("ingest", str(tmp_path / "nowhere"), verbosity=0)


# --- the real samples ---------------------------------------------------------------------------


def test_real_samples_geometry_and_vertebrae(samples, tmp_path, settings):
    root = settings.CTSPINE_DATA_ROOT = tmp_path / "real"
    layout = {
        # case id -> (image, label), placed in the official layout (copies in a temp dir)
        "liver_0": ("ts_example_ct_3mm.nii.gz", "ts_example_ct_3mm_vertebrae.nii.gz"),
        "volume-covid19-A-0003_ct": (
            "ts_example_dicom_vertebrae.nii.gz",
            "ts_example_dicom_vertebrae.nii.gz",
        ),
    }
    folders = {"liver_0": ("liver", "Liver"), "volume-covid19-A-0003_ct": ("COVID-19", "COVID-19")}
    for case_id, (image, label) in layout.items():
        data_dir, label_dir = folders[case_id]
        (root / "data" / data_dir).mkdir(parents=True, exist_ok=True)
        (root / "label" / label_dir).mkdir(parents=True, exist_ok=True)
        shutil.copy(samples / image, root / "data" / data_dir / f"{case_id}.nii.gz")
        shutil.copy(samples / label, root / "label" / label_dir / f"{case_id}_seg.nii.gz")
    call_command("ingest", str(root), verbosity=0)
    expected_vertebrae = {
        "liver_0": ["T11", "T12", "L1", "L2"],
        "volume-covid19-A-0003_ct": ["T11", "T12"],
    }
    for case_id, (image, _) in layout.items():
        case = Case.objects.get(case_id=case_id)
        assert case.error == ""
        loaded = nib.load(samples / image)
        canonical = nib.as_closest_canonical(loaded)
        assert case.axis_codes == "".join(nib.aff2axcodes(loaded.affine))
        assert case.shape == list(canonical.shape)
        assert case.spacing == pytest.approx(list(canonical.header.get_zooms()), abs=1e-4)
        assert case.vertebra_names == expected_vertebrae[case_id]
    assert Case.objects.get(case_id="volume-covid19-A-0003_ct").axis_codes == "LAS"
    assert Case.objects.get(case_id="liver_0").axis_codes == "RAS"


# --- bad cases: each stores its error, and the other cases are ingested ------------------------


def _small_root(tmp_path: Path):
    root = tmp_path / "download"
    specs = plan_cases(3, seed=2)
    write_dataset(root, specs)
    return root, specs


def _corrupt_gzip(path: Path, spec) -> None:
    path.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(2000))


def _truncated_gzip(path: Path, spec) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _not_nifti(path: Path, spec) -> None:
    path.write_bytes(gzip.compress(b"patient,age\n1,64\n" * 100))


def _image_2d(path: Path, spec) -> None:
    nib.save(nib.Nifti1Image(np.zeros((64, 64), np.int16), np.eye(4)), path)


def _image_4d(path: Path, spec) -> None:
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 16, 3), np.int16), np.eye(4)), path)


def _label_other_grid(path: Path, spec) -> None:
    label = nib.load(path)
    data = np.asanyarray(label.dataobj)[:, :, :-2]
    nib.save(nib.Nifti1Image(data, label.affine), path)


def _label_shifted_affine(path: Path, spec) -> None:
    label = nib.load(path)
    affine = label.affine.copy()
    affine[0, 3] += 1.5
    nib.save(nib.Nifti1Image(np.asanyarray(label.dataobj), affine), path)


def _label_values_out_of_range(path: Path, spec) -> None:
    label = nib.load(path)
    data = np.asanyarray(label.dataobj).copy()
    data[0, 0, 0] = 30
    nib.save(nib.Nifti1Image(data, label.affine), path)


def _symlink_outside_root(path: Path, spec) -> None:
    outside = path.parent.parent.parent.parent / "elsewhere.nii.gz"
    shutil.copy(path, outside)
    path.unlink()
    path.symlink_to(outside)


BAD_CASES = [
    ("image", _corrupt_gzip, "corrupt or truncated gzip"),
    ("image", _truncated_gzip, "truncated"),
    ("image", _not_nifti, "not a NIfTI"),
    ("image", _image_2d, "2D"),
    ("image", _image_4d, "4D"),
    ("label", _label_other_grid, "label grid"),
    ("label", _label_shifted_affine, "label affine differs"),
    ("label", _label_values_out_of_range, "label values must be 0-25"),
    ("image", _symlink_outside_root, "outside the data root"),
]


@pytest.mark.parametrize(
    ("which", "damage", "message"), BAD_CASES, ids=[b[1].__name__[1:] for b in BAD_CASES]
)
def test_bad_case_stores_error_and_run_continues(
    tmp_path, client, capsys, settings, which, damage, message
):
    root, specs = _small_root(tmp_path)
    settings.CTSPINE_DATA_ROOT = root
    bad = specs[1]
    damage(root / (bad.image_relpath if which == "image" else bad.label_relpath), bad)
    call_command("ingest", str(root))  # exits normally: one bad case never stops a run
    output = capsys.readouterr()
    assert "2 ingested, 0 unchanged, 0 not downloaded, 1 failed" in output.out
    assert bad.case_id in output.err
    case = Case.objects.get(case_id=bad.case_id)
    assert message.lower() in case.error.lower(), case.error
    for good in (specs[0], specs[2]):
        assert Case.objects.get(case_id=good.case_id).error == ""
        assert Case.objects.get(case_id=good.case_id).label_stats_done
    shown = client.get(f"/api/cases/{bad.case_id}/").json()
    assert shown["error"] == case.error
    page = client.get(f"/cases/{bad.case_id}/").content.decode()
    assert "could not be ingested" in page
    # Mending the file makes the next run read it again.
    write_dataset(root, specs)
    call_command("ingest", str(root), verbosity=0)
    assert Case.objects.get(case_id=bad.case_id).error == ""
