"""JSON shapes of the evaluation API and of the run's JSON file.

Dice and NSD are fractions in [0, 1], distances in mm (null where not defined). The tables are
``evaluation.table2.Table.to_dict()`` values; the per-vertebra rows are
``ctspine.metrics.LabelMetrics`` or the stored ``LabelResult`` (same attribute names), through
one serializer.
"""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from evaluation.case_metrics import CaseStatus
from evaluation.models import CaseResult, EvaluationRun


class LabelMetricsSerializer(serializers.Serializer):
    """One vertebra of one case (``ctspine.metrics.LabelMetrics`` or a stored ``LabelResult``)."""

    label = serializers.IntegerField(help_text="1-25 (C1-C7, T1-T12, L1-L6)")
    name = serializers.CharField()
    dice = serializers.FloatField(help_text="fraction in [0, 1]")
    hd95_mm = serializers.FloatField(allow_null=True, help_text="mm; null: in one volume only")
    assd_mm = serializers.FloatField(allow_null=True, help_text="mm; null: in one volume only")
    nsd = serializers.FloatField(help_text="fraction in [0, 1]")
    ref_voxels = serializers.IntegerField()
    pred_voxels = serializers.IntegerField()
    predicted_as = serializers.IntegerField(
        allow_null=True, help_text="predicted label covering most of the reference vertebra"
    )
    predicted_name = serializers.CharField(allow_null=True)
    off_by_one = serializers.BooleanField()


class CaseResultSerializer(serializers.ModelSerializer):
    """One evaluated case with its vertebrae."""

    # Plain strings: drf-spectacular would otherwise name these enums after jobs' "status".
    status = serializers.CharField(help_text=", ".join(CaseStatus.values))
    labels = LabelMetricsSerializer(many=True)

    class Meta:
        model = CaseResult
        fields = [
            "case_id", "split", "source", "anomaly", "status", "scored", "mean_dice",
            "mean_hd95_mm", "mean_nsd", "spine_dice", "spine_hd95_mm", "z_spacing_mm",
            "level_errors", "level_summary", "messages", "labels",
        ]  # fmt: skip


class CaseResultFilesSerializer(CaseResultSerializer):
    """The same, with the absolute paths of both files (the JSON file beside the results)."""

    prediction = serializers.CharField(source="prediction_path")
    reference = serializers.CharField(source="reference_path")

    class Meta(CaseResultSerializer.Meta):
        fields = CaseResultSerializer.Meta.fields + ["prediction", "reference"]


class CountsSerializer(serializers.Serializer):
    expected = serializers.IntegerField(source="cases_expected")
    evaluated = serializers.IntegerField(source="cases_evaluated")
    missing = serializers.IntegerField(source="cases_missing")
    missing_scored = serializers.BooleanField(
        source="missing_as_failure",
        help_text="true: missing predictions are scored as empty (Dice 0), false: left out",
    )
    failed = serializers.IntegerField(source="cases_failed")
    unmatched_files = serializers.SerializerMethodField()

    def get_unmatched_files(self, run) -> int:
        return len(run.unmatched_files)


class CellSerializer(serializers.Serializer):
    dice = serializers.FloatField(allow_null=True)
    hd95_mm = serializers.FloatField(allow_null=True)
    n = serializers.IntegerField(help_text="values averaged for the Dice")
    n_hd95 = serializers.IntegerField(help_text="values averaged for the HD95")
    missed = serializers.IntegerField(help_text="cases where the vertebra was not predicted")


class ColumnSerializer(serializers.Serializer):
    key = serializers.CharField()
    title = serializers.CharField()
    filters = serializers.DictField(child=serializers.CharField())
    cases = serializers.IntegerField()


class RowSerializer(serializers.Serializer):
    key = serializers.CharField()
    title = serializers.CharField()
    label = serializers.IntegerField(allow_null=True)
    cells = CellSerializer(many=True)
    published = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(), allow_null=True),
        help_text="(DSC, HD95 mm) of the paper per column, null where it gives none",
    )


class TableSerializer(serializers.Serializer):
    title = serializers.CharField()
    columns = ColumnSerializer(many=True)
    rows = RowSerializer(many=True)
    notes = serializers.ListField(child=serializers.CharField())


class LevelErrorRowSerializer(serializers.Serializer):
    label = serializers.IntegerField()
    name = serializers.CharField()
    split = serializers.CharField()
    cases = serializers.IntegerField()
    off_by_one = serializers.IntegerField()
    other_level = serializers.IntegerField()
    not_found = serializers.IntegerField()
    taken_for = serializers.ListField(child=serializers.ListField())


class WorstCaseSerializer(serializers.Serializer):
    case_id = serializers.CharField()
    split = serializers.CharField()
    dice = serializers.FloatField()
    hd95_mm = serializers.FloatField(allow_null=True)


