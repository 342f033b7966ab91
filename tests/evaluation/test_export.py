"""``manage.py export_nnunet``: the phantom exported in nnU-Net v2's raw format, checked file by
file, and accepted by nnU-Net's own dataset integrity check."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from evaluation.nnunet_export import ExportCase, dataset_json, export_dataset
from viewer.models import Case

LABEL_NAMES = (
    ["C1", "C2", "C3", "C4", "C5", "C6", "C7"]
    + [f"T{i}" for i in range(1, 13)]
    + [f"L{i}" for i in range(1, 7)]
)
ERRORED, NOT_DOWNLOADED = "liver_100", "HN_P002"  # two training cases of the phantom


def _export(out: Path, *args: str) -> str:
    stdout = io.StringIO()
    call_command("export_nnunet", str(out), *args, stdout=stdout)
    return stdout.getvalue()


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.fixture
def catalog(ingested_phantom):
    """The ingested phantom with one training case in error and one not downloaded."""
    Case.objects.filter(case_id=ERRORED).update(error="label grid differs from image grid")
    Case.objects.filter(case_id=NOT_DOWNLOADED).update(downloaded=False)
    exported = Case.objects.filter(downloaded=True, error="")
    return {
        split: {c.case_id: c for c in exported.filter(split=split)}
        for split in ("train", "test_public", "test_private")
    }


@pytest.mark.django_db
def test_export_links_every_case_file_by_file(catalog, ingested_phantom, tmp_path):
    output = _export(tmp_path, "--dataset-id", "601")
    folder = tmp_path / "Dataset601_CTSpine1K"
    assert _names(folder) == {
        "imagesTr", "labelsTr", "imagesTs", "labelsTs", "dataset.json", "test_splits.json"
    }  # fmt: skip
    train, tests = catalog["train"], {**catalog["test_public"], **catalog["test_private"]}
    assert len(train) == 10 and len(tests) == 12
    expected = {
        "imagesTr": {f"{i}_0000.nii.gz": train[i].image_path for i in train},
        "labelsTr": {f"{i}.nii.gz": train[i].label_path for i in train},
        "imagesTs": {f"{i}_0000.nii.gz": tests[i].image_path for i in tests},
        "labelsTs": {f"{i}.nii.gz": tests[i].label_path for i in tests},
    }
    for sub, files in expected.items():
        assert _names(folder / sub) == set(files), sub
        for name, relative in files.items():
            source, target = ingested_phantom / relative, folder / sub / name
            # A hard link: the same file, no copy (tmp_path and the phantom share a file system).
            assert os.path.samefile(source, target) and not target.is_symlink(), name
    assert json.loads((folder / "dataset.json").read_text()) == {
        "name": "CTSpine1K",
        "description": "CTSpine1K vertebra segmentation, exported by the CTSpine1K viewer",
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{name: i + 1 for i, name in enumerate(LABEL_NAMES)}},
        "numTraining": 10,
        "file_ending": ".nii.gz",
        "license": "see the CTSpine1K dataset and its sources (TCIA, MSD, COVID-19)",
    }
    assert json.loads((folder / "test_splits.json").read_text()) == {
        split: sorted(catalog[split]) for split in ("train", "test_public", "test_private")
    }
    assert "10 train, 6 test_public, 6 test_private; 44 files linked" in output
    assert f"skipped 1: ingestion error (see the case page) ({ERRORED})" in output
    assert f"skipped 1: not downloaded ({NOT_DOWNLOADED})" in output


@pytest.mark.django_db
def test_export_passes_nnunet_dataset_integrity_check(catalog, tmp_path, monkeypatch, capfd):
    verify = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity")
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    _export(tmp_path / "nnUNet_raw")
    folder = tmp_path / "nnUNet_raw" / "Dataset601_CTSpine1K"
    verify.verify_dataset_integrity(str(folder), num_processes=1)  # raises on any problem
    out = capfd.readouterr().out
    assert "verify_dataset_integrity Done" in out
    assert "Error" not in out and "mismatch" not in out


@pytest.mark.django_db
def test_copy_copies_and_a_new_export_replaces_the_old_one(catalog, ingested_phantom, tmp_path):
    _export(tmp_path, "--name", "Spine", "--dataset-id", "7")
    folder = tmp_path / "Dataset007_Spine"
    case_id = sorted(catalog["train"])[0]
    Case.objects.filter(case_id=case_id).update(error="found corrupt later")
    output = _export(tmp_path, "--name", "Spine", "--dataset-id", "7", "--copy")
    assert f"{case_id}_0000.nii.gz" not in _names(folder / "imagesTr")
    assert f"{case_id}.nii.gz" not in _names(folder / "labelsTr")
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 9
    assert "42 files copied, 2 stale files of an earlier export removed" in output
    other = sorted(catalog["train"])[1]
    copied = folder / "imagesTr" / f"{other}_0000.nii.gz"
    source = ingested_phantom / catalog["train"][other].image_path
    assert not os.path.samefile(copied, source)
    assert copied.read_bytes() == source.read_bytes()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, message",
    [(["--dataset-id", "1000"], "1-999"), (["--name", "CT Spine"], "--name 'CT Spine'")],
)
def test_bad_id_or_name_is_a_clear_error(args, message, tmp_path):
    with pytest.raises(CommandError, match=message):
        _export(tmp_path, *args)


def test_export_skips_cases_it_cannot_export(phantom_root, tmp_path):
    image = next(phantom_root.glob("data/liver/liver_0.nii.gz"))
    label = next(phantom_root.glob("label/*/liver_0_seg.nii.gz"))
    summary = export_dataset(
        [
            ExportCase("liver_0", "train", image, label),
            ExportCase("liver_0b", "train", image, None),
            ExportCase("liver_0c", "", image, label),
            ExportCase("liver_0d", "test_public", tmp_path / "gone.nii.gz", None),
        ],
        out=tmp_path,
        dataset_id=42,
        name="Tiny",
    )
    assert summary.exported == {"train": 1, "test_public": 0, "test_private": 0}
    assert summary.skipped == {
        "liver_0b": "training case without a label file",
        "liver_0c": "not in the official split",
        "liver_0d": "file missing on disk since ingestion",
    }
    assert _names(tmp_path / "Dataset042_Tiny" / "imagesTs") == set()


def test_dataset_json_labels_are_consecutive_from_background():
    labels = dataset_json(num_training=3, name="X")["labels"]
    assert list(labels.values()) == list(range(26)) and list(labels)[0] == "background"
