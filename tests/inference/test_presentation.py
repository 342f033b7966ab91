"""The job page's metrics table, from a stored comparison (``Comparison.to_dict()``)."""

import numpy as np

from ctspine.metrics import compare_labels
from inference.presentation import metrics_table


def shifted_pair():
    reference = np.zeros((6, 6, 20), np.uint8)
    for k, label in enumerate([20, 21, 22, 23, 24]):
        reference[1:5, 1:5, 1 + 3 * k : 3 + 3 * k] = label
    return reference, np.where(reference > 0, reference + 1, 0).astype(np.uint8)


def test_summary_first_and_per_vertebra_detail_behind_it():
    reference, prediction = shifted_pair()
    stored = compare_labels(reference=reference, prediction=prediction, spacing_mm=(1, 1, 1))
    table = metrics_table(stored.to_dict(), {"reference": {"20": {"voxel": [2, 2, 1]}}})
    assert table.callouts == [
        "L1–L5 labelled one level too low (5 vertebrae)",
        "L6 only in prediction",
    ]
    assert table.details[0] == "L1 mostly labelled L2 (100%): off by one level"
    l1 = table.vertebrae[0]
    assert (l1.metrics.name, l1.metrics.found, l1.metrics.predicted_name) == ("L1", "missed", "L2")
    assert l1.query == "ax=1&co=2&sa=2"
    assert table.mean_of_vertebrae.dice == 0.0


def test_a_comparison_stored_before_the_summary_existed():
    reference, prediction = shifted_pair()
    stored = compare_labels(reference=reference, prediction=prediction, spacing_mm=(1, 1, 1))
    old = stored.to_dict()
    del old["level_summary"]
    for row in old["per_label"]:
        del row["predicted_as"], row["off_by_one"]
    table = metrics_table(old, None)
    assert table.callouts[:2] == ["L1 missing in prediction", "L6 in prediction only"]
    assert table.details == [] and table.vertebrae[0].metrics.predicted_as is None
