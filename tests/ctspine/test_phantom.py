"""The synthetic phantom dataset (ctspine/phantom/): layout, metadata files, anatomy, geometry."""

from __future__ import annotations

import csv
import os
import re
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ctspine.dataset.layout import DATASET_SOURCES
from ctspine.dataset.metadata import SPLIT_HEADERS
from ctspine.phantom import plan as phantom
from ctspine.phantom.anatomy import make_phantom
from ctspine.phantom.plan import PhantomSpec, plan_cases
from ctspine.phantom.writer import write_dataset

REPO = Path(__file__).resolve().parents[2]
REAL_SPLIT = (
    Path(os.environ.get("CTSPINE_SHARED_DIR", REPO.parent / "shared"))
    / "ctspine1k"
    / "data_split.txt"
)
ID_PATTERNS = {
    "COLONOG": r"1\.3\.6\.1\.4\.1\.9328\.50\.4\.\d{4}|CTC-\d{10}",
    "HNSCC-3DCT-RT": r"HN_P\d{3}",
    "MSD-T10": r"liver_\d+",
    "COVID-19": r"volume-covid19-A-\d{4}_ct",
}


def _curated() -> dict[str, str]:
    with (REPO / "ctspine" / "dataset" / "anomalies.csv").open(newline="") as handle:
        return {row["case_id"]: row["anomaly"] for row in csv.DictReader(handle)}


