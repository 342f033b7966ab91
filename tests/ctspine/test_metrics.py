"""Tests of ctspine/metrics.py: exact values on hand-made volumes, agreement with medpy (the
CTSpine1K evaluation script's library; a test-only dependency), the missing-label conventions,
level errors, and input validation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from medpy.metric import binary as medpy_binary
from scipy import ndimage

from ctspine import metrics
from ctspine.metrics import compare_labels
from tests.conftest import SAMPLES

ANISOTROPIC = (0.8, 0.8, 2.5)
# medpy's private helper (module level, so not name-mangled): directed surface distances, used
# to check NSD against medpy's own distances.
medpy_surface_distances = getattr(medpy_binary, "__surface_distances")


def cube(shape, lo, size, value=1, dtype=np.uint8):
    volume = np.zeros(shape, dtype=dtype)
    volume[tuple(slice(start, start + size) for start in lo)] = value
    return volume


def stacked_vertebrae(labels, *, height=5, gap=1, dtype=np.uint8):
    """Boxes of 12 x 12 x ``height`` voxels, one per label (0 = leave the slot empty), stacked
    along the third axis of a 20 x 20 x 46 volume (room for 7)."""
    volume = np.zeros((20, 20, 46), dtype=dtype)
    for k, value in enumerate(labels):
        z = 2 + k * (height + gap)
        volume[4:16, 4:16, z : z + height] = value
    return volume


def random_label_pair(shape, labels, seed):
    """Reference: smoothed noise thresholded, cut into slabs along the last axis with one label
    each (so blobs of every label touch the volume's border). Prediction: the same noise plus a
    perturbation and some speckle, so surfaces are ragged."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    wobble = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0)
    slab_label = np.asarray(labels)[np.arange(shape[2]) * len(labels) // shape[2]]
    slab_label = np.broadcast_to(slab_label, shape)
    reference = np.where(noise > 0.0, slab_label, 0).astype(np.uint8)
    prediction = np.where(noise + 0.6 * wobble > 0.02, slab_label, 0).astype(np.uint8)
    speckle = rng.random(shape) < 0.002
    prediction[speckle] = rng.choice(labels, size=int(speckle.sum()))
    return reference, prediction


# ---- exact values on hand-made volumes --------------------------------------------------


def test_dice_of_overlapping_cubes():
    reference = cube((12, 12, 12), (2, 2, 2), 6, value=20)
    prediction = cube((12, 12, 12), (4, 2, 2), 6, value=20)  # 4 of 6 layers overlap
    result = compare_labels(reference=reference, prediction=prediction, spacing_mm=(1, 1, 1))
    assert result.label(20).dice == pytest.approx(2 * 144 / 432)
    assert result.spine.dice == pytest.approx(2 / 3)
    assert metrics.dice(reference=reference, prediction=prediction) == pytest.approx(2 / 3)
    half = cube((12, 12, 12), (2, 2, 2), 3)  # inside the first cube: 27 of its 216 voxels
    assert metrics.dice(reference=reference, prediction=half) == pytest.approx(54 / 243)


def test_shifted_cube_with_anisotropic_spacing_gives_the_pooled_hd95():
    # A 6^3 cube and the same cube shifted by 2 voxels (2 x 2.5 mm) along the third axis.
    # Each cube's surface has 152 voxels. Distances from one surface to the other:
    #   side rim (20 voxels per layer) in the 4 shared layers: 0        -> 80 voxels
    #   side rim in the layer next to the other cube's end:    2.5 mm   -> 20
    #   side rim in the far layer, and the 16 face voxels there: 5.0 mm -> 36
    #   the 16 face voxels inside the other cube: nearest is its side rim in-plane,
    #   1 voxel away (12 of them, 0.8 mm) or 2 voxels away (4, 1.6 mm).
    # Both directions are mirror images, so the 304 pooled distances are
    #   0 x160, 0.8 x24, 1.6 x8, 2.5 x40, 5.0 x72; the 95th percentile (rank 287.85 of 0..303)
    #   lies among the 5.0 (ranks 232..303).
    reference = cube((14, 14, 16), (4, 4, 3), 6, value=7)
    prediction = np.roll(reference, 2, axis=2)
    result = compare_labels(
        reference=reference, prediction=prediction, spacing_mm=ANISOTROPIC, tolerance_mm=2.0
    )
    row = result.label(7)
    assert row.hd95_mm == pytest.approx(5.0)
    assert row.assd_mm == pytest.approx(2 * (20 * 5 + 20 * 2.5 + 16 * 5 + 12 * 0.8 + 4 * 1.6) / 304)
    assert row.nsd == pytest.approx(192 / 304)
    assert row.dice == pytest.approx(2 / 3)
    loose = compare_labels(
        reference=reference, prediction=prediction, spacing_mm=ANISOTROPIC, tolerance_mm=2.5
    )
    assert loose.label(7).nsd == pytest.approx(232 / 304)
    # The same shift along the first axis (0.8 mm voxels) is 1.6 mm.
    across = compare_labels(
        reference=reference, prediction=np.roll(reference, 2, axis=0), spacing_mm=ANISOTROPIC
    )
    assert across.label(7).hd95_mm == pytest.approx(1.6)
    expected = medpy_binary.hd95(prediction == 7, reference == 7, voxelspacing=ANISOTROPIC)
    assert row.hd95_mm == pytest.approx(expected, abs=1e-12)


def test_hd95_pools_both_directions_rather_than_taking_the_larger():
    # Reference: one voxel; prediction: it and the voxel above (2.5 mm). Distances: 0 (ref ->
    # pred), and 0, 2.5 (pred -> ref). Pooled [0, 0, 2.5]: 95th percentile at rank 1.9 =
    # 0.9 x 2.5 = 2.25 mm. The larger directed 95th percentile (MONAI) would be 2.375 mm.
    reference = np.zeros((5, 5, 5), dtype=np.uint8)
    reference[2, 2, 2] = 1
    prediction = reference.copy()
    prediction[2, 2, 3] = 1
    assert metrics.hd95(
        reference=reference, prediction=prediction, spacing_mm=ANISOTROPIC
    ) == pytest.approx(2.25)
    assert metrics.assd(
        reference=reference, prediction=prediction, spacing_mm=ANISOTROPIC
    ) == pytest.approx(2.5 / 3)
    assert metrics.nsd(
        reference=reference, prediction=prediction, spacing_mm=ANISOTROPIC, tolerance_mm=2.0
    ) == pytest.approx(2 / 3)
    assert medpy_binary.hd95(prediction, reference, voxelspacing=ANISOTROPIC) == pytest.approx(2.25)


def test_surface_at_the_volume_border_is_the_full_volume_surface():
    # A mask filling the volume: medpy erodes with background beyond the border, so every
    # border voxel is surface. Cropping to boxes must not change that.
    reference = np.full((6, 7, 5), 3, dtype=np.uint8)
    prediction = reference.copy()
    prediction[:, :, 4] = 0
    row = compare_labels(reference=reference, prediction=prediction, spacing_mm=ANISOTROPIC).label(
        3
    )
    assert row.hd95_mm == pytest.approx(
        medpy_binary.hd95(prediction == 3, reference == 3, voxelspacing=ANISOTROPIC), abs=1e-12
    )
    assert row.assd_mm == pytest.approx(
        medpy_binary.assd(prediction == 3, reference == 3, voxelspacing=ANISOTROPIC), abs=1e-12
    )


# ---- agreement with medpy -----------------------------------------------------------------


def medpy_nsd(prediction, reference, spacing, tolerance):
    a = medpy_surface_distances(prediction, reference, spacing)
    b = medpy_surface_distances(reference, prediction, spacing)
    return (np.count_nonzero(a <= tolerance) + np.count_nonzero(b <= tolerance)) / (a.size + b.size)


@pytest.mark.parametrize(
    ("seed", "spacing"),
    [(0, ANISOTROPIC), (1, (0.78, 0.78, 1.0)), (2, (3.0, 0.5, 1.25))],
)
def test_agrees_with_medpy_on_random_blobs(seed, spacing):
    labels = [18, 19, 20, 21]
    reference, prediction = random_label_pair((34, 38, 28), labels, seed)
    result = compare_labels(reference=reference, prediction=prediction, spacing_mm=spacing)
    assert [row.label for row in result.per_label] == labels
    rows = [(row, reference == row.label, prediction == row.label) for row in result.per_label]
    rows.append((result.spine, reference > 0, prediction > 0))
    for row, ref, pred in rows:
        assert row.dice == pytest.approx(medpy_binary.dc(pred, ref), abs=1e-6)
        assert row.hd95_mm == pytest.approx(
            medpy_binary.hd95(pred, ref, voxelspacing=spacing), abs=1e-6
        )
        assert row.assd_mm == pytest.approx(
            medpy_binary.assd(pred, ref, voxelspacing=spacing), abs=1e-6
        )
        assert row.nsd == pytest.approx(medpy_nsd(pred, ref, spacing, 2.0), abs=1e-9)
        assert (row.ref_voxels, row.pred_voxels) == (ref.sum(), pred.sum())
    assert result.mean_of_vertebrae.dice == pytest.approx(
        np.mean([row.dice for row in result.per_label])
    )
    assert result.mean_of_vertebrae.hd95_mm == pytest.approx(
        np.mean([row.hd95_mm for row in result.per_label])
    )


def test_binary_helpers_agree_with_medpy_in_2d():
    rng = np.random.default_rng(5)
    a = ndimage.gaussian_filter(rng.standard_normal((60, 50)), 2) > 0
    b = ndimage.gaussian_filter(rng.standard_normal((60, 50)), 2) > 0.1
    spacing = (0.7, 1.9)
    assert metrics.dice(reference=a, prediction=b) == pytest.approx(medpy_binary.dc(b, a))
    assert metrics.hd95(reference=a, prediction=b, spacing_mm=spacing) == pytest.approx(
        medpy_binary.hd95(b, a, voxelspacing=spacing), abs=1e-9
    )
    assert metrics.assd(reference=a, prediction=b, spacing_mm=spacing) == pytest.approx(
        medpy_binary.assd(b, a, voxelspacing=spacing), abs=1e-9
    )


def test_dtype_and_memory_order_do_not_change_results():
    reference, prediction = random_label_pair((30, 26, 20), [1, 2, 3], seed=3)
    expected = compare_labels(reference=reference, prediction=prediction, spacing_mm=ANISOTROPIC)
    for dtype in (np.int16, np.uint16, np.int32, np.int64):
        for order in ("C", "F"):
            result = compare_labels(
                reference=np.asarray(reference, dtype=dtype, order=order),
                prediction=np.asarray(prediction, dtype=dtype, order=order),
                spacing_mm=ANISOTROPIC,
            )
            assert result == expected, (dtype, order)


def test_bounding_box_matches_find_objects():
    rng = np.random.default_rng(7)
    for _ in range(20):
        volume = (rng.random((9, 11, 7)) < 0.01).astype(np.uint8)
        volume = np.asfortranarray(volume) if rng.random() < 0.5 else volume
        expected = ndimage.find_objects(volume)
        assert metrics._nonzero_box(volume) == (expected[0] if expected else None)


# ---- conventions for missing labels ------------------------------------------------------


def test_label_in_neither_is_absent_and_in_one_only_has_dice_zero_and_no_distances():
    reference = stacked_vertebrae([20, 21])
    prediction = stacked_vertebrae([0, 21, 22])
    result = compare_labels(reference=reference, prediction=prediction, spacing_mm=ANISOTROPIC)
    assert [row.label for row in result.per_label] == [20, 21, 22]
    assert result.label(5) is None
    for value in (20, 22):
        row = result.label(value)
        assert (row.dice, row.hd95_mm, row.assd_mm, row.nsd) == (0.0, None, None, 0.0)
    assert result.label(20).ref_voxels == 12 * 12 * 5 and result.label(20).pred_voxels == 0
    both = result.label(21)
    assert both.dice == 1.0 and both.hd95_mm == 0.0 and both.nsd == 1.0
    mean = result.mean_of_vertebrae
    assert mean.dice == pytest.approx(1 / 3)
    assert mean.nsd == pytest.approx(1 / 3)
    assert mean.hd95_mm == 0.0 and mean.assd_mm == 0.0
    assert (mean.labels, mean.labels_with_distances) == (3, 1)
    assert result.spine.name == "spine" and result.spine.label == 0


def test_empty_volumes():
    empty = np.zeros((8, 8, 8), dtype=np.uint8)
    result = compare_labels(reference=empty, prediction=empty, spacing_mm=(1, 1, 1))
    assert result.per_label == [] and result.spine is None
    assert result.mean_of_vertebrae == metrics.MeanMetrics(None, None, None, None, 0, 0)
    assert result.confusion == [] and result.level_errors == []
    assert (result.counts.reference, result.counts.prediction) == (0, 0)
    reference = cube((8, 8, 8), (1, 1, 1), 3, value=9)
    missed = compare_labels(reference=reference, prediction=empty, spacing_mm=(1, 1, 1))
    assert (missed.spine.dice, missed.spine.hd95_mm) == (0.0, None)
    assert missed.mean_of_vertebrae.hd95_mm is None
    assert metrics.dice(reference=empty, prediction=empty) is None
    assert metrics.hd95(reference=reference, prediction=empty, spacing_mm=(1, 1, 1)) is None
    assert metrics.nsd(reference=reference, prediction=empty, spacing_mm=(1, 1, 1)) == 0.0
    assert metrics.nsd(reference=empty, prediction=empty, spacing_mm=(1, 1, 1)) is None


def test_labels_argument_limits_the_rows_but_not_the_spine():
    reference = stacked_vertebrae([20, 21, 22])
    prediction = stacked_vertebrae([20, 21, 23])
    result = compare_labels(
        reference=reference, prediction=prediction, spacing_mm=ANISOTROPIC, labels=[21, 20]
    )
    assert [row.label for row in result.per_label] == [20, 21]
    assert result.counts.reference_labels == (20, 21)
    assert result.spine.dice == 1.0


def test_to_dict_is_json():
    reference, prediction = random_label_pair((20, 20, 16), [24, 25], seed=4)
    data = compare_labels(reference=reference, prediction=prediction, spacing_mm=ANISOTROPIC)
    data = data.to_dict()
    again = json.loads(json.dumps(data))
    assert again["per_label"][0]["name"] == "L5"
    assert set(again["mean_of_vertebrae"]) >= {"dice", "hd95_mm"}
    assert again["spine"]["hd95_mm"] == data["spine"]["hd95_mm"]


# ---- level errors -------------------------------------------------------------------------


def test_prediction_shifted_by_one_level():
    reference = stacked_vertebrae([20, 21, 22, 23, 24])
    prediction = np.where(reference > 0, reference + 1, 0).astype(np.uint8)  # L1..L5 -> L2..L6
    result = compare_labels(reference=reference, prediction=prediction, spacing_mm=ANISOTROPIC)
    assert [row.main_label for row in result.confusion] == [21, 22, 23, 24, 25]
    assert all(row.off_by_one for row in result.confusion)
    assert result.confusion[0].covered_by == (metrics.Overlap(21, "L2", 720, 1.0),)
    assert [error.message for error in result.level_errors][:2] == [
        "L1 mostly labelled L2 (100%): off by one level",
        "L2 mostly labelled L3 (100%): off by one level",
    ]
    counts = result.counts
    assert (counts.reference, counts.prediction) == (5, 5)
    assert (counts.only_in_reference, counts.only_in_prediction) == ((20,), (25,))
    assert counts.callouts == ("L1 missing in prediction", "L6 in prediction only")
    # Boundary metrics still see the shift: L2 of the prediction sits where L1 is.
    assert result.label(21).dice == 0.0 and result.label(21).hd95_mm > 0


def test_extra_l6_in_prediction():
    reference = stacked_vertebrae([20, 21, 22, 23, 24])
    prediction = stacked_vertebrae([20, 21, 22, 23, 24, 25])
    result = compare_labels(reference=reference, prediction=prediction, spacing_mm=ANISOTROPIC)
    assert result.counts.callouts == (
        "6 vertebrae in prediction, 5 in reference",
        "L6 in prediction only",
    )
    assert result.level_errors == []
    assert not any(row.off_by_one for row in result.confusion)
    l6 = result.label(25)
    assert (l6.dice, l6.hd95_mm, l6.ref_voxels) == (0.0, None, 0)
    assert result.mean_of_vertebrae.labels == 6
    assert result.mean_of_vertebrae.labels_with_distances == 5
    assert result.mean_of_vertebrae.dice == pytest.approx(5 / 6)


def test_l5_missing_in_prediction():
    reference = stacked_vertebrae([20, 21, 22, 23, 24])
    prediction = np.where(reference == 24, 0, reference).astype(np.uint8)
    result = compare_labels(reference=reference, prediction=prediction, spacing_mm=ANISOTROPIC)
    assert result.counts.callouts == (
        "4 vertebrae in prediction, 5 in reference",
        "L5 missing in prediction",
    )
    l5 = result.confusion[-1]
    assert l5.name == "L5"
    assert l5.covered_by == (metrics.Overlap(0, "background", 720, 1.0),)
    assert (l5.main_label, l5.off_by_one) == (None, False)
    assert result.level_errors == []


def test_partial_cover_and_two_level_error():
    reference = stacked_vertebrae([8, 9, 10])  # T1-T3
    prediction = reference.copy()
    t1 = reference == 8
    prediction[t1 & (np.arange(20)[:, None, None] < 8)] = 9  # 4 of 12 rows of T1 -> T2
    prediction[reference == 10] = 12  # T3 -> T5
    prediction[(reference == 9) & (np.arange(20)[:, None, None] < 5)] = 0  # 1 row of T2 missed
    result = compare_labels(reference=reference, prediction=prediction, spacing_mm=ANISOTROPIC)
    t1_row, t2_row, t3_row = result.confusion
    assert [(o.name, o.voxels) for o in t1_row.covered_by] == [("T1", 480), ("T2", 240)]
    assert t1_row.covered_by[1].fraction == pytest.approx(1 / 3)
    assert (t1_row.main_label, t1_row.off_by_one) == (8, False)
    assert [o.name for o in t2_row.covered_by] == ["T2", "background"]
    assert (t3_row.main_label, t3_row.off_by_one) == (12, False)
    assert [e.message for e in result.level_errors] == [
        "T3 mostly labelled T5 (100%): off by 2 levels"
    ]


# ---- validation -------------------------------------------------------------------------


GOOD = np.zeros((4, 4, 4), dtype=np.uint8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prediction": np.zeros((4, 4, 5), dtype=np.uint8)}, "shapes differ"),
        ({"reference": GOOD.astype(np.float32)}, "integer label array"),
        ({"prediction": GOOD.astype(bool)}, "integer label array"),
        ({"reference": GOOD.tolist()}, "numpy array"),
        ({"reference": GOOD + 26}, "label values 26..26"),
        ({"prediction": GOOD.astype(np.int16) - 1}, "label values -1..-1"),
        ({"reference": np.zeros((0, 4, 4), dtype=np.uint8)}, "non-empty"),
        ({"spacing_mm": (1.0, 1.0)}, "one value"),
        ({"spacing_mm": (1.0, 0.0, 1.0)}, "positive"),
        ({"spacing_mm": (1.0, -2.0, 1.0)}, "positive"),
        ({"spacing_mm": (1.0, float("nan"), 1.0)}, "positive"),
        ({"spacing_mm": "abc"}, "spacing_mm"),
        ({"tolerance_mm": -1.0}, "tolerance_mm"),
        ({"labels": [0]}, "within 1-25"),
        ({"labels": [26]}, "within 1-25"),
        ({"labels": [1.5]}, "integers"),
    ],
)
def test_invalid_input_raises_value_error(kwargs, message):
    arguments = {"reference": GOOD, "prediction": GOOD, "spacing_mm": (1.0, 1.0, 1.0)}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        compare_labels(**arguments)


def test_binary_helpers_validate():
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.dice(reference=np.ones((3, 3)), prediction=np.ones((3, 4)))
    with pytest.raises(ValueError, match="spacing_mm"):
        metrics.hd95(reference=np.ones((3, 3)), prediction=np.ones((3, 3)), spacing_mm=(1, 1, 1))


def test_module_imports_no_django():
    code = (
        "import sys; import ctspine.metrics; "
        "assert not [m for m in sys.modules if m.split('.')[0] == 'django'], 'django imported'"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


# ---- real anatomy -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["ts_example_ct_3mm_vertebrae.nii.gz", "ts_example_dicom_vertebrae.nii.gz"]
)
def test_agrees_with_medpy_on_real_vertebra_labels(name):
    nibabel = pytest.importorskip("nibabel")
    path = SAMPLES / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    image = nibabel.load(path)
    reference = np.asanyarray(image.dataobj)  # as stored: uint8, Fortran order
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    # A plausible prediction: shifted one voxel, the lowest vertebra eroded, the top one grown.
    prediction = np.roll(reference, 1, axis=0)
    values = [int(v) for v in np.unique(reference) if v]
    low, top = values[-1], values[0]
    prediction[(prediction == low) & ~ndimage.binary_erosion(prediction == low)] = 0
    grown = ndimage.binary_dilation(prediction == top) & (prediction == 0)
    prediction[grown] = top
    result = compare_labels(reference=reference, prediction=prediction, spacing_mm=spacing)
    assert [row.label for row in result.per_label] == values
    # medpy on the foreground's box plus a margin of background (the same surfaces and
    # distances as on the full 512 x 512 volume, in a fraction of the time).
    (box,) = ndimage.find_objects(((reference > 0) | (prediction > 0)).astype(np.uint8))
    box = tuple(slice(max(0, s.start - 2), s.stop + 2) for s in box)
    for row in [*result.per_label, result.spine]:
        ref = reference[box] == row.label if row.label else reference[box] > 0
        pred = prediction[box] == row.label if row.label else prediction[box] > 0
        assert row.dice == pytest.approx(medpy_binary.dc(pred, ref), abs=1e-6)
        assert row.hd95_mm == pytest.approx(
            medpy_binary.hd95(pred, ref, voxelspacing=spacing), abs=1e-6
        )
        assert row.assd_mm == pytest.approx(
            medpy_binary.assd(pred, ref, voxelspacing=spacing), abs=1e-6
        )
    assert result.level_errors == [] and result.counts.callouts == ()


def two_cubes(shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Two 7-voxel cubes ``shift`` voxels apart along the third axis."""
    reference = np.zeros((11, 11, 13), np.uint8)
    prediction = reference.copy()
    reference[2:9, 2:9, 1:8] = 1
    prediction[2:9, 2:9, 1 + shift : 8 + shift] = 1
    return reference, prediction


def test_nsd_is_robust_to_float32_spacing_noise():
    # The spacing of a 1 mm axis read from a rotated float32 affine: 1.0000000224 mm. Every
    # surface distance of the two cubes is at most 2 voxels, so NSD at 2 mm is 1 for both.
    reference, prediction = two_cubes(2)
    exact = metrics.nsd(reference=reference, prediction=prediction, spacing_mm=(1, 1, 1))
    noisy = metrics.nsd(reference=reference, prediction=prediction, spacing_mm=(1, 1, 1.0000000224))
    assert exact == noisy == 1.0
    # A real difference still counts: at 1.01 mm the 2-voxel distances are 2.02 mm > 2 mm.
    assert metrics.nsd(reference=reference, prediction=prediction, spacing_mm=(1, 1, 1.01)) < 0.8


def test_level_errors_summarised_per_case():
    reference = stacked_vertebrae(list(range(13, 25)), height=2)  # T6-L5
    prediction = np.where(reference >= 17, reference + 1, reference).astype(np.uint8)
    prediction[reference == 13] = 0  # T6 not predicted
    result = compare_labels(reference=reference, prediction=prediction, spacing_mm=ANISOTROPIC)
    assert result.level_summary == (
        "T10–L5 labelled one level too low (8 vertebrae)",
        "T6 not found",
        "L6 only in prediction",
    )
    assert len(result.level_errors) == 8  # the per-vertebra detail stays


def test_level_summary_of_a_case_labelled_too_high_and_a_single_vertebra():
    reference = stacked_vertebrae([20, 21, 22, 23, 24])
    prediction = np.where(reference >= 22, reference - 2, reference).astype(np.uint8)
    prediction[reference == 20] = 19  # L1 -> T12
    result = compare_labels(reference=reference, prediction=prediction, spacing_mm=ANISOTROPIC)
    assert result.level_summary == (
        "L1 labelled one level too high",
        "L3–L5 labelled two levels too high (3 vertebrae)",
        "T12 only in prediction",
    )


def test_per_label_rows_carry_the_level_check():
    reference = stacked_vertebrae([20, 21, 22, 23, 24])
    prediction = np.where(reference > 0, reference + 1, 0).astype(np.uint8)
    result = compare_labels(reference=reference, prediction=prediction, spacing_mm=ANISOTROPIC)
    l1, l6 = result.label(20), result.label(25)
    assert (l1.predicted_as, l1.off_by_one, l1.found) == (21, True, "missed")
    assert (l6.predicted_as, l6.off_by_one, l6.found) == (None, False, "extra")
