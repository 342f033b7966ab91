"""One per-vertebra result type: the dataclass, the stored row and the JSON agree field by field."""

from dataclasses import asdict, fields

import pytest

from ctspine.metrics import LabelMetrics
from evaluation.models import METRIC_FIELDS, LabelResult
from evaluation.serializers import LabelMetricsSerializer

ROW = LabelMetrics(
    label=24, name="L5", dice=0.5, hd95_mm=3.25, assd_mm=1.5, nsd=0.75, ref_voxels=100,
    pred_voxels=80, predicted_as=25, off_by_one=True,
)  # fmt: skip


def test_the_stored_row_has_the_fields_of_the_dataclass():
    names = [f.name for f in fields(LabelMetrics)]
    assert list(METRIC_FIELDS) == [name for name in names if name != "name"]
    assert set(METRIC_FIELDS) <= {f.name for f in LabelResult._meta.get_fields()}
    assert LabelResult.from_metrics(ROW).metrics() == ROW


def test_both_serialize_alike():
    expected = {**asdict(ROW), "predicted_name": "L6"}
    assert LabelMetricsSerializer(ROW).data == expected
    assert LabelMetricsSerializer(LabelResult.from_metrics(ROW)).data == expected


@pytest.mark.parametrize("stored", [asdict(ROW), {k: v for k, v in asdict(ROW).items()
                                                   if k not in ("predicted_as", "off_by_one")}])  # fmt: skip
def test_from_dict_reads_old_and_new_stored_comparisons(stored):
    row = LabelMetrics.from_dict(stored)
    assert (row.label, row.dice, row.found) == (24, 0.5, "both")
