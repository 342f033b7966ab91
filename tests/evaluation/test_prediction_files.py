"""Matching prediction files to case ids (pure)."""

from __future__ import annotations

import pytest

from evaluation.prediction_files import candidate_ids, match_predictions, strip_ending

CASES = ["liver_1", "HN_P001", "1.3.6.1.4.1.9328.50.4.0001", "volume-covid19-A-0003_ct", "odd_0000"]


def _touch(folder, *names):
    for name in names:
        (folder / name).write_bytes(b"")


def test_nnunet_and_ctspine_names_are_recognised(tmp_path):
    _touch(
        tmp_path,
        "liver_1.nii.gz",  # nnU-Net's output name
        "HN_P001_0000.nii.gz",  # named like the input image
        "1.3.6.1.4.1.9328.50.4.0001_seg.nii.gz",  # named like a CTSpine1K label
        "volume-covid19-A-0003_ct.nii",  # uncompressed
        "summary.json",
        "plans.json",
    )
    (tmp_path / "sub").mkdir()
    _touch(tmp_path / "sub", "odd_0000.nii.gz")  # sub-folders are not read
    match = match_predictions(tmp_path, CASES)
    assert {k: v.name for k, v in match.files.items()} == {
        "liver_1": "liver_1.nii.gz",
        "HN_P001": "HN_P001_0000.nii.gz",
        "1.3.6.1.4.1.9328.50.4.0001": "1.3.6.1.4.1.9328.50.4.0001_seg.nii.gz",
        "volume-covid19-A-0003_ct": "volume-covid19-A-0003_ct.nii",
    }
    assert all(path.is_absolute() for path in match.files.values())
    assert match.missing == ["odd_0000"]
    assert match.ignored == ["plans.json", "summary.json"]
    assert match.unmatched == []


def test_the_exact_name_wins_and_the_other_file_is_reported(tmp_path):
    _touch(tmp_path, "liver_1_0000.nii.gz", "liver_1.nii", "liver_1.nii.gz", "odd_0000.nii.gz")
    match = match_predictions(tmp_path, CASES)
    assert match.files["liver_1"].name == "liver_1.nii.gz"
    # A case id that itself ends in _0000 is matched exactly, not stripped to "odd".
    assert match.files["odd_0000"].name == "odd_0000.nii.gz"
    assert [(u.name, u.reason) for u in match.unmatched] == [
        ("liver_1.nii", "another file of the folder already predicts liver_1"),
        ("liver_1_0000.nii.gz", "another file of the folder already predicts liver_1"),
    ]


def test_unmatched_files_say_why(tmp_path):
    _touch(tmp_path, "liver_0.nii.gz", "liver_7_0000.nii.gz", "random.nii.gz")
    match = match_predictions(
        tmp_path,
        CASES,
        not_evaluated={
            "liver_0": "is in split train, not evaluated",
            "liver_7": "has no ground truth here (not downloaded)",
        },
    )
    assert {u.name: u.reason for u in match.unmatched} == {
        "liver_0.nii.gz": "case liver_0 is in split train, not evaluated",
        "liver_7_0000.nii.gz": "case liver_7 has no ground truth here (not downloaded)",
        "random.nii.gz": "matches no case id of the catalog",
    }
    assert match.missing == sorted(CASES)


def test_a_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        match_predictions(tmp_path / "nope", CASES)
    _touch(tmp_path, "file.nii.gz")
    with pytest.raises(NotADirectoryError):
        match_predictions(tmp_path / "file.nii.gz", CASES)


@pytest.mark.parametrize(
    "name, stem",
    [
        ("a.nii.gz", "a"),
        ("a.nii", "a"),
        (".nii.gz", None),
        ("a.json", None),
        ("a.nii.gz.bak", None),
    ],
)
def test_strip_ending(name, stem):
    assert strip_ending(name) == stem


def test_candidate_ids_most_specific_first():
    assert candidate_ids("x_0000") == ["x_0000", "x"]
    assert candidate_ids("x_seg") == ["x_seg", "x"]
    assert candidate_ids("_0000") == ["_0000"]