class SetAsideSerializer(serializers.Serializer):
    """A ground-truth label that is not C1-L6 (VerSe's T13 and sacrum): neither scored nor
    counted as a false positive of the prediction."""

    name = serializers.CharField(help_text="T13 or sacrum")
    value = serializers.IntegerField(help_text="its value in the ground truth (28, 26)")
    cases = serializers.IntegerField(help_text="cases whose ground truth has it")
    voxels = serializers.IntegerField(help_text="voxels set aside, all cases together")


class SummarySerializer(serializers.Serializer):
    conventions = serializers.ListField(child=serializers.CharField())
    cases = serializers.IntegerField()
    table2 = TableSerializer()
    by_source = TableSerializer(many=True)
    anomalies = TableSerializer()
    level_errors = LevelErrorRowSerializer(many=True)
    worst_cases = serializers.DictField(child=WorstCaseSerializer(many=True))
    # Of the whole run, whatever the filters (runs stored before it existed: none).
    set_aside = SetAsideSerializer(many=True, default=list)


class RunSerializer(serializers.ModelSerializer):
    """An evaluation run: what was evaluated and how it ended, with the summary rows per
    split."""

    status = serializers.CharField(help_text=", ".join(EvaluationRun.Status.values))
    splits = serializers.ListField(child=serializers.CharField(), read_only=True)
    counts = CountsSerializer(source="*")
    headline = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = EvaluationRun
        fields = [
            "id", "name", "created", "finished", "status", "error", "split", "splits",
            "reference_dir", "tolerance_mm", "workers", "seconds", "counts", "headline", "url",
        ]  # fmt: skip

    @extend_schema_field(serializers.DictField(child=serializers.DictField(child=CellSerializer())))
    def get_headline(self, run) -> dict:
        """Per split: the Mean of Vertebrae and Mean of Spine cells."""
        return run.headline()

    def get_url(self, run) -> str:
        path = reverse("evaluation:api-detail", args=[run.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class ProblemSerializer(serializers.Serializer):
    case_id = serializers.CharField()
    status = serializers.CharField()
    error = serializers.CharField(allow_blank=True)
    file = serializers.CharField(allow_blank=True)


class UnmatchedFileSerializer(serializers.Serializer):
    name = serializers.CharField()
    reason = serializers.CharField()


class DiceValueSerializer(serializers.Serializer):
    case_id = serializers.CharField()
    dice = serializers.FloatField()
    hd95_mm = serializers.FloatField(allow_null=True)


class ResolutionPointSerializer(serializers.Serializer):
    case_id = serializers.CharField()
    source = serializers.CharField()
    z_spacing_mm = serializers.FloatField(help_text="slice spacing of the ground truth, mm")
    mean_dice = serializers.FloatField(help_text="the case's mean Dice over its vertebrae")


class RunReportSerializer(RunSerializer):
    """One run with its tables for the selected cases: what its page shows. The run carries
    the report of ``evaluation.reports.run_report`` as ``run.report``."""

    filters = serializers.DictField(
        source="report.filters", child=serializers.ListField(child=serializers.CharField())
    )
    summary = SummarySerializer(source="report.summary")
    dice_by_label = serializers.DictField(
        source="report.dice_by_label",
        child=DiceValueSerializer(many=True),
        help_text="label value -> every case's Dice",
    )
    resolution = ResolutionPointSerializer(source="report.resolution", many=True)
    problems = ProblemSerializer(source="report.problems", many=True)
    unmatched_files = UnmatchedFileSerializer(many=True)

    class Meta(RunSerializer.Meta):
        fields = RunSerializer.Meta.fields + [
            "filters", "summary", "dice_by_label", "resolution", "problems", "unmatched_files",
        ]  # fmt: skip


class RunDocumentSerializer(RunSerializer):
    """The whole run, every case included, with absolute file paths: the JSON file's content."""

    summary = SummarySerializer()
    problems = serializers.SerializerMethodField()
    unmatched_files = UnmatchedFileSerializer(many=True)
    cases = serializers.SerializerMethodField()

    class Meta(RunSerializer.Meta):
        fields = RunSerializer.Meta.fields + [
            "prediction_dir", "summary", "problems", "unmatched_files", "cases",
        ]  # fmt: skip

    @extend_schema_field(ProblemSerializer(many=True))
    def get_problems(self, run) -> list:
        return [
            {"case_id": c.case_id, "status": c.status, "error": c.error, "file": c.prediction_path}
            for c in run.cases.problems()
        ]

    @extend_schema_field(CaseResultFilesSerializer(many=True))
    def get_cases(self, run) -> list:
        scored = run.cases.scored().prefetch_related("labels")
        return CaseResultFilesSerializer(scored, many=True).data