def _parse_split(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.split("\r\n"):
        if line.endswith(":"):
            current = sections.setdefault(line[:-1], [])
        elif line:
            current.append(line)
    return sections


def _load(path: Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    img = nib.load(path)
    return img, np.asarray(img.dataobj)


@pytest.fixture(scope="module")
def specs() -> list[PhantomSpec]:
    return plan_cases(24, seed=11)


@pytest.fixture(scope="module")
def dataset(specs, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantom") / "CTSpine1K"
    seen = []
    written = write_dataset(root, specs, progress=seen.append)
    assert seen == specs
    assert len(written) == 2 * len(specs) + 3
    return root


@pytest.fixture(scope="module")
def volumes(specs, dataset) -> dict[str, tuple]:
    """Each case as written: (spec, image, image array, label image, label array)."""
    out = {}
    for spec in specs:
        image, image_data = _load(dataset / spec.image_relpath)
        label, label_data = _load(dataset / spec.label_relpath)
        out[spec.case_id] = (spec, image, image_data, label, label_data)
    return out


def _canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    img = nib.as_closest_canonical(nib.Nifti1Image(array, affine))
    return np.asarray(img.dataobj), img.affine


# --- the plan -----------------------------------------------------------------------------------


def test_default_plan_covers_sources_splits_sections_and_anomalies(specs):
    assert len(specs) == 24 and len({s.case_id for s in specs}) == 24
    assert {s.source for s in specs} == set(DATASET_SOURCES)
    assert {s.split for s in specs} == set(phantom.SPLITS)
    assert {s.section for s in specs} == set(phantom.SECTIONS)
    assert {s.orientation for s in specs} == {"RAS", "LPS"}
    anomalies = [s.anomaly for s in specs]
    assert anomalies.count("lumbarization") >= 2 and anomalies.count("sacralization") >= 2
    for spec in specs:
        assert re.fullmatch(ID_PATTERNS[spec.source], spec.case_id), spec.case_id
        assert spec.section == phantom.SECTION_OF_SOURCE[spec.source]


def test_plan_sizes_small_and_full():
    for spec in plan_cases(24):
        nx, ny, nz = spec.shape
        assert 64 <= nx == ny <= 128 and 40 <= nz <= 120, spec
        assert spec.spacing_mm[0] == spec.spacing_mm[1]
    for spec in plan_cases(4, full_size=True):
        nx, ny, nz = spec.shape
        assert nx == ny == 512 and (200 if spec.section == "cervical" else 400) <= nz <= 600, spec
        assert 0.6 <= spec.spacing_mm[0] <= 1.0 and 0.5 <= spec.spacing_mm[2] <= 3.0, spec


def test_anomalies_come_from_the_curated_lists():
    curated = _curated()
    for spec in plan_cases(60):
        assert spec.anomaly == curated.get(spec.case_id), spec.case_id


def test_plan_prefix_is_stable_and_bounded():
    assert plan_cases(30, seed=5)[:24] == plan_cases(24, seed=5)
    assert plan_cases(24, seed=5) != plan_cases(24, seed=6)
    with pytest.raises(ValueError):
        plan_cases(0)
    with pytest.raises(ValueError):
        plan_cases(100_000)


def test_embedded_ids_have_their_real_split():
    if not REAL_SPLIT.exists():
        pytest.skip(f"{REAL_SPLIT} is absent")
    real = {
        name.removesuffix(".nii.gz"): header
        for header, names in _parse_split(REAL_SPLIT.read_bytes().decode()).items()
        for name in names
    }
    for spec in plan_cases(len(phantom._plan_order())):
        assert real[spec.case_id] == SPLIT_HEADERS[spec.split], spec.case_id


# --- files on disk ------------------------------------------------------------------------------


def test_layout_and_published_folder_names(specs, dataset):
    assert {p.name for p in (dataset / "data").iterdir()} == {
        "colon", "HNSCC-3DCT-RT_neck", "liver", "COVID-19",
    }  # fmt: skip
    assert {p.name for p in (dataset / "label").iterdir()} == {
        "conlon", "HNSCC-3DCT-RT_neck", "Liver", "COVID-19",
    }  # fmt: skip
    published = {  # (image folder, label folder) as the download spells them
        "COLONOG": ("colon", "conlon"),
        "HNSCC-3DCT-RT": ("HNSCC-3DCT-RT_neck", "HNSCC-3DCT-RT_neck"),
        "MSD-T10": ("liver", "Liver"),
        "COVID-19": ("COVID-19", "COVID-19"),
    }
    for spec in specs:
        folder, label_folder = published[spec.source]
        assert (dataset / "data" / folder / f"{spec.case_id}.nii.gz").is_file()
        assert (dataset / "label" / label_folder / f"{spec.case_id}_seg.nii.gz").is_file()
    files = [p for p in dataset.rglob("*") if p.is_file()]
    assert len(files) == 2 * len(specs) + 3  # + data_split.txt, Path.csv, readme.txt
    assert not [p for p in files if p.name.startswith(".")], "temporary files left behind"


def test_data_split_round_trips_with_crlf(specs, dataset):
    raw = (dataset / "data_split.txt").read_bytes()
    assert raw.count(b"\n") == raw.count(b"\r\n") and raw.endswith(b".nii.gz\r\n")
    text = raw.decode()
    assert "\r\n\r\ntest_public:\r\n" in text and "\r\n\r\ntest_private:\r\n" in text
    sections = _parse_split(text)
    assert list(sections) == ["trainset", "test_public", "test_private"]
    for split, header in SPLIT_HEADERS.items():
        planned = {f"{s.case_id}.nii.gz" for s in specs if s.split == split}
        assert set(sections[header]) == planned


def test_path_csv_rows(specs, dataset):
    raw = (dataset / "Path.csv").read_bytes()
    assert raw.count(b"\n") == raw.count(b"\r\n")
    rows = raw.decode().split("\r\n")[:-1]
    expected = {s.case_id: s for s in specs if s.source in ("COLONOG", "HNSCC-3DCT-RT")}
    assert sorted(row.split("/")[0] for row in rows) == sorted(expected)
    positions = set()
    for row in rows:
        case_id, study, series = row.split("/")
        assert study and re.match(r"\d+\.000000-", series), row
        assert re.search(r" \d\.\d+ ", series), row  # slice thickness, e.g. "  1.0  "
        if expected[case_id].source == "COLONOG":
            positions.add(re.search(r"prone|supine", series, re.IGNORECASE).group().lower())
        else:
            assert case_id.startswith("HN_P") and "RTHEADNECK" in study
    assert positions == {"prone", "supine"}


def test_headers_and_grids(volumes):
    for spec, image, image_data, label, label_data in volumes.values():
        assert image_data.dtype == np.int16 and label_data.dtype == np.uint8
        assert image_data.shape == label_data.shape == spec.shape
        assert np.array_equal(image.affine, label.affine)
        assert nib.aff2axcodes(image.affine) == tuple(spec.orientation)
        assert np.allclose(np.abs(np.diag(image.affine)[:3]), spec.spacing_mm)
        for img in (image, label):
            assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
            assert img.header.get_xyzt_units()[0] == "mm"


# --- anatomy ------------------------------------------------------------------------------------


def test_labels_per_section(volumes):
    for spec, *_, label_data in volumes.values():
        present = set(np.unique(label_data).tolist())
        assert present <= set(range(26))
        assert present - {0} == set(spec.expected_labels), spec.case_id


def test_lumbarization_cases_have_l6(volumes):
    curated = _curated()
    for spec, *_, label_data in volumes.values():
        has_l6 = bool((label_data == 25).any())
        assert has_l6 == (spec.anomaly == "lumbarization"), spec.case_id
        if has_l6:
            assert curated[spec.case_id] == "lumbarization"
            assert {20, 21, 22, 23, 24, 25} <= set(np.unique(label_data).tolist())


def test_sacralized_l5_is_bone_below_l4(volumes):
    curated = _curated()
    sacralized = [v for v in volumes.values() if v[0].anomaly == "sacralization"]
    assert len(sacralized) >= 2
    for spec, image, image_data, label, label_data in sacralized:
        assert curated[spec.case_id] == "sacralization"
        labels, affine = _canonical(label_data, label.affine)
        hu, _ = _canonical(image_data, image.affine)
        assert not (labels == 24).any() and (labels == 23).any()
        lowest_l4 = np.nonzero((labels == 23).any(axis=(0, 1)))[0].min()
        assert lowest_l4 * affine[2, 2] >= 40.0  # mm of image below L4
        # the fused L5 and the sacrum under L4 are bone with label 0
        below = hu[:, :, : lowest_l4 - 3]
        assert ((below > 600) & (labels[:, :, : lowest_l4 - 3] == 0)).sum() > 50


def test_hu_values_are_plausible(volumes):
    for spec, _, image_data, _, label_data in volumes.values():
        assert image_data.min() >= -1024 and image_data.max() <= 3071
        bone = image_data[label_data > 0]
        assert bone.mean() > 200 and np.percentile(bone, 90) > 700, spec.case_id
        corners = image_data[[0, 0, -1, -1], [0, -1, 0, -1], :]
        assert abs(np.median(corners) + 1000) <= 5, spec.case_id  # air
        body = image_data[(image_data > -300) & (label_data == 0)]
        assert -150 < np.median(body) < 100, spec.case_id  # soft tissue and fat


def test_vertebra_heights_are_realistic():
    spacing = {}
    for section in ("cervical", "thoracolumbar"):
        spec = next(s for s in plan_cases(24, seed=2) if s.section == section and not s.anomaly)
        _, label, affine = make_phantom(replace(spec, orientation="RAS"))
        ks = {v: np.nonzero(label == v)[2].mean() for v in spec.expected_labels}
        for v in spec.expected_labels[1:-1]:  # end vertebrae may be cut
            if v + 1 in ks:
                spacing[v] = (ks[v] - ks[v + 1]) * affine[2, 2]
    assert all(12 <= spacing[v] <= 19 for v in range(3, 7)), spacing  # C3-C7: ~15 mm
    assert all(19 <= spacing[v] <= 30 for v in range(17, 20)), spacing  # T10-L1: ~22-28 mm
    assert all(26 <= spacing[v] <= 34 for v in range(20, 24)), spacing  # L1-L5: ~30 mm


# --- geometry -----------------------------------------------------------------------------------


def _canonical_case(spec: PhantomSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image, label, affine = make_phantom(spec)
    hu, canonical_affine = _canonical(image, affine)
    return hu, _canonical(label, affine)[0], canonical_affine


def _world_centre(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return affine[:3, :3] @ np.array(np.nonzero(mask)).mean(axis=1) + affine[:3, 3]


def test_lps_case_has_the_same_anatomy_as_ras():
    spec = replace(plan_cases(1, seed=4)[0], orientation="RAS")
    image, label, affine = make_phantom(spec)
    image_lps, label_lps, affine_lps = make_phantom(replace(spec, orientation="LPS"))
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    assert nib.aff2axcodes(affine_lps) == ("L", "P", "S")
    assert np.allclose(np.diag(affine_lps)[:3], np.array(spec.spacing_mm) * [-1, -1, 1])
    assert np.array_equal(image_lps, image[::-1, ::-1, :])  # stored flipped...
    for ras, lps in ((image, image_lps), (label, label_lps)):
        canonical, canonical_affine = _canonical(lps, affine_lps)
        assert np.array_equal(canonical, ras)  # ...the same voxels in the same place
        assert np.allclose(canonical_affine, affine, atol=1e-6)
    for orientation in ("RAS", "LPS"):
        hu, labels, canonical_affine = _canonical_case(replace(spec, orientation=orientation))
        spine = _world_centre(labels > 0, canonical_affine)
        body = _world_centre(hu > -500, canonical_affine)
        assert abs(spine[0] - body[0]) < 10.0  # centred left-right
        assert spine[1] < body[1] - 20.0  # posterior


def test_anatomy_is_not_mirrored():
    """The phantom is not left-right symmetric, so a flipped x axis would show: the liver lies on
    the patient's right (+x in RAS+) at the level of L1."""
    spec = next(s for s in plan_cases(24, seed=4) if s.section == "thoracolumbar")
    hu, labels, affine = _canonical_case(spec)
    k = int(np.nonzero((labels == 20).any(axis=(0, 1)))[0].mean())
    x = affine[0, 0] * np.arange(hu.shape[0]) + affine[0, 3]
    organ = (hu[:, :, k] > 55) & (hu[:, :, k] < 150) & (labels[:, :, k] == 0)
    assert organ[x > 40].sum() > 3 * organ[x < -40].sum()


def test_seeded_output_is_deterministic(tmp_path):
    spec = plan_cases(2, seed=9)[1]
    first, second = make_phantom(spec), make_phantom(spec)
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a, b)
    other = make_phantom(replace(spec, seed=spec.seed + 1))
    assert not np.array_equal(first[0], other[0])
    write_dataset(tmp_path / "a", [spec])
    write_dataset(tmp_path / "b", [spec])
    assert spec.orientation == "LPS"  # the stored flipped view reads back voxel for voxel
    for relpath, array in ((spec.image_relpath, first[0]), (spec.label_relpath, first[1])):
        stored = nib.load(tmp_path / "a" / relpath)
        assert np.array_equal(np.asarray(stored.dataobj), array)
        assert np.allclose(stored.affine, first[2])
    for relpath in (spec.image_relpath, spec.label_relpath, Path("data_split.txt")):
        assert (tmp_path / "a" / relpath).read_bytes() == (tmp_path / "b" / relpath).read_bytes()


def test_rewriting_replaces_files_atomically(tmp_path):
    spec = plan_cases(1)[0]
    write_dataset(tmp_path, [spec])
    target = tmp_path / spec.image_relpath
    target.write_bytes(b"truncated")
    write_dataset(tmp_path, [spec])
    assert nib.load(target).shape == spec.shape
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]
    with pytest.raises(ValueError):
        write_dataset(tmp_path, [spec, spec])


def test_spec_validates_its_fields():
    spec = plan_cases(1)[0]
    with pytest.raises(ValueError):
        replace(spec, orientation="LAS")
    with pytest.raises(ValueError):
        replace(spec, anomaly="scoliosis")
